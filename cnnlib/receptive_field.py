"""Receptive fields: which input pixels a unit can see, by arithmetic, by gradient, by perturbation.

Introduced in chapter 05, notebooks/05-hierarchy.ipynb.

`receptive_field` walks a serial model through each layer's ``config`` (no data, no parameters)
with the recursion of Araujo, Norris and Sim (2019, "Computing receptive fields of convolutional
neural networks", Distill). For a layer with kernel size k, dilation d (extent
``k' = d (k - 1) + 1``), stride s and padding p before the input, per spatial axis:

    r_l = r_{l-1} + (k'_l - 1) j_{l-1}      size of the receptive field (input pixels)
    j_l = j_{l-1} s_l                        jump: input pixels between neighbouring units
    start_l = start_{l-1} - p_l j_{l-1}      input coordinate of unit 0's first pixel

with ``r_0 = j_0 = 1`` and ``start_0 = 0``. Unit i of layer l then sees the input pixels
``start_l + i j_l`` to ``start_l + i j_l + r_l - 1``; a negative start reaches into padding.
`gradient_support` and `perturbation_support` measure the same sets on a real model, and
`effective_receptive_field` measures how the gradient is spread inside them (Luo et al., 2016).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cnnlib._validate import padding_pairs
from cnnlib.layers import Layer

# Layers that act on each position separately: they leave the receptive field unchanged.
# Normalisation counts as such: at evaluation BatchNorm is a per-channel affine map; GroupNorm's
# statistics do mix positions, but only through one mean and variance per group.
ELEMENTWISE = frozenset(
    {"relu", "tanh", "gelu", "sigmoid", "softplus", "leaky_relu", "elu", "identity", "dropout",
     "batch_norm", "layer_norm", "group_norm"}
)
# Layers after which there is no spatial grid: every output mixes every position.
GLOBAL = frozenset({"flatten", "dense", "global_avg_pool", "global_max_pool"})


class RFRecord(NamedTuple):
    """Receptive field of one layer's output units, per spatial axis as (h, w) pairs.

    Fields:

    - index: position of the layer in the chain (0 is the first layer).
    - name: the layer's name ("conv", "max_pool", ...).
    - r: receptive field size (r_h, r_w) in input pixels; None once the chain has ended.
    - j: jump (effective stride): input pixels between neighbouring units; None likewise.
    - start: input coordinate (row, column) of the first pixel seen by unit (0, 0);
      negative where it reaches into padding; None likewise.
    - out_hw: (H, W) of this layer's output when `in_shape` was given, else None.
    - spatial: False for Flatten, Dense, global pooling and every layer after them: their
      outputs have no position, and each depends on every position before.

    Introduced in chapter 05, notebooks/05-hierarchy.ipynb.
    """

    index: int
    name: str
    r: tuple[int, int] | None
    j: tuple[int, int] | None
    start: tuple[int, int] | None
    out_hw: tuple[int, int] | None
    spatial: bool


def receptive_field(model: Any, in_shape: Any = None) -> list[RFRecord]:
    """Receptive field size, jump and start of every layer of a serial model (Araujo et al. 2019).

    Walks ``model.config["layers"]`` (or a list of Layers) without data. A layer whose config
    has ``kernel_size`` and ``stride`` (Conv, LocallyConnected, MaxPool, AvgPool, BlurPool) moves
    along H and W; a nested chain (MaxBlurPool, an inner `serial`) counts as one layer whose
    record composes its children; activations, normalisation and dropout change nothing;
    Flatten, Dense and global pooling end the spatial chain (``spatial=False`` from there on).
    Reflect (BlurPool) and circular padding are counted like zero padding: the arithmetic is
    about positions of the padded array.

    Branches (`Residual`, `FanOut` ... `parallel` ... `FanInSum`/`FanInConcat`): each branch
    is walked on its own, and where they join, a unit sees the union of what the branches see:
    the smallest box holding every branch's box (for branches centred alike, as with SAME
    padding, that is the largest branch's field). A residual block ``f(x) + x`` therefore has
    the receptive field of ``f``. The branches must have the same jump, or their outputs could
    not be added. A record after `FanOut` or `parallel` reports that union too.

    Args:
        model: a `Layer` (usually ``serial(...)``) or a sequence of Layers.
        in_shape: optional (N, H, W, C). Needed only when "SAME"/"CIRCULAR" padding is used with
            a stride > 1 (its amounts depend on the size); with it, `out_hw` is filled in.

    Returns:
        A list of `RFRecord`, one per top-level layer, in order.

    Raises:
        TypeError: `model` is not a Layer or a sequence of Layers; `in_shape` is not a tuple.
        ValueError: a layer is of an unsupported kind, `in_shape` is not (N, H, W, C), or
            padding needs the input size and `in_shape` was not given.

    Example:
        >>> from cnnlib.layers import Conv, MaxPool, Relu, serial
        >>> rf = receptive_field(serial(Conv(8, 3), Relu(), MaxPool(2), Conv(8, 3)))
        >>> [(rec.name, rec.r[0], rec.j[0], rec.start[0]) for rec in rf]
        [('conv', 3, 1, 0), ('relu', 3, 1, 0), ('max_pool', 4, 2, 0), ('conv', 8, 2, 0)]

    Introduced in chapter 05, notebooks/05-hierarchy.ipynb.
    """
    where = "receptive_field"
    layers = _top_layers(model, where)
    hw = _check_in_shape(in_shape, where)
    field = ((1, 1), (1, 1), (0, 0), hw)  # (r, j, start, hw) of the input itself
    records, spatial = [], True
    for index, layer in enumerate(layers):
        if spatial and layer.name in GLOBAL:
            spatial = False
        if not spatial:
            records.append(RFRecord(index, layer.name, None, None, None, None, False))
            continue
        field = _compose(layer, field, index, where)
        r, j, start, out_hw = _hull(field, layer, index, where)
        records.append(RFRecord(index, layer.name, r, j, start, out_hw, True))
    return records


def receptive_box(record: RFRecord, i: int, j: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Input rows and columns seen by output unit (i, j): ``((top, bottom), (left, right))``.

    Half-open: rows ``top <= row < bottom``. Parts may lie outside the image (padding).

    Example:
        >>> from cnnlib.layers import Conv
        >>> receptive_box(receptive_field(Conv(1, 3, stride=2))[0], 1, 2)
        ((2, 5), (4, 7))

    Introduced in chapter 05, notebooks/05-hierarchy.ipynb.
    """
    if not isinstance(record, RFRecord) or not record.spatial:
        raise ValueError(
            f"receptive_box: `record` must be a spatial RFRecord from receptive_field; got "
            f"{record!r}. Flatten, Dense and global pooling have no box: they see everything."
        )
    top = record.start[0] + i * record.j[0]
    left = record.start[1] + j * record.j[1]
    return (top, top + record.r[0]), (left, left + record.r[1])


