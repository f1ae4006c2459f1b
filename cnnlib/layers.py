"""Layers as pairs of pure functions, composed with `serial` (jax.example_libraries.stax style).

Introduced in chapter 03, notebooks/03-locality.ipynb.

A `Layer` is ``Layer(init, apply, name, config)``:

- ``init(key, in_shape) -> (out_shape, params)`` computes the output shape by arithmetic
  (`conv_output_size`), never by running the layer on data, and draws the parameters;
- ``apply(params, x, **kw) -> y`` is the forward pass (`**kw` is passed down by `serial` and
  ignored by every layer here);
- ``config`` is a plain dict of the normalised constructor arguments. Layers that move along
  H and W have ``kernel_size``, ``stride``, ``padding`` and ``dilation`` (pairs; padding a
  string or ``((top, bottom), (left, right))``); `serial` has ``{"layers": (children...)}``;
  activations, `Flatten`, `GlobalAvgPool` have ``{}`` or the few arguments they take. Code such
  as a receptive-field calculator walks a model through ``config`` alone, without data.

Shapes include the batch axis: ``(N, H, W, C)`` for images, ``(N, features)`` after `Flatten`.
N may be -1 ("any"); it is carried through unchanged.

Parameters are plain nested dicts of arrays: a layer with weights has ``{"w": ..., "b": ...}``,
a layer without has ``{}``, and `serial` keys its children's dicts ``f"{index}_{name}"``,
leaving out children without parameters, e.g. ``{"00_conv": {"w", "b"}, "03_conv": {...},
"07_dense": {...}}``, so every key says where in the chain its weights sit.

Initialisation: weights are drawn from N(0, gain / fan_in) with ``fan_in`` the number of inputs
one output sums over (kh * kw * in_channels / groups, or in_features); gain 2 is He et al.
(2015), right before a ReLU, gain 1 is LeCun (1998), for tanh or the last (linear) layer.
Biases start at zero. `init_params` jit-compiles a whole model's init once: eager jax.random
compiles one small program per distinct shape, which was measured at 5 s for a small CNN.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from cnnlib._validate import (
    check_positive_int,
    padding_pairs,
    positive_pair,
)
from cnnlib.conv import conv2d, conv_output_size
from cnnlib.pool import avg_pool, blur_pool, global_avg_pool, max_pool

Shape = tuple  # (N, H, W, C) or (N, features); N may be -1
Params = dict  # nested dicts of arrays

# Gain of the weight variance gain / fan_in, by name.
GAINS = {"he": 2.0, "lecun": 1.0}


class Layer(NamedTuple):
    """A layer: ``init(key, in_shape) -> (out_shape, params)``, ``apply(params, x, **kw) -> y``.

    Attributes:
        init: draws parameters and computes the output shape, without data.
        apply: the forward pass, a pure function of `params` and `x`.
        name: short lowercase name ("conv", "relu", ...); `serial` keys params with it.
        config: plain dict of the normalised constructor arguments (see the module docstring).

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """

    init: Callable[[jax.Array, Shape], tuple[Shape, Params]]
    apply: Callable[..., jax.Array]
    name: str
    config: dict


def init_params(model: Layer, key: jax.Array, in_shape: Shape) -> tuple[Shape, Params]:
    """Initialise `model` for inputs of `in_shape`, compiling the whole init as one program.

    Args:
        model: a `Layer` (usually a `serial` chain).
        key: a `jax.random` key.
        in_shape: the input shape with batch axis, e.g. ``(-1, 28, 28, 1)``.

    Returns:
        ``(out_shape, params)``: the output shape (a tuple of ints) and the parameters.

    Example:
        >>> model = serial(Conv(6, 5, padding="SAME"), Relu(), Flatten(), Dense(10))
        >>> out_shape, params = init_params(model, jax.random.key(0), (-1, 28, 28, 1))
        >>> out_shape, params["0_conv"]["w"].shape
        ((-1, 10), (5, 5, 1, 6))

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """
    _check_layer(model, "init_params", "model")
    in_shape = _check_shape(in_shape, "init_params")
    shapes = []

    def params_only(key):
        out_shape, params = model.init(key, in_shape)
        shapes.append(out_shape)  # plain ints, known at trace time
        return params

    params = jax.jit(params_only)(key)
    return shapes[0], params


def param_shapes(model: Layer, in_shape: Shape) -> tuple[Shape, Params]:
    """``(out_shape, params)`` with `jax.ShapeDtypeStruct` leaves: no data, no random numbers.

    Example:
        >>> param_shapes(Dense(10), (-1, 400))[1]["w"].shape
        (400, 10)

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """
    _check_layer(model, "param_shapes", "model")
    in_shape = _check_shape(in_shape, "param_shapes")
    shapes = []

    def params_only(key):
        out_shape, params = model.init(key, in_shape)
        shapes.append(out_shape)
        return params

    params = jax.eval_shape(params_only, jax.random.key(0))
    return shapes[0], params


# --- Layers with parameters -------------------------------------------------------------------


def Conv(
    out_channels: int,
    kernel_size: Any,
    *,
    stride: Any = 1,
    padding: Any = "VALID",
    dilation: Any = 1,
    groups: int = 1,
    use_bias: bool = True,
    w_init: str = "he",
) -> Layer:
    """2-D convolution layer: `cnnlib.conv2d` with a learned kernel and bias.

    Params: ``{"w": (kh, kw, in_channels // groups, out_channels), "b": (out_channels,)}``
    (no "b" when ``use_bias=False``), w ~ N(0, gain / (kh * kw * in_channels / groups)).

    Args:
        out_channels: number of kernels, >= 1.
        kernel_size: int or (kh, kw).
        stride, padding, dilation, groups: as in `cnnlib.conv2d`.
        use_bias: learn a bias per output channel.
        w_init: "he" (gain 2, before ReLU) or "lecun" (gain 1).

    Returns:
        A `Layer` mapping (N, H, W, in_channels) to (N, H_out, W_out, out_channels) with
        ``H_out = conv_output_size(H, kh, sh, padding, dh)``.

    Example:
        >>> out_shape, params = init_params(Conv(6, 5), jax.random.key(0), (8, 28, 28, 1))
        >>> out_shape
        (8, 24, 24, 6)

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """
    where = "Conv"
    out_channels = check_positive_int(out_channels, "out_channels", where)
    kernel_size = positive_pair(kernel_size, "kernel_size", where)
    stride = positive_pair(stride, "stride", where)
    dilation = positive_pair(dilation, "dilation", where)
    groups = check_positive_int(groups, "groups", where)
    padding = _check_padding(padding, kernel_size, stride, where)
    use_bias = _check_bool(use_bias, "use_bias", where)
    gain = _check_init(w_init, where)
    if out_channels % groups:
        raise ValueError(
            f"{where}: `groups` must divide `out_channels`; got groups={groups}, "
            f"out_channels={out_channels}. Use an out_channels that is a multiple of groups."
        )

    def init(key, in_shape):
        n, h, w, c = _check_image_shape(in_shape, where)
        if c % groups:
            raise ValueError(
                f"{where}: `groups`={groups} must divide the input's channels {c} "
                f"(in_shape {in_shape}). Use a divisor of {c}, e.g. groups=1."
            )
        out_hw = _spatial_out((h, w), kernel_size, stride, padding, dilation, where)
        w_shape = (*kernel_size, c // groups, out_channels)  # (kh, kw, C_in / groups, C_out)
        params = {"w": _normal(key, w_shape, gain, math.prod(w_shape[:3]))}
        if use_bias:
            params["b"] = jnp.zeros((out_channels,), jnp.float32)
        return (n, *out_hw, out_channels), params

    def apply(params, x, **kw):
        w = _param(params, "w", where)
        _check_channels(x, w.shape[2] * groups, where, f"params['w'] has shape {w.shape}")
        b = _param(params, "b", where) if use_bias else None
        # conv2d is lax's convolution. Multiply-add and patch-matmul versions for in_channels=1
        # were measured slower inside a whole LeNet-5 train step (benchmarks/README.md).
        return conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)

    config = dict(
        out_channels=out_channels, kernel_size=kernel_size, stride=stride, padding=padding,
        dilation=dilation, groups=groups, use_bias=use_bias, w_init=w_init,
    )
    return Layer(init, apply, "conv", config)


def Dense(out_features: int, *, use_bias: bool = True, w_init: str = "he") -> Layer:
    """Fully connected layer: ``y = x @ w + b``.

    Params: ``{"w": (in_features, out_features), "b": (out_features,)}``,
    w ~ N(0, gain / in_features). Use ``w_init="lecun"`` for the last (logits) layer.

    Args:
        out_features: output width, >= 1.
        use_bias: learn a bias.
        w_init: "he" (gain 2, before ReLU) or "lecun" (gain 1).

    Returns:
        A `Layer` mapping (N, in_features) to (N, out_features).

    Example:
        >>> init_params(Dense(10), jax.random.key(0), (-1, 400))[0]
        (-1, 10)

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """
    where = "Dense"
    out_features = check_positive_int(out_features, "out_features", where)
    use_bias = _check_bool(use_bias, "use_bias", where)
    gain = _check_init(w_init, where)

    def init(key, in_shape):
        if len(in_shape) != 2:
            raise ValueError(
                f"{where}: input must have shape (N, features); got in_shape {tuple(in_shape)}. "
                f"Put Flatten() or GlobalAvgPool() before Dense."
            )
        n, features = in_shape
        params = {"w": _normal(key, (features, out_features), gain, features)}
        if use_bias:
            params["b"] = jnp.zeros((out_features,), jnp.float32)
        return (n, out_features), params

    def apply(params, x, **kw):
        w = _param(params, "w", where)
        shape = getattr(x, "shape", None)
        if shape is None or len(shape) != 2 or shape[1] != w.shape[0]:
            raise ValueError(
                f"{where}: `x` must have shape (N, {w.shape[0]}) (params['w'] has shape "
                f"{w.shape}); got {None if shape is None else tuple(shape)}. Put Flatten() "
                f"before Dense, or re-initialise with the input shape you use."
            )
        y = x @ w  # (N, out_features)
        return y + params["b"] if use_bias else y

    config = dict(out_features=out_features, use_bias=use_bias, w_init=w_init)
    return Layer(init, apply, "dense", config)


def LocallyConnected(
    out_channels: int,
    kernel_size: Any,
    *,
    stride: Any = 1,
    padding: Any = "VALID",
    w_init: str = "he",
) -> Layer:
    """Convolution without weight sharing: every output position has its own kernel and bias.

    The ablation of chapter 03: it keeps locality (each output sees a kh x kw window) but drops
    weight sharing, so it has H_out * W_out times the parameters of `Conv`. With every
    position's kernel equal to one conv kernel it computes exactly `conv2d` (tested).

    Params: ``{"w": (H_out, W_out, kh * kw * in_channels, out_channels),
    "b": (H_out, W_out, out_channels)}``; the patch axis is ordered (kh, kw, in_channels), so
    ``w[i, j].reshape(kh, kw, in_channels, out_channels)`` is an HWIO kernel.

    Args:
        out_channels: kernels per position, >= 1.
        kernel_size: int or (kh, kw).
        stride: int or (sh, sw).
        padding: as in `cnnlib.conv2d` (zeros; "CIRCULAR" wraps around).
        w_init: "he" (gain 2) or "lecun" (gain 1); fan_in = kh * kw * in_channels.

    Returns:
        A `Layer` mapping (N, H, W, in_channels) to (N, H_out, W_out, out_channels), sizes as
        in `Conv`.

    Example:
        >>> out_shape, params = init_params(LocallyConnected(4, 5), jax.random.key(0), (-1, 28, 28, 1))
        >>> out_shape, params["w"].shape
        ((-1, 24, 24, 4), (24, 24, 25, 4))

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """
    where = "LocallyConnected"
    out_channels = check_positive_int(out_channels, "out_channels", where)
    kernel_size = positive_pair(kernel_size, "kernel_size", where)
    stride = positive_pair(stride, "stride", where)
    padding = _check_padding(padding, kernel_size, stride, where)
    gain = _check_init(w_init, where)

    def init(key, in_shape):
        n, h, w, c = _check_image_shape(in_shape, where)
        out_hw = _spatial_out((h, w), kernel_size, stride, padding, (1, 1), where)
        fan_in = kernel_size[0] * kernel_size[1] * c
        params = {
            "w": _normal(key, (*out_hw, fan_in, out_channels), gain, fan_in),
            "b": jnp.zeros((*out_hw, out_channels), jnp.float32),
        }
        return (n, *out_hw, out_channels), params

    def apply(params, x, **kw):
        w = _param(params, "w", where)  # (H_out, W_out, kh * kw * C, C_out)
        c = w.shape[2] // (kernel_size[0] * kernel_size[1])
        _check_channels(x, c, where, f"params['w'] has shape {w.shape}")
        patches = _patches(x, kernel_size, stride, padding, where)  # (N, H_out, W_out, kh*kw*C)
        if patches.shape[1:3] != w.shape[:2]:
            raise ValueError(
                f"{where}: input (H, W) = {x.shape[1:3]} gives {patches.shape[1:3]} output "
                f"positions, but params were initialised for {w.shape[:2]}. Locally connected "
                f"weights fix the image size: re-initialise with this input shape."
            )
        return jnp.einsum("nijk,ijko->nijo", patches, w) + params["b"]

    config = dict(
        out_channels=out_channels, kernel_size=kernel_size, stride=stride, padding=padding,
        dilation=(1, 1), w_init=w_init,
    )
    return Layer(init, apply, "locally_connected", config)


# --- Pooling ----------------------------------------------------------------------------------


def MaxPool(window: Any, stride: Any = None, padding: Any = "VALID") -> Layer:
    """Max pooling layer (`cnnlib.max_pool`); no parameters.

    Returns:
        A `Layer` mapping (N, H, W, C) to (N, H_out, W_out, C); stride defaults to window.

    Example:
        >>> init_params(MaxPool(2), jax.random.key(0), (-1, 28, 28, 6))[0]
        (-1, 14, 14, 6)

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """
    return _pool(max_pool, "MaxPool", "max_pool", window, stride, padding)


def AvgPool(window: Any, stride: Any = None, padding: Any = "VALID") -> Layer:
    """Average pooling layer (`cnnlib.avg_pool`, padded zeros counted); no parameters.

    Returns:
        A `Layer` mapping (N, H, W, C) to (N, H_out, W_out, C); stride defaults to window.

    Example:
        >>> init_params(AvgPool(2), jax.random.key(0), (-1, 28, 28, 6))[0]
        (-1, 14, 14, 6)

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """
    return _pool(avg_pool, "AvgPool", "avg_pool", window, stride, padding)


def BlurPool(stride: Any = 2, size: int = 3) -> Layer:
    """Anti-aliased downsampling layer (`cnnlib.blur_pool`, Zhang 2019); no parameters.

    Returns:
        A `Layer` mapping (N, H, W, C) to (N, ceil(H / sh), ceil(W / sw), C).

    Example:
        >>> init_params(BlurPool(), jax.random.key(0), (-1, 27, 27, 6))[0]
        (-1, 14, 14, 6)

    Introduced in chapter 03, notebooks/03-locality.ipynb; used in chapter 04.
    """
    where = "BlurPool"
    stride = positive_pair(stride, "stride", where)
    size = check_positive_int(size, "size", where)
    if size > 7:
        raise ValueError(f"{where}: `size` must be between 1 and 7; got {size}. Use size=3.")
    pad = ((size - 1) // 2, size // 2)  # reflect padding, as blur_pool does

    def init(key, in_shape):
        n, h, w, c = _check_image_shape(in_shape, where)
        return (n, -(-h // stride[0]), -(-w // stride[1]), c), {}

    def apply(params, x, **kw):
        return blur_pool(x, stride=stride, size=size)

    config = dict(kernel_size=(size, size), stride=stride, padding=(pad, pad), dilation=(1, 1),
                  size=size)
    return Layer(init, apply, "blur_pool", config)


def MaxBlurPool(window: Any = 2, stride: Any = 2, size: int = 3) -> Layer:
    """Zhang's (2019) MaxBlurPool: dense max (stride 1), then `BlurPool` does the striding.

    A `serial`-like chain named "max_blur_pool" with ``config["layers"] = (MaxPool(window, 1),
    BlurPool(stride, size))``; no parameters.

    Returns:
        A `Layer` mapping (N, H, W, C) to (N, ceil((H - kh + 1) / sh), ..., C).

    Example:
        >>> init_params(MaxBlurPool(), jax.random.key(0), (-1, 28, 28, 6))[0]
        (-1, 14, 14, 6)

    Introduced in chapter 03, notebooks/03-locality.ipynb; used in chapter 04.
    """
    return _chain((MaxPool(window, stride=1), BlurPool(stride, size)), "max_blur_pool",
                  "MaxBlurPool")


def GlobalAvgPool() -> Layer:
    """Mean over all positions (`cnnlib.global_avg_pool`): (N, H, W, C) -> (N, C).

    Example:
        >>> init_params(GlobalAvgPool(), jax.random.key(0), (-1, 7, 7, 32))[0]
        (-1, 32)

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """

    def init(key, in_shape):
        n, h, w, c = _check_image_shape(in_shape, "GlobalAvgPool")
        return (n, c), {}

    return Layer(init, lambda params, x, **kw: global_avg_pool(x), "global_avg_pool", {})


def Flatten() -> Layer:
    """Flatten every axis after the batch axis: (N, H, W, C) -> (N, H * W * C).

    Example:
        >>> init_params(Flatten(), jax.random.key(0), (-1, 5, 5, 16))[0]
        (-1, 400)

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """

    def init(key, in_shape):
        return (in_shape[0], math.prod(in_shape[1:])), {}

    def apply(params, x, **kw):
        return x.reshape(x.shape[0], -1)

    return Layer(init, apply, "flatten", {})


# --- Activations ------------------------------------------------------------------------------


def _activation(fn: Callable, name: str, doc: str) -> Callable[[], Layer]:
    def constructor() -> Layer:
        return Layer(lambda key, in_shape: (tuple(in_shape), {}),
                     lambda params, x, **kw: fn(x), name, {})

    constructor.__name__ = constructor.__qualname__ = name.capitalize()
    constructor.__doc__ = doc
    return constructor


Relu = _activation(jax.nn.relu, "relu", """Elementwise max(x, 0); same shape out, no parameters.

    Example:
        >>> serial(Conv(6, 5), Relu()).name
        'serial'

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """)
Tanh = _activation(jnp.tanh, "tanh", """Elementwise tanh; same shape out, no parameters.

    Example:
        >>> Tanh().name
        'tanh'

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """)
Gelu = _activation(
    lambda x: jax.nn.gelu(x, approximate=False), "gelu",
    """Elementwise exact GELU, x * Phi(x) (PyTorch's default); same shape out, no parameters.

    Example:
        >>> Gelu().name
        'gelu'

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """,
)


# --- Composition ------------------------------------------------------------------------------


def serial(*layers: Layer) -> Layer:
    """Chain layers: the output of each is the input of the next.

    Params: ``{f"{i}_{layer.name}": params_i}`` for every child `i` that has parameters, `i`
    zero-padded to the width of the largest index ("03_conv" in a chain of 12) so that sorted
    keys follow the chain.

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
    return _chain(layers, "serial", "serial")


def _chain(layers: tuple, name: str, where: str) -> Layer:
    if not layers:
        raise ValueError(f"{where}: needs at least one layer; got none. Pass e.g. serial(Relu()).")
    for i, layer in enumerate(layers):
        _check_layer(layer, where, f"layer {i}")
    digits = len(str(len(layers) - 1))  # zero-padded, so sorted keys follow the chain
    keys = [f"{i:0{digits}d}_{layer.name}" for i, layer in enumerate(layers)]

    def init(key, in_shape):
        params = {}
        for k, child_key, layer in zip(jax.random.split(key, len(layers)), keys, layers):
            in_shape, child = layer.init(k, in_shape)
            if child:
                params[child_key] = child
        return in_shape, params

    def apply(params, x, **kw):
        if not isinstance(params, dict) or set(params) - set(keys):
            got = sorted(params) if isinstance(params, dict) else type(params).__name__
            raise ValueError(
                f"{where}: `params` must be the dict that init returned for this chain, keys "
                f"among {keys}; got {got}. Initialise with init_params(model, key, in_shape)."
            )
        for child_key, layer in zip(keys, layers):
            x = layer.apply(params.get(child_key, {}), x, **kw)
        return x

    return Layer(init, apply, name, {"layers": tuple(layers)})


# --- Helpers ----------------------------------------------------------------------------------


def _pool(fn, where, name, window, stride, padding) -> Layer:
    window = positive_pair(window, "window", where)
    stride = window if stride is None else positive_pair(stride, "stride", where)
    padding = _check_padding(padding, window, stride, where, ("VALID", "SAME"))

    def init(key, in_shape):
        n, h, w, c = _check_image_shape(in_shape, where)
        return (n, *_spatial_out((h, w), window, stride, padding, (1, 1), where), c), {}

    def apply(params, x, **kw):
        return fn(x, window, stride, padding)

    config = dict(kernel_size=window, stride=stride, padding=padding, dilation=(1, 1))
    return Layer(init, apply, name, config)


def _normal(key, shape, gain, fan_in):
    """N(0, gain / fan_in) weights, float32."""
    return jax.random.normal(key, shape, jnp.float32) * math.sqrt(gain / fan_in)


def _check_init(w_init, where) -> float:
    if w_init not in GAINS:
        raise ValueError(
            f"{where}: `w_init` must be one of {tuple(GAINS)}; got {w_init!r}. Use \"he\" "
            f"before a ReLU, \"lecun\" before tanh or for the last layer."
        )
    return GAINS[w_init]


def _check_bool(value, name, where) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{where}: `{name}` must be True or False; got {value!r}.")
    return value


def _check_padding(padding, kernel_size, stride, where, modes=None):
    """Validate the padding form now (sizes are unknown until init); strings upper-cased."""
    kwargs = {} if modes is None else {"modes": modes}
    pairs = padding_pairs(padding, kernel_size, kernel_size, stride, where, **kwargs)
    return padding.upper() if isinstance(padding, str) else pairs


def _spatial_out(in_hw, kernel_size, stride, padding, dilation, where):
    """(H_out, W_out) by `conv_output_size`, per axis, with the padding resolved for this size."""
    extent = tuple(d * (k - 1) + 1 for k, d in zip(kernel_size, dilation))
    pads = padding_pairs(padding, in_hw, extent, stride, where)
    out = []
    for n, k, s, p, d in zip(in_hw, kernel_size, stride, pads, dilation):
        if d * (k - 1) + 1 > n + sum(p):
            raise ValueError(
                f"{where}: `kernel_size` {kernel_size} (dilation {dilation}) must fit in the "
                f"padded input (H, W) = {in_hw} with padding {pads}. Use padding=\"SAME\", a "
                f"smaller kernel_size, or fewer downsampling layers before this one."
            )
        out.append(conv_output_size(n, k, s, p, d))
    return tuple(out)


def _patches(x, kernel_size, stride, padding, where):
    """(N, H, W, C) -> (N, H_out, W_out, kh * kw * C) windows, ordered (kh, kw, C) like HWIO."""
    pads = padding_pairs(padding, x.shape[1:3], kernel_size, stride, where)
    mode = "wrap" if padding == "CIRCULAR" else "constant"
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)), mode=mode)
    (kh, kw), (sh, sw) = kernel_size, stride
    ho, wo = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    taps = [
        x[:, u : u + (ho - 1) * sh + 1 : sh, v : v + (wo - 1) * sw + 1 : sw, :]
        for u in range(kh)
        for v in range(kw)
    ]  # kh * kw arrays of (N, H_out, W_out, C)
    return jnp.concatenate(taps, axis=3)


