"""Combinators: layers made of layers (stax's serial, FanOut, parallel, FanInSum, FanInConcat),
and the residual block built from them.

Introduced in chapter 03, notebooks/03-locality.ipynb (`serial`); branches and residual blocks
in chapter 07, notebooks/07-going-deeper.ipynb.

A branch point passes a *tuple* of arrays on: ``FanOut(2)`` turns x into ``(x, x)``,
``parallel(f, g)`` turns ``(a, b)`` into ``(f(a), g(b))``, and ``FanInSum()`` adds them again,
so ``serial(FanOut(2), parallel(f, Identity()), FanInSum())`` computes ``f(x) + x``, which is
what ``Residual(f)`` computes with readable parameter keys. Every combinator passes `key`,
`train` and `state` on to its children (the contract in `cnnlib.layers`): child i gets the key
``jax.random.fold_in(key, i)``, so no two layers draw the same random numbers.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from cnnlib._validate import check_positive_int
from cnnlib.layers.base import (
    Layer,
    as_input,
    check_layer,
    check_single_shape,
    out_shape,
)


def serial(*layers: Layer) -> Layer:
    """Chain layers: the output of each is the input of the next.

    Params: ``{f"{i}_{layer.name}": params_i}`` for every child `i` that has parameters
    ("0_conv", "3_conv", "10_dense"), or the child's own label if it was given one with
    `named`. Keys do not depend on the length of the chain. State (if any child has state) is
    keyed the same way.

    Args:
        *layers: `Layer` objects, at least one.

    Returns:
        A `Layer` named "serial" with ``config = {"layers": layers}``.

    Example:
        >>> model = serial(Conv(6, 5), Relu(), MaxPool(2), Flatten(), Dense(10))
        >>> out_shape, params = init_params(model, jax.random.key(0), (-1, 28, 28, 1))
        >>> out_shape, sorted(params)
        ((-1, 10), ['0_conv', '4_dense'])

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """
    return chain(layers, "serial", "serial")


def named(label: str, layer: Layer) -> Layer:
    """Give `layer` the key its params and state have inside a `serial` or `parallel`.

    A chain keys children by position ("3_conv"); a label stays the same when layers are
    inserted before it, so checkpoints of the labelled parts still load.

    Args:
        label: a non-empty string without "/" that does not start with a digit.
        layer: any `Layer`.

    Example:
        >>> sorted(init_params(serial(named("stem", Conv(8, 3)), Relu()),
        ...                    jax.random.key(0), (-1, 8, 8, 1))[1])
        ['stem']

    Introduced in chapter 07, notebooks/07-going-deeper.ipynb.
    """
    check_layer(layer, "named", "layer")
    if not isinstance(label, str) or not label or "/" in label or label[0].isdigit():
        raise ValueError(
            f"named: `label` must be a non-empty string without '/' that does not start with a "
            f"digit (those keys are the chain's positional ones); got {label!r}. Use e.g. "
            f"\"stem\" or \"block1\"."
        )
    return layer._replace(config={**layer.config, "label": label})


def Identity() -> Layer:
    """The identity, ``y = x``: the shortcut of a residual block. No parameters.

    Example:
        >>> init_params(Identity(), jax.random.key(0), (-1, 7, 7, 8))[0]
        (-1, 7, 7, 8)

    Introduced in chapter 07, notebooks/07-going-deeper.ipynb.
    """
    return Layer(lambda key, in_shape: (in_shape, {}), lambda params, x, **kw: x, "identity", {})


def FanOut(n: int) -> Layer:
    """Copy the input `n` times: x -> ``(x, ..., x)``, for `parallel` branches. No parameters.

    Example:
        >>> init_params(FanOut(2), jax.random.key(0), (-1, 7, 7, 8))[0]
        ((-1, 7, 7, 8), (-1, 7, 7, 8))

    Introduced in chapter 07, notebooks/07-going-deeper.ipynb.
    """
    n = check_positive_int(n, "n", "FanOut")

    def init(key, in_shape):
        return (check_single_shape(in_shape, "FanOut"),) * n, {}

    return Layer(init, lambda params, x, **kw: (x,) * n, "fan_out", {"n": n})


def parallel(*layers: Layer) -> Layer:
    """Apply layer i to input i of a tuple: ``(x_1, ..., x_n) -> (f_1(x_1), ..., f_n(x_n))``.

    stax's ``parallel``. Params and state are keyed like `serial`'s ("0_conv", "1_identity"
    has none). Combine the outputs with `FanInSum` or `FanInConcat`.

    Example:
        >>> branches = serial(FanOut(2), parallel(Conv(4, 1), Conv(4, 3, padding="SAME")),
        ...                   FanInConcat())
        >>> init_params(branches, jax.random.key(0), (-1, 8, 8, 2))[0]
        (-1, 8, 8, 8)

    Introduced in chapter 07, notebooks/07-going-deeper.ipynb.
    """
    where = "parallel"
    branches = _children(layers, where)
    keys = child_keys(branches, where)

    def init(key, in_shape):
        _check_arity(in_shape, len(branches), where)
        params, shapes = {}, []
        for i, (branch, shape) in enumerate(zip(branches, in_shape)):
            shape, child = _init_child(branch, jax.random.fold_in(key, i), shape, keys[i])
            shapes.append(shape)
            if child:
                params[keys[i]] = child
        return tuple(shapes), params

    def apply(params, xs, *, key=None, train=False, state=None, **kw):
        _check_tree_keys(params, keys, "params", where)
        if state is not None:
            _check_tree_keys(state, keys, "state", where)
        if not isinstance(xs, tuple) or len(xs) != len(branches):
            raise ValueError(
                f"{where}: takes a tuple of {len(branches)} inputs, one per branch; got "
                f"{type(xs).__name__}. Put FanOut({len(branches)}) before it."
            )
        ys, new_state = [], {}
        for i, (branch, x) in enumerate(zip(branches, xs)):
            y, s = run(branch, params.get(keys[i], {}), x, keys[i], fold(key, i), train,
                       state, where)
            ys.append(y)
            if s is not None:
                new_state[keys[i]] = s
        return _result(tuple(ys), new_state, state)

    return _stateful(
        Layer(init, apply, "parallel", {"branches": branches}), branches, keys,
        lambda in_shape: ((i, b, shape) for i, (b, shape) in enumerate(zip(branches, in_shape))),
    )


def FanInSum() -> Layer:
    """Add the arrays of a tuple: ``(x_1, ..., x_n) -> x_1 + ... + x_n``. No parameters.

    Raises:
        ValueError: the shapes differ (at init, or at apply for arrays); the message names
            both shapes.

    Example:
        >>> init_params(FanInSum(), jax.random.key(0), ((-1, 7, 7, 8), (-1, 7, 7, 8)))[0]
        (-1, 7, 7, 8)

    Introduced in chapter 07, notebooks/07-going-deeper.ipynb.
    """
    where = "FanInSum"

    def init(key, in_shapes):
        shapes = _multi(in_shapes, where)
        for shape in shapes[1:]:
            if not _same(shape, shapes[0]):
                raise ValueError(_mismatch(where, shapes[0], shape, "added"))
        return shapes[0], {}

    def apply(params, xs, **kw):
        xs = _arrays(xs, where)
        for x in xs[1:]:
            if x.shape != xs[0].shape:
                raise ValueError(_mismatch(where, xs[0].shape, x.shape, "added"))
        return sum(xs[1:], xs[0])

    return Layer(init, apply, "fan_in_sum", {})


def FanInConcat(axis: int = -1) -> Layer:
    """Concatenate the arrays of a tuple along `axis` (default: channels). No parameters.

    Args:
        axis: the axis to join along, not the batch axis 0; negative counts from the end.

    Raises:
        ValueError: the shapes differ on another axis; the message names both shapes.

    Example:
        >>> init_params(FanInConcat(), jax.random.key(0), ((-1, 7, 7, 8), (-1, 7, 7, 4)))[0]
        (-1, 7, 7, 12)

    Introduced in chapter 07, notebooks/07-going-deeper.ipynb.
    """
    where = "FanInConcat"
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise TypeError(f"{where}: `axis` must be an int; got {axis!r}. Use -1 for channels.")

    def resolve(ndim):
        a = axis % ndim if -ndim <= axis < ndim else None
        if a is None or a == 0:
            raise ValueError(
                f"{where}: `axis` must be an axis of the inputs other than the batch axis 0, "
                f"i.e. in 1..{ndim - 1} or -{ndim - 1}..-1; got {axis}. Use -1 for channels."
            )
        return a

    def init(key, in_shapes):
        shapes = _multi(in_shapes, where)
        a = resolve(len(shapes[0]))
        for shape in shapes[1:]:
            drop = lambda s: s[:a] + s[a + 1 :]
            if len(shape) != len(shapes[0]) or not _same(drop(shape), drop(shapes[0])):
                raise ValueError(_mismatch(where, shapes[0], shape, f"joined along axis {axis}"))
        total = sum(shape[a] for shape in shapes)
        return shapes[0][:a] + (total,) + shapes[0][a + 1 :], {}

    def apply(params, xs, **kw):
        xs = _arrays(xs, where)
        a = resolve(xs[0].ndim)
        for x in xs[1:]:
            if x.ndim != xs[0].ndim or any(
                p != q for i, (p, q) in enumerate(zip(x.shape, xs[0].shape)) if i != a
            ):
                raise ValueError(
                    _mismatch(where, xs[0].shape, x.shape, f"joined along axis {axis}"))
        return jnp.concatenate(xs, axis=a)

    return Layer(init, apply, "fan_in_concat", {"axis": axis})


def Residual(inner: Layer, shortcut: Layer | None = None) -> Layer:
    """A residual block: ``y = inner(x) + shortcut(x)``, the shortcut the identity by default.

    He et al. (2016): the block learns the *change* ``inner(x)`` to its input rather than a
    whole new representation, and the identity path lets gradients reach early layers
    undiminished. When `inner` changes the shape (a stride, more channels), pass a projection
    shortcut of the same output shape, e.g. ``Conv(out_channels, 1, stride=2)``.
    Equal to ``serial(FanOut(2), parallel(inner, shortcut), FanInSum())``.

    Params: ``{"inner": ..., "shortcut": ...}`` (each only if it has parameters); state alike.

    Args:
        inner: the residual branch, e.g. ``serial(Conv(c, 3, padding="SAME"), BatchNorm(),
            Relu(), Conv(c, 3, padding="SAME"), BatchNorm())``.
        shortcut: None (identity) or a layer with the same output shape as `inner`.

    Raises:
        ValueError: at init, when the two branches' output shapes differ; the message names
            both and suggests a projection shortcut.

    Example:
        >>> block = Residual(serial(Conv(8, 3, padding="SAME"), Relu()))
        >>> init_params(block, jax.random.key(0), (-1, 14, 14, 8))[0]
        (-1, 14, 14, 8)

    Introduced in chapter 07, notebooks/07-going-deeper.ipynb.
    """
    where = "Residual"
    check_layer(inner, where, "inner")
    if shortcut is not None:
        check_layer(shortcut, where, "shortcut")
    branches = (inner, Identity() if shortcut is None else shortcut)
    keys = ("inner", "shortcut")

    def init(key, in_shape):
        in_shape = check_single_shape(in_shape, where)
        params, shapes = {}, []
        for i, branch in enumerate(branches):
            shape, child = _init_child(branch, jax.random.fold_in(key, i), in_shape, keys[i])
            shapes.append(shape)
            if child:
                params[keys[i]] = child
        if not _same(shapes[0], shapes[1]):
            raise ValueError(_residual_mismatch(in_shape, shapes, shortcut is None))
        return shapes[0], params

    def apply(params, x, *, key=None, train=False, state=None, **kw):
        _check_tree_keys(params, keys, "params", where)
        if state is not None:
            _check_tree_keys(state, keys, "state", where)
        ys, new_state = [], {}
        for i, branch in enumerate(branches):
            y, s = run(branch, params.get(keys[i], {}), x, keys[i], fold(key, i), train,
                       state, where)
            ys.append(y)
            if s is not None:
                new_state[keys[i]] = s
        if ys[0].shape != ys[1].shape:
            raise ValueError(_mismatch(where, ys[0].shape, ys[1].shape, "added"))
        return _result(ys[0] + ys[1], new_state, state)

    config = {"inner": inner, "shortcut": branches[1]}
    return _stateful(Layer(init, apply, "residual", config), branches, keys,
                     lambda in_shape: ((i, b, in_shape) for i, b in enumerate(branches)))


# --- How a combinator runs its children -------------------------------------------------------


def chain(layers: tuple, name: str, where: str) -> Layer:
    """A serial chain named `name` (MaxBlurPool is one): `serial` is ``chain(layers, "serial")``."""
    layers = _children(layers, where)
    keys = child_keys(layers, where)

    def init(key, in_shape):
        params = {}
        for i, (k, layer) in enumerate(zip(jax.random.split(key, len(layers)), layers)):
            in_shape, child = _init_child(layer, k, in_shape, keys[i])
            if child:
                params[keys[i]] = child
        return in_shape, params

    def apply(params, x, *, key=None, train=False, state=None, **kw):
        _check_tree_keys(params, keys, "params", where)
        if state is not None:
            _check_tree_keys(state, keys, "state", where)
        x = x if isinstance(x, tuple) else as_input(x, where)
        new_state = {}
        for i, layer in enumerate(layers):
            x, s = run(layer, params.get(keys[i], {}), x, keys[i], fold(key, i), train, state,
                       where)
            if s is not None:
                new_state[keys[i]] = s
        return _result(x, new_state, state)

    def walk(in_shape):
        for i, layer in enumerate(layers):
            yield i, layer, in_shape
            in_shape = out_shape(layer, in_shape)

    return _stateful(Layer(init, apply, name, {"layers": layers}), layers, keys, walk)


def run(layer, params, x, label, key, train, state, where):
    """Apply one child: ``(y, new_state)``, new_state None for a child without state.

    An error inside the child is re-raised naming the child's key, so a message says where in
    the model it happened: "in layer '2_residual/inner/0_conv': Conv: ...".
    """
    child_state = None
    if layer.init_state is not None:
        if state is None:
            raise ValueError(
                f"{where}: the model has state (layer {label!r} is a {layer.name}), so apply "
                f"needs `state` and returns (y, state); got no state. Pass "
                f"state=init_state(model, in_shape); fit and evaluate take state= too."
            )
        child_state = state.get(label) if isinstance(state, dict) else None
        if child_state is None:
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(
                f"{where}: `state` has no entry {label!r} (got keys {got}): it belongs to "
                f"another model. Use init_state(model, in_shape) for this one."
            )
    try:
        if child_state is None:
            return layer.apply(params, x, key=key, train=train), None
        return layer.apply(params, x, state=child_state, key=key, train=train)
    except (ValueError, TypeError) as err:
        _locate(err, label)


def _locate(err, label):
    """Re-raise `err` with the child's key in front of the path already in its message."""
    if type(err) not in (ValueError, TypeError):
        raise err
    path = [label, *getattr(err, "cnnlib_path", [])]
    message = getattr(err, "cnnlib_message", str(err))
    located = type(err)(f"in layer {'/'.join(path)!r}: {message}")
    located.cnnlib_path, located.cnnlib_message = path, message
    raise located.with_traceback(err.__traceback__) from None


