"""Layers that shrink or reshape the spatial grid, without parameters: pooling, Flatten.

Introduced in chapter 03, notebooks/03-locality.ipynb (the operations in chapter 02).
"""

from __future__ import annotations

import math
from typing import Any

from cnnlib._validate import check_positive_int, padding_pairs, positive_pair
from cnnlib.conv import conv_output_size
from cnnlib.layers.base import Layer, as_input, as_nhwc, check_image_shape, check_single_shape
from cnnlib.layers.combinators import chain
from cnnlib.pool import avg_pool, blur_pool, global_avg_pool, global_max_pool, max_pool


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
        n, h, w, c = check_image_shape(check_single_shape(in_shape, where), where)
        return (n, -(-h // stride[0]), -(-w // stride[1]), c), {}

    def apply(params, x, **kw):
        return blur_pool(as_nhwc(x, where), stride=stride, size=size)

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
    return chain((MaxPool(window, stride=1), BlurPool(stride, size)), "max_blur_pool",
                 "MaxBlurPool")


def GlobalAvgPool() -> Layer:
    """Mean over all positions (`cnnlib.global_avg_pool`): (N, H, W, C) -> (N, C).

    Example:
        >>> init_params(GlobalAvgPool(), jax.random.key(0), (-1, 7, 7, 32))[0]
        (-1, 32)

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """
    return _global(global_avg_pool, "GlobalAvgPool")


def GlobalMaxPool() -> Layer:
    """Maximum over all positions (`cnnlib.global_max_pool`): (N, H, W, C) -> (N, C).

    Whether a feature is present anywhere, not how much of the image it covers: the natural
    head for a detector of small objects in a large image.

    Example:
        >>> init_params(GlobalMaxPool(), jax.random.key(0), (-1, 7, 7, 32))[0]
        (-1, 32)

    Introduced in chapter 05, notebooks/05-hierarchy.ipynb.
    """
    return _global(global_max_pool, "GlobalMaxPool")


def _global(reduce, where) -> Layer:
    """A layer that reduces (N, H, W, C) to (N, C) with `reduce`, named after it."""

    def init(key, in_shape):
        n, h, w, c = check_image_shape(check_single_shape(in_shape, where), where)
        return (n, c), {}

    return Layer(init, lambda params, x, **kw: reduce(as_nhwc(x, where)), reduce.__name__, {})


def Flatten() -> Layer:
    """Flatten every axis after the batch axis: (N, H, W, C) -> (N, H * W * C).

    Example:
        >>> init_params(Flatten(), jax.random.key(0), (-1, 5, 5, 16))[0]
        (-1, 400)

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """

    def init(key, in_shape):
        in_shape = check_single_shape(in_shape, "Flatten")
        return (in_shape[0], math.prod(in_shape[1:])), {}

    def apply(params, x, **kw):
        x = as_input(x, "Flatten")
        return x.reshape(x.shape[0], -1)

    return Layer(init, apply, "flatten", {})


# --- Helpers (also used by the layers with weights) --------------------------------------------


def _pool(fn, where, name, window, stride, padding) -> Layer:
    window = positive_pair(window, "window", where)
    stride = window if stride is None else positive_pair(stride, "stride", where)
    padding = check_padding(padding, window, stride, where, ("VALID", "SAME"))

    def init(key, in_shape):
        n, h, w, c = check_image_shape(check_single_shape(in_shape, where), where)
        return (n, *spatial_out((h, w), window, stride, padding, (1, 1), where), c), {}

    def apply(params, x, **kw):
        return fn(as_nhwc(x, where), window, stride, padding)

    config = dict(kernel_size=window, stride=stride, padding=padding, dilation=(1, 1))
    return Layer(init, apply, name, config)


def check_padding(padding, kernel_size, stride, where, modes=None):
    """Validate the padding form now (sizes are unknown until init); strings upper-cased."""
    kwargs = {} if modes is None else {"modes": modes}
    pairs = padding_pairs(padding, kernel_size, kernel_size, stride, where, **kwargs)
    return padding.upper() if isinstance(padding, str) else pairs


def spatial_out(in_hw, kernel_size, stride, padding, dilation, where):
    """(H_out, W_out) by `conv_output_size`, per axis, with the padding resolved for this size."""
    extent = tuple(d * (k - 1) + 1 for k, d in zip(kernel_size, dilation))
    pads = padding_pairs(padding, in_hw, extent, stride, where)
    out = []
    for n, k, s, p, d in zip(in_hw, kernel_size, stride, pads, dilation):
        if d * (k - 1) + 1 > n + sum(p):
            raise ValueError(
                f"{where}: `kernel_size` {kernel_size} (dilation {dilation}) must fit in the "
                f"padded input (H, W) = {tuple(in_hw)} with padding {pads}. Use padding=\"SAME\", "
                f"a smaller kernel_size, or fewer downsampling layers before this one."
            )
        out.append(conv_output_size(n, k, s, p, d))
    return tuple(out)
