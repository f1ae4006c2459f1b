"""The `Layer` type and what every model needs from it: parameters, state, shapes, dtypes.

The contract itself is written once, in the docstring of `cnnlib.layers`.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cnnlib._validate import ADD_AXES, check_key

Shape = tuple  # (N, H, W, C) or (N, features); N may be -1. Multi-input layers: a tuple of shapes
Params = dict  # nested dicts of arrays
State = dict  # nested dicts of arrays, updated by the forward pass, never by gradients

# Gain of the weight variance gain / fan_in, by name.
GAINS = {"he": 2.0, "lecun": 1.0}


class Layer(NamedTuple):
    """A layer: two pure functions, a name and its configuration (see `cnnlib.layers`).

    Attributes:
        init: ``init(key, in_shape) -> (out_shape, params)``, without data.
        apply: ``apply(params, x, *, key=None, train=False) -> y``; with state,
            ``apply(params, x, *, state, key=None, train=False) -> (y, state)``.
        name: short lowercase name ("conv", "relu", ...); `serial` keys params with it.
        config: plain dict of the normalised constructor arguments.
        init_state: ``init_state(in_shape) -> state`` for a layer with state (BatchNorm);
            None for a layer without.

    Introduced in chapter 03, notebooks/03-locality.ipynb; state in chapter 07.
    """

    init: Callable[[jax.Array, Shape], tuple[Shape, Params]]
    apply: Callable[..., Any]
    name: str
    config: dict
    init_state: Callable[[Shape], State] | None = None


def init_params(
    model: Layer, key: jax.Array, in_shape: Shape, *, dtype: Any = None
) -> tuple[Shape, Params]:
    """Initialise `model` for inputs of `in_shape`; the compiled init is reused for the next call.

    Args:
        model: a `Layer` (usually a `serial` chain).
        key: a `jax.random` key, e.g. ``jax.random.key(0)``.
        in_shape: the input shape with batch axis, e.g. ``(-1, 28, 28, 1)``.
        dtype: optional floating dtype for the parameters (e.g. ``jnp.bfloat16``); they are
            drawn in float32 and cast (`cast_params`), so every dtype starts from the same
            numbers, rounded.

    Returns:
        ``(out_shape, params)``: the output shape (a tuple of ints) and the parameters.

    Example:
        >>> model = serial(Conv(6, 5, padding="SAME"), Relu(), Flatten(), Dense(10))
        >>> out_shape, params = init_params(model, jax.random.key(0), (-1, 28, 28, 1))
        >>> out_shape, params["0_conv"]["w"].shape
        ((-1, 10), (5, 5, 1, 6))

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """
    where = "init_params"
    check_layer(model, where, "model")
    check_key(key, "key", where)
    in_shape = check_shape(in_shape, where)
    # A model's init is traced and compiled once per input shape, then reused: a seed sweep
    # pays for compilation once (eager jax.random would compile one program per shape).
    shapes, draw = _compiled_init(model.init, in_shape)
    params = draw(key)
    return shapes[0], params if dtype is None else cast_params(params, dtype)


def param_shapes(model: Layer, in_shape: Shape) -> tuple[Shape, Params]:
    """``(out_shape, params)`` with `jax.ShapeDtypeStruct` leaves: no data, no random numbers.

    Example:
        >>> param_shapes(Dense(10), (-1, 400))[1]["w"].shape
        (400, 10)

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """
    check_layer(model, "param_shapes", "model")
    in_shape = check_shape(in_shape, "param_shapes")
    return _shapes(model.init, in_shape)


def init_state(model: Layer, in_shape: Shape, *, dtype: Any = None) -> State:
    """The initial state of `model` for inputs of `in_shape`: ``{}`` for a model without state.

    State holds values the forward pass updates in training, such as BatchNorm's running mean
    and variance; gradients never change it. Pass it to ``apply(params, x, state=state)``,
    `cnnlib.train.fit` and `cnnlib.train.evaluate`, which return the updated state.

    Args:
        model: a `Layer`.
        in_shape: the input shape with batch axis, e.g. ``(-1, 28, 28, 1)``.
        dtype: optional floating dtype for the state (default float32).

    Example:
        >>> state = init_state(serial(Conv(8, 3), BatchNorm(), Relu()), (-1, 28, 28, 1))
        >>> {key: sorted(value) for key, value in state.items()}
        {'1_batch_norm': ['mean', 'var']}

    Introduced in chapter 07, notebooks/07-going-deeper.ipynb.
    """
    check_layer(model, "init_state", "model")
    in_shape = check_shape(in_shape, "init_state")
    if model.init_state is None:
        return {}
    state = model.init_state(in_shape)
    return state if dtype is None else cast_params(state, dtype)


def cast_params(params: Params, dtype: Any) -> Params:
    """Cast every floating leaf of `params` (or state) to `dtype`; other leaves unchanged.

    Args:
        params: nested dicts of arrays.
        dtype: a floating dtype: ``jnp.float32``, ``jnp.float64`` (needs
            ``jax.config.update("jax_enable_x64", True)``), ``jnp.bfloat16``, ``jnp.float16``.

    Example:
        >>> cast_params({"w": jnp.ones(2)}, jnp.bfloat16)["w"].dtype
        dtype(bfloat16)

    Introduced in chapter 08, notebooks/08-performance-and-scaling.ipynb.
    """
    try:
        dtype = jnp.dtype(dtype)
    except TypeError:
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"cast_params: `dtype` must be a floating dtype such as jnp.float32, jnp.float64 "
            f"or jnp.bfloat16; got {dtype!r}."
        )
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            "cast_params: float64 needs 64-bit mode, which is off (JAX would silently keep "
            "float32). Call jax.config.update(\"jax_enable_x64\", True) first."
        )
    check_tree(params, "cast_params", "params")
    return jax.tree_util.tree_map(
        lambda leaf: leaf.astype(dtype) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf,
        params,
    )


def out_shape(layer: Layer, in_shape: Shape) -> Shape:
    """The output shape of `layer` for `in_shape` (by tracing its init, without data)."""
    return _shapes(layer.init, in_shape)[0]


@functools.lru_cache(maxsize=64)
def _compiled_init(init: Callable, in_shape: Shape) -> tuple[list, Callable]:
    shapes = []  # filled by the first trace; plain ints

    def params_only(key):
        out, params = init(key, in_shape)
        shapes.append(out)
        return params

    return shapes, jax.jit(params_only)


@functools.lru_cache(maxsize=256)
def _shapes(init: Callable, in_shape: Shape) -> tuple[Shape, Params]:
    shapes = []

    def params_only(key):
        out, params = init(key, in_shape)
        shapes.append(out)
        return params

    params = jax.eval_shape(params_only, jax.random.key(0))
    return shapes[0], params


# --- Shared helpers for layers ----------------------------------------------------------------


def normal(key, shape, gain, fan_in):
    """N(0, gain / fan_in) weights, float32: the numbers of ``jax.random.normal(key, shape)``.

    They are drawn as a flat vector and reshaped. JAX numbers the random draws of a shape in
    row-major order, so the values are the same, but XLA:CPU compiles the flat draw about five
    times faster (a 3x3x8x16 kernel: 0.12 s instead of 0.9 s), and every model compiles its
    init once.
    """
    flat = jax.random.normal(key, (math.prod(shape),), jnp.float32)
    return flat.reshape(shape) * math.sqrt(gain / fan_in)


def as_input(x, where):
    """`x` as a JAX array, so eager calls accept what jitted calls accept (NumPy, lists)."""
    if isinstance(x, (np.ndarray, list, np.generic)):
        try:
            return jnp.asarray(x)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"{where}: `x` must be an array of numbers; got {type(x).__name__} that "
                f"jnp.asarray cannot convert ({err})."
            ) from None
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(
            f"{where}: `x` must be an array; got {type(x).__name__}. Convert it with "
            f"jnp.asarray(x, jnp.float32)."
        )
    return x


def check_param_tree(params, expected, where, given="", what="params"):
    """`params` (or state, `what`) must be a dict with exactly the keys and shapes of `expected`.

    `given` says what the expected shapes follow from besides the layer's arguments.
    """
    init = ("init_params(model, key, in_shape)" if what == "params"
            else "init_state(model, in_shape)")
    if not isinstance(params, dict) or set(params) != set(expected):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(
            f"{where}: `{what}` must have the keys {sorted(expected)} (the dict {init} returned "
            f"for this layer); got {got}."
        )
    for name, shape in expected.items():
        got = getattr(params[name], "shape", None)
        if got is None or tuple(got) != tuple(shape):
            because = f"this layer's arguments and {given}" if given else "this layer"
            raise ValueError(
                f"{where}: {what}[{name!r}] must have shape {tuple(shape)} for {because}; got "
                f"{None if got is None else tuple(got)}. The {what} "
                f"{'belong' if what == 'params' else 'belongs'} to another model or input shape: "
                f"use what {init} returned for this one."
            )


def as_nhwc(x, where):
    """`x` as a JAX array of shape (N, H, W, C), or an error saying which axes to add."""
    x = as_input(x, where)
    if x.ndim != 4:
        fix = ADD_AXES.get(x.ndim, "reshape it to (N, H, W, C)")
        raise ValueError(
            f"{where}: `x` must have shape (N, H, W, C); got {tuple(x.shape)}. Add axes with "
            f"{fix}."
        )
    return x


def check_image_shape(in_shape, where):
    in_shape = tuple(in_shape)
    if len(in_shape) != 4 or not all(isinstance(d, int) for d in in_shape):
        raise ValueError(
            f"{where}: input must have shape (N, H, W, C); got in_shape {in_shape}. Images "
            f"are batched NHWC, e.g. (-1, 28, 28, 1); Flatten() comes after spatial layers."
        )
    return in_shape


def check_single_shape(in_shape, where):
    """A layer that takes one input: reject the tuple of shapes a FanOut produces."""
    if any(isinstance(d, tuple) for d in in_shape):
        raise ValueError(
            f"{where}: takes one input, but gets {len(in_shape)} (shapes {in_shape}) from "
            f"FanOut or parallel. Combine them first with FanInSum() or FanInConcat()."
        )
    return tuple(in_shape)


def check_shape(in_shape, where):
    """A shape with the batch axis first, or (for a multi-input layer) a tuple of them."""
    if isinstance(in_shape, tuple) and in_shape and all(isinstance(s, tuple) for s in in_shape):
        return tuple(check_shape(s, where) for s in in_shape)
    if not isinstance(in_shape, (tuple, list)) or not all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in in_shape
    ):
        raise TypeError(
            f"{where}: `in_shape` must be a tuple of ints with the batch axis first, e.g. "
            f"(-1, 28, 28, 1); got {in_shape!r}."
        )
    if len(in_shape) < 2 or min(in_shape[1:]) < 1 or in_shape[0] == 0 or in_shape[0] < -1:
        raise ValueError(
            f"{where}: `in_shape` must be (N, ...) with sizes >= 1 (N may be -1 for any); "
            f"got {tuple(in_shape)}. Use e.g. (-1, 28, 28, 1)."
        )
    return tuple(int(d) for d in in_shape)


def check_layer(layer, where, what):
    if not isinstance(layer, Layer):
        fix = (
            f"call it: {layer.__name__}()" if callable(layer) and hasattr(layer, "__name__")
            else "build one with Conv(...), Dense(...), serial(...)"
        )
        raise TypeError(f"{where}: {what} must be a Layer; got {layer!r}. {fix}.")


def check_tree(tree, where, name):
    if not isinstance(tree, dict):
        raise TypeError(
            f"{where}: `{name}` must be nested dicts of arrays; got {type(tree).__name__}."
        )
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if not hasattr(leaf, "dtype"):
            raise TypeError(
                f"{where}: `{name}` must be nested dicts of arrays; got {type(leaf).__name__} at "
                f"{jax.tree_util.keystr(path)}."
            )


def check_bool(value, name, where) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{where}: `{name}` must be True or False; got {value!r}.")
    return value


def check_init(w_init, where) -> float:
    if w_init not in GAINS:
        raise ValueError(
            f"{where}: `w_init` must be one of {tuple(GAINS)}; got {w_init!r}. Use \"he\" "
            f"before a ReLU, \"lecun\" before tanh or for the last layer."
        )
    return GAINS[w_init]