def fold(key, i):
    """Child i's key: ``fold_in(key, i)``, or None when no key was given."""
    return None if key is None else jax.random.fold_in(key, i)


def _init_child(layer, key, in_shape, label):
    try:
        return layer.init(key, in_shape)
    except (ValueError, TypeError) as err:
        _locate(err, label)


def _stateful(layer, children, keys, walk):
    """Give a combinator an init_state when any child has state (state keyed like params).

    `walk(in_shape)` yields ``(i, child, child_in_shape)`` for every child.
    """
    if all(child.init_state is None for child in children):
        return layer

    def init_state(in_shape):
        return {
            keys[i]: child.init_state(shape)
            for i, child, shape in walk(in_shape)
            if child.init_state is not None
        }

    return layer._replace(init_state=init_state)


def _result(y, new_state, state):
    """Called with state, a combinator returns ``(y, state)``; without, it returns y."""
    return y if state is None else (y, new_state)


def _children(layers, where):
    if not layers:
        raise ValueError(f"{where}: needs at least one layer; got none. Pass e.g. serial(Relu()).")
    for i, layer in enumerate(layers):
        check_layer(layer, where, f"layer {i}")
    return tuple(layers)


def child_keys(layers, where="serial"):
    """The keys a chain gives its children's params and state: labels, or "{index}_{name}"."""
    keys = [layer.config.get("label") or f"{i}_{layer.name}" for i, layer in enumerate(layers)]
    seen = set()
    for k in keys:
        if k in seen:
            raise ValueError(
                f"{where}: two layers have the label {k!r}; labels given with named() must be "
                f"unique within one chain. Rename one."
            )
        seen.add(k)
    return keys


