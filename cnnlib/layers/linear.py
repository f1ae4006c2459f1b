"""Layers with learned weights, each a linear map plus a bias: Conv, Dense, LocallyConnected.

Introduced in chapter 03, notebooks/03-locality.ipynb.

Initialisation: weights are drawn from N(0, gain / fan_in) with ``fan_in`` the number of inputs
one output sums over (kh * kw * in_channels / groups, or in_features); gain 2 is He et al.
(2015), right before a ReLU, gain 1 is LeCun (1998), for tanh or the last (linear) layer.
Biases start at zero. Every `apply` checks its params against its own configuration (kernel
size, channels, bias length) before computing, so params of another model fail with a message
naming the entry and both shapes.
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp

from cnnlib._validate import check_positive_int, padding_pairs, positive_pair
from cnnlib.conv import conv2d
from cnnlib.layers.base import (
    Layer,
    as_input,
    as_nhwc,
    check_bool,
    check_image_shape,
    check_init,
    check_param_tree,
    check_single_shape,
    normal,
)
from cnnlib.layers.pooling import check_padding, spatial_out


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
        use_bias: learn a bias per output channel (False before a BatchNorm, whose offset
            does the same job).
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
    padding = check_padding(padding, kernel_size, stride, where)
    use_bias = check_bool(use_bias, "use_bias", where)
    gain = check_init(w_init, where)
    if out_channels % groups:
        raise ValueError(
            f"{where}: `groups` must divide `out_channels`; got groups={groups}, "
            f"out_channels={out_channels}. Use an out_channels that is a multiple of groups."
        )

    def init(key, in_shape):
        n, h, w, c = check_image_shape(check_single_shape(in_shape, where), where)
        if c % groups:
            raise ValueError(
                f"{where}: `groups`={groups} must divide the input's channels {c} "
                f"(in_shape {in_shape}). Use a divisor of {c}, e.g. groups=1."
            )
        out_hw = spatial_out((h, w), kernel_size, stride, padding, dilation, where)
        w_shape = (*kernel_size, c // groups, out_channels)  # (kh, kw, C_in / groups, C_out)
        params = {"w": normal(key, w_shape, gain, math.prod(w_shape[:3]))}
        if use_bias:
            params["b"] = jnp.zeros((out_channels,), jnp.float32)
        return (n, *out_hw, out_channels), params

    def apply(params, x, **kw):
        x = as_nhwc(x, where)
        w_shape = (*kernel_size, x.shape[3] // groups, out_channels)  # (kh, kw, C_in / g, C_out)
        check_param_tree(params, _expected(w_shape, out_channels, use_bias), where,
                         f"an input of {x.shape[3]} channels")
        # conv2d is lax's convolution. Multiply-add and patch-matmul versions for in_channels=1
        # were measured slower inside a whole LeNet-5 train step (benchmarks/README.md).
        return conv2d(x, params["w"], params.get("b"), stride=stride, padding=padding,
                      dilation=dilation, groups=groups)

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
    use_bias = check_bool(use_bias, "use_bias", where)
    gain = check_init(w_init, where)

    def init(key, in_shape):
        in_shape = check_single_shape(in_shape, where)
        if len(in_shape) != 2:
            raise ValueError(
                f"{where}: input must have shape (N, features); got in_shape {tuple(in_shape)}. "
                f"Put Flatten() or GlobalAvgPool() before Dense."
            )
        n, features = in_shape
        params = {"w": normal(key, (features, out_features), gain, features)}
        if use_bias:
            params["b"] = jnp.zeros((out_features,), jnp.float32)
        return (n, out_features), params

    def apply(params, x, **kw):
        x = as_input(x, where)
        if x.ndim != 2:
            fix = "Put Flatten() before Dense" if x.ndim > 2 else "Add the batch axis with x[None]"
            raise ValueError(
                f"{where}: `x` must have shape (N, in_features); got {tuple(x.shape)}. {fix}."
            )
        check_param_tree(params, _expected((x.shape[1], out_features), out_features, use_bias),
                         where, f"an input of {x.shape[1]} features")
        y = x @ params["w"]  # (N, out_features)
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
        >>> layer = LocallyConnected(4, 5)
        >>> out_shape, params = init_params(layer, jax.random.key(0), (-1, 28, 28, 1))
        >>> out_shape, params["w"].shape
        ((-1, 24, 24, 4), (24, 24, 25, 4))

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """
    where = "LocallyConnected"
    out_channels = check_positive_int(out_channels, "out_channels", where)
    kernel_size = positive_pair(kernel_size, "kernel_size", where)
    stride = positive_pair(stride, "stride", where)
    padding = check_padding(padding, kernel_size, stride, where)
    gain = check_init(w_init, where)
    taps = kernel_size[0] * kernel_size[1]

    def init(key, in_shape):
        n, h, w, c = check_image_shape(check_single_shape(in_shape, where), where)
        out_hw = spatial_out((h, w), kernel_size, stride, padding, (1, 1), where)
        params = {
            "w": normal(key, (*out_hw, taps * c, out_channels), gain, taps * c),
            "b": jnp.zeros((*out_hw, out_channels), jnp.float32),
        }
        return (n, *out_hw, out_channels), params

    def apply(params, x, **kw):
        x = as_nhwc(x, where)
        out_hw = spatial_out(x.shape[1:3], kernel_size, stride, padding, (1, 1), where)
        check_param_tree(params, {"w": (*out_hw, taps * x.shape[3], out_channels),
                                  "b": (*out_hw, out_channels)}, where,
                         f"an input of shape {tuple(x.shape[1:])} (locally connected weights "
                         f"fix the image size)")
        patches = _patches(x, kernel_size, stride, padding, where)  # (N, H_out, W_out, kh*kw*C)
        return jnp.einsum("nijk,ijko->nijo", patches, params["w"]) + params["b"]

    config = dict(
        out_channels=out_channels, kernel_size=kernel_size, stride=stride, padding=padding,
        dilation=(1, 1), w_init=w_init,
    )
    return Layer(init, apply, "locally_connected", config)


def _expected(w_shape, out, use_bias):
    return {"w": w_shape, "b": (out,)} if use_bias else {"w": w_shape}


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