def gradient_support(fn: Callable, x: Any, index: tuple[int, int]) -> np.ndarray:
    """Input pixels where the gradient of output unit `index` is non-zero, any image or channel.

    The gradient is taken by one `jax.vjp` with the cotangent 1 at position `index` of every
    output channel. It is non-zero only inside the receptive field, but can be zero inside it:
    a ReLU that is off or a max-pooling window's losers pass no gradient for this `x`.

    Args:
        fn: maps x (N, H, W, C) to (N, H_out, W_out, C_out), e.g. ``lambda x: apply(params, x)``.
        x: floating array (N, H, W, C); the support is the union over the N images.
        index: output position (i, j).

    Returns:
        Boolean NumPy array (H, W).

    Example:
        >>> from cnnlib.layers import Conv, init_params
        >>> _, params = init_params(Conv(1, 3), jax.random.key(0), (1, 8, 8, 1))
        >>> int(gradient_support(lambda x: Conv(1, 3).apply(params, x),
        ...                      jnp.ones((1, 8, 8, 1)), (2, 2)).sum())
        9

    Introduced in chapter 05, notebooks/05-hierarchy.ipynb.
    """
    y, pullback = jax.vjp(fn, x)
    _check_output(y, index, "gradient_support")
    cotangent = jnp.zeros_like(y).at[:, index[0], index[1], :].set(1.0)
    (dx,) = pullback(cotangent)  # (N, H, W, C)
    return np.asarray(jnp.any(dx != 0, axis=(0, 3)))