def _check_tree_keys(tree, keys, name, where):
    if not isinstance(tree, dict) or set(tree) - set(keys):
        got = sorted(tree) if isinstance(tree, dict) else type(tree).__name__
        raise ValueError(
            f"{where}: `{name}` must be the dict that init returned for this model, keys among "
            f"{list(keys)}; got {got}. Initialise with init_params(model, key, in_shape)."
        )


def _check_arity(in_shape, n, where):
    if not isinstance(in_shape, tuple) or len(in_shape) != n or not all(
        isinstance(s, tuple) for s in in_shape
    ):
        raise ValueError(
            f"{where}: takes {n} inputs, one per branch; got in_shape {in_shape}. Put "
            f"FanOut({n}) before it."
        )


def _multi(in_shapes, where):
    if not isinstance(in_shapes, tuple) or len(in_shapes) < 2 or not all(
        isinstance(s, tuple) for s in in_shapes
    ):
        raise ValueError(
            f"{where}: takes a tuple of at least two inputs (from FanOut and parallel); got "
            f"in_shape {in_shapes}. Use it after parallel(...)."
        )
    return [tuple(s) for s in in_shapes]


def _arrays(xs, where):
    if not isinstance(xs, (tuple, list)) or len(xs) < 2:
        raise ValueError(
            f"{where}: takes a tuple of at least two arrays (from FanOut and parallel); got "
            f"{type(xs).__name__}. Use it after parallel(...)."
        )
    return [as_input(x, where) for x in xs]


def _same(a, b):
    """Equal shapes, with an unknown batch size (-1) matching any."""
    return len(a) == len(b) and (a[0] == b[0] or -1 in (a[0], b[0])) and a[1:] == b[1:]


def _mismatch(where, a, b, verb):
    return (
        f"{where}: the inputs must have the same shape to be {verb}; got {tuple(a)} and "
        f"{tuple(b)}. Make the branches agree (a 1x1 Conv changes channels, a stride or "
        f"pooling changes H and W)."
    )


def _residual_mismatch(in_shape, shapes, identity):
    inner, other = shapes
    what = "the identity shortcut keeps" if identity else "the shortcut gives"
    fix = "Pass shortcut="
    if len(inner) == 4 and len(in_shape) == 4:
        stride = max(1, math.ceil(in_shape[1] / inner[1])) if inner[1] > 0 else 1
        fix += f"Conv({inner[3]}, 1, stride={stride}) (a projection) so that the shapes agree."
    else:
        fix += f"Dense({inner[-1]}) (a projection) so that the shapes agree."
    return (
        f"Residual: the inner branch maps {tuple(in_shape)} to {tuple(inner)} but {what} "
        f"{tuple(other)}; the two are added, so they must have the same shape. {fix}"
    )