def _param(params, name, where):
    if not isinstance(params, dict) or name not in params:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(
            f"{where}: `params` must have the key {name!r} (the dict init returned for this "
            f"layer); got {got}. Pass the params from init_params(layer, key, in_shape)."
        )
    return params[name]


def _check_channels(x, channels, where, because):
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != 4:
        got = None if shape is None else tuple(shape)
        raise ValueError(
            f"{where}: `x` must have shape (N, H, W, C); got {got}. Add axes with "
            f"x[None, ..., None] for one image, or x[..., None] for a batch of (N, H, W)."
        )
    if shape[3] != channels:
        raise ValueError(
            f"{where}: `x` must have {channels} channels ({because}); got shape {tuple(shape)}. "
            f"Re-initialise with in_shape=(N, H, W, {shape[3]}) or fix the previous layer."
        )


def _check_image_shape(in_shape, where):
    in_shape = tuple(in_shape)
    if len(in_shape) != 4:
        raise ValueError(
            f"{where}: input must have shape (N, H, W, C); got in_shape {in_shape}. Images "
            f"are batched NHWC, e.g. (-1, 28, 28, 1); Flatten() comes after spatial layers."
        )
    return in_shape


def _check_shape(in_shape, where):
    if not isinstance(in_shape, (tuple, list)) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in in_shape
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
    return tuple(in_shape)


def _check_layer(layer, where, what):
    if not isinstance(layer, Layer):
        fix = (
            f"call it: {layer.__name__}()" if callable(layer) and hasattr(layer, "__name__")
            else "build one with Conv(...), Dense(...), serial(...)"
        )
        raise TypeError(f"{where}: {what} must be a Layer; got {layer!r}. {fix}.")