def perturbation_support(
    fn: Callable, x: Any, index: tuple[int, int], value: float = float("inf"), chunk: int = 256
) -> np.ndarray:
    """Input pixels whose change changes output unit `index`, by brute force: one pixel at a time.

    Every pixel (all its channels) of the first image is set to `value` in turn and `fn` is run
    on the H * W perturbed images. With the default +inf and a network whose weights are all
    positive, the change cannot be absorbed: inf times a positive weight is inf, and ReLU, max
    and averages keep it, so the result is exactly the structural dependence set. With mixed
    signs a ReLU that stays off or a max that stays elsewhere can hide a change. (It holds for
    convolutions computed as sums of products, as XLA does on CPU, not for Winograd or FFT
    algorithms, which mix whole tiles.)

    Args:
        fn: maps (N, H, W, C) to (N, H_out, W_out, C_out).
        x: floating array (N, H, W, C); only x[0] is used.
        index: output position (i, j).
        value: the value written into one pixel.
        chunk: perturbed images per call of `fn`.

    Returns:
        Boolean NumPy array (H, W): True where the perturbation changed some channel of
        output unit `index`.

    Example:
        >>> from cnnlib.layers import MaxPool, serial
        >>> pool = serial(MaxPool(2), MaxPool(2))
        >>> int(perturbation_support(lambda x: pool.apply({}, x), jnp.zeros((1, 8, 8, 1)), (1, 1)).sum())
        16

    Introduced in chapter 05, notebooks/05-hierarchy.ipynb.
    """
    x = jnp.asarray(x)[:1]  # (1, H, W, C)
    y = fn(x)
    _check_output(y, index, "perturbation_support")
    h, w = x.shape[1:3]

    @jax.jit
    def changed(x, pixels):  # (B,) flat pixel indices -> (B,) bool
        masks = (pixels[:, None] == jnp.arange(h * w)).reshape(-1, h, w, 1)
        xs = jnp.where(masks, jnp.asarray(value, x.dtype), x)  # (B, H, W, C)
        out = fn(jnp.concatenate([x, xs]))[:, index[0], index[1]]  # (1 + B, C_out)
        # Rounding may differ between batch rows: count changes beyond it (inf and NaN do).
        return jnp.any(~jnp.isclose(out[1:], out[:1], rtol=1e-4, atol=1e-6), axis=1)

    flat = np.arange(h * w)
    pieces = []
    for s in range(0, h * w, chunk):  # equal chunk shapes: one compilation
        part = flat[s : s + chunk]
        pieces.append(np.asarray(changed(x, jnp.asarray(np.resize(part, chunk))))[: len(part)])
    return np.concatenate(pieces).reshape(h, w)


def effective_receptive_field(fn: Callable, in_shape: Sequence[int]) -> np.ndarray:
    """Absolute gradient of the centre unit, summed over channels: its spread (Luo et al. 2016).

    The cotangent is 1 at the centre position (H_out // 2, W_out // 2) of every output channel,
    the input is all zeros (for a linear or piecewise-linear network at 0 the gradient is the
    same as for any input on which every unit is active).

    Args:
        fn: maps (1, H, W, C) to (1, H_out, W_out, C_out).
        in_shape: (1, H, W, C).

    Returns:
        NumPy float array (H, W), non-negative.

    Introduced in chapter 05, notebooks/05-hierarchy.ipynb.
    """
    x = jnp.zeros(tuple(in_shape), jnp.float32)
    y, pullback = jax.vjp(fn, x)
    _check_output(y, (0, 0), "effective_receptive_field")
    cotangent = jnp.zeros_like(y).at[:, y.shape[1] // 2, y.shape[2] // 2, :].set(1.0)
    (dx,) = pullback(cotangent)
    return np.asarray(jnp.abs(dx).sum(axis=(0, 3)))


def spread(weights: Any) -> float:
    """Standard deviation, in pixels, of the positions weighted by a non-negative (H, W) map.

    ``sqrt(sum_p w_p |p - mean|^2 / (2 sum_p w_p))``: the root-mean-square distance from the
    weighted centre, divided by sqrt(2) so that it is the standard deviation along one axis
    for an isotropic map. Luo et al. (2016) show the effective receptive field is close to a
    Gaussian; this is its width.

    Example:
        >>> spread(np.outer([1, 2, 1], [1, 2, 1]))  # variance 1/2 along each axis
        0.7071...

    Introduced in chapter 05, notebooks/05-hierarchy.ipynb.
    """
    w = np.asarray(weights, np.float64)
    if w.ndim != 2 or w.min() < 0 or w.sum() <= 0:
        raise ValueError(
            f"spread: `weights` must be a non-negative (H, W) map with a positive sum; got "
            f"shape {w.shape}. Pass effective_receptive_field(...) or np.abs(grad)."
        )
    rows, cols = np.indices(w.shape)
    total = w.sum()
    mr, mc = (w * rows).sum() / total, (w * cols).sum() / total
    return float(np.sqrt((w * ((rows - mr) ** 2 + (cols - mc) ** 2)).sum() / (2 * total)))


# --- Helpers ----------------------------------------------------------------------------------


def _compose(layer, field, index, where):
    """Walk one layer: `field` is ``(r, j, start, hw)`` per axis, or a tuple of them (branches)."""
    config, name = layer.config, layer.name
    if name == "fan_out":
        return tuple(_hull(field, layer, index, where) for _ in range(config["n"]))
    if name == "parallel":
        branches = config["branches"]
        if not _is_branches(field) or len(field) != len(branches):
            raise ValueError(
                f"{where}: layer {index} ({name!r}) needs {len(branches)} branches from FanOut; "
                f"got {1 if not _is_branches(field) else len(field)}."
            )
        return tuple(_compose(b, f, index, where) for b, f in zip(branches, field))
    if name in ("fan_in_sum", "fan_in_concat"):
        return _hull(field, layer, index, where)
    if name == "residual":
        branches = (_compose(config["inner"], field, index, where),
                    _compose(config["shortcut"], field, index, where))
        return _hull(branches, layer, index, where)
    if "layers" in config:  # a nested chain (serial, MaxBlurPool): compose its children
        for child in config["layers"]:
            if child.name in GLOBAL:
                raise ValueError(
                    f"{where}: layer {index} ({name!r}) contains {child.name!r}, which "
                    f"ends the spatial chain inside a nested chain. Put it at the top level."
                )
            field = _compose(child, field, index, where)
        return field
    if name in ELEMENTWISE:
        return field
    if name in GLOBAL:
        raise ValueError(
            f"{where}: layer {index} contains {name!r} inside a branch; it ends the spatial "
            f"chain, so put it at the top level after the branches join."
        )
    if "kernel_size" not in config or "stride" not in config:
        raise ValueError(
            f"{where}: layer {index} ({name!r}) is not supported: its config {config} has "
            f"no kernel_size and stride. Supported: Conv, LocallyConnected, the pooling layers, "
            f"elementwise layers {sorted(ELEMENTWISE)}, nested serial chains, branches "
            f"(Residual, FanOut, parallel, FanInSum, FanInConcat), and {sorted(GLOBAL)}, which "
            f"end the spatial chain."
        )
    r, j, start, hw = _hull(field, layer, index, where)
    kernel, stride = config["kernel_size"], config["stride"]
    dilation = config.get("dilation", (1, 1))
    extent = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    pads = _resolve_padding(config.get("padding", "VALID"), hw, extent, stride, index, layer, where)
    new = tuple(zip(*(_step(*axis) for axis in zip(r, j, start, extent, stride, pads))))
    new_hw = None
    if hw is not None:
        new_hw = tuple((n + sum(p) - e) // s + 1 for n, p, e, s in zip(hw, pads, extent, stride))
        if min(new_hw) < 1:
            raise ValueError(
                f"{where}: layer {index} ({name!r}) with kernel extent {extent} does not "
                f"fit its input (H, W) = {hw} padded by {pads}. Use a larger in_shape."
            )
    return (*new, new_hw)


def _step(r, j, start, extent, stride, padding):
    """One layer, one axis: the recursion of Araujo et al. (2019)."""
    r = r + (extent - 1) * j  # the window spans extent units of the previous layer, j apart
    start = start - padding[0] * j  # padding moves the first window back by p units
    j = j * stride  # neighbouring units are stride units of the previous layer apart
    return r, j, start


def _is_branches(field):
    return isinstance(field[0], tuple) and len(field[0]) == 4


def _hull(field, layer, index, where):
    """One ``(r, j, start, hw)``: the smallest box holding every branch's box, per axis."""
    if not _is_branches(field):
        return field
    fields = [_hull(f, layer, index, where) for f in field]
    js = {f[1] for f in fields}
    hws = {f[3] for f in fields}
    if len(js) > 1 or len(hws) > 1:
        raise ValueError(
            f"{where}: layer {index} ({layer.name!r}) joins branches with different jumps "
            f"{sorted(js)} or output sizes {sorted(hws, key=str)}; their outputs cannot be "
            f"aligned. Give every branch the same strides."
        )
    start = tuple(min(f[2][a] for f in fields) for a in range(2))
    end = tuple(max(f[2][a] + f[0][a] for f in fields) for a in range(2))
    return tuple(e - s for s, e in zip(start, end)), fields[0][1], start, fields[0][3]


def _resolve_padding(padding, hw, extent, stride, index, layer, where):
    if isinstance(padding, str) and padding.upper() in ("SAME", "CIRCULAR") and hw is None:
        if max(stride) > 1:
            raise ValueError(
                f"{where}: layer {index} ({layer.name!r}) has padding {padding!r} with stride "
                f"{stride}, whose amounts depend on the input size; got in_shape=None. Pass "
                f"in_shape=(N, H, W, C), e.g. (-1, 224, 224, 3)."
            )
        hw = extent  # with stride 1, SAME pads extent - 1 in total whatever the size
    return padding_pairs(padding, hw or extent, extent, stride, where)


def _top_layers(model, where):
    if isinstance(model, Layer):
        return tuple(model.config["layers"]) if model.name == "serial" else (model,)
    if isinstance(model, (list, tuple)) and model and all(isinstance(m, Layer) for m in model):
        return tuple(model)
    raise TypeError(
        f"{where}: `model` must be a Layer (e.g. serial(...)) or a non-empty list of Layers; got "
        f"{type(model).__name__}. Build it with cnnlib.layers, e.g. serial(Conv(8, 3), Relu())."
    )


def _check_in_shape(in_shape, where):
    if in_shape is None:
        return None
    if not isinstance(in_shape, (tuple, list)) or not all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in in_shape
    ):
        raise TypeError(
            f"{where}: `in_shape` must be None or a tuple of ints (N, H, W, C); got "
            f"{in_shape!r}. Use e.g. (-1, 28, 28, 1)."
        )
    if len(in_shape) != 4 or min(in_shape[1:]) < 1:
        raise ValueError(
            f"{where}: `in_shape` must be (N, H, W, C) with H, W, C >= 1; got {tuple(in_shape)}. "
            f"Use e.g. (-1, 28, 28, 1)."
        )
    return (int(in_shape[1]), int(in_shape[2]))


def _check_output(y, index, where):
    if getattr(y, "ndim", None) != 4:
        raise ValueError(
            f"{where}: `fn` must return a 4-D (N, H_out, W_out, C_out) array; got shape "
            f"{getattr(y, 'shape', None)}. Cut the model before Flatten/Dense."
        )
    i, j = index
    if not (0 <= i < y.shape[1] and 0 <= j < y.shape[2]):
        raise ValueError(
            f"{where}: `index` must lie in the output grid (H_out, W_out) = {y.shape[1:3]}; got "
            f"{tuple(index)}. Use 0 <= i < {y.shape[1]} and 0 <= j < {y.shape[2]}."
        )


def closed_form_size(kernel_sizes: Sequence[int], strides: Sequence[int]) -> int:
    """Araujo et al.'s closed form ``r = 1 + sum_l (k_l - 1) prod_{i<l} s_i`` for one axis.

    Example:
        >>> closed_form_size([3, 3, 2, 3], [1, 1, 2, 1])
        10

    Introduced in chapter 05, notebooks/05-hierarchy.ipynb.
    """
    if len(kernel_sizes) != len(strides):
        raise ValueError(
            f"closed_form_size: `kernel_sizes` and `strides` must have the same length; got "
            f"{len(kernel_sizes)} and {len(strides)}. Give one stride per layer (1 if none)."
        )
    return 1 + sum((k - 1) * math.prod(strides[:l]) for l, k in enumerate(kernel_sizes))
