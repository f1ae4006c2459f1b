"""Pooling on NHWC batches: max, average, global, and anti-aliased (blur) downsampling.

Introduced in chapter 02, notebooks/02-pooling.ipynb; `blur_pool` returns in chapter 04. Each
window is reduced per channel with `jax.lax.reduce_window`. Non-overlapping windows that tile
the input exactly (window == stride, no padding) take a reshape path whose values and gradients
equal the reduce_window path's (tested without ties; ties follow `max_pool`'s rule) and whose
gradient is several times faster on CPU (benchmarks/README.md, "Operations").
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnnlib._validate import check_nhwc, check_positive_int, padding_pairs, positive_pair

# Pooling pads with the reduction's identity, so FULL and CIRCULAR have no use here.
POOL_PADDING_MODES = ("VALID", "SAME")


def max_pool(x: Any, window: Any, stride: Any = None, padding: Any = "VALID") -> jax.Array:
    """Largest value in each window, per channel.

    Padding is filled with -inf, so a padded position never wins: the output is the max over
    the real pixels of the window (every window contains at least one, see Raises).

    Ties: where several pixels of a window share its maximum, the gradient (`jax.grad`,
    `jax.vjp`) of that window's output goes whole to the first of them in row-major window
    order (top row first, left to right), as `np.argmax` picks it; overlapping windows add
    their contributions. On windows that tile `x`, and on small windows with stride 1 and no
    padding, the forward-mode derivative (`jax.jvp`) takes its tangent from the same pixel; on
    the other windows it is whatever `lax.reduce_window` gives, which JAX does not fix (0.10.2
    can take a later maximum where there is padding). Tested against a NumPy loop on the pinned and the lowest supported JAX.

    Args:
        x: floating array of shape (N, H, W, C).
        window: int or (kh, kw), >= 1.
        stride: int or (sh, sw), >= 1; defaults to `window` (non-overlapping windows).
        padding: "VALID", "SAME" (output ceil(H / sh) x ceil(W / sw)), an int, (ph, pw) or
            ((top, bottom), (left, right)); every amount must be smaller than the window.

    Returns:
        Array of shape (N, H_out, W_out, C), the dtype of `x`, with
        ``H_out = conv_output_size(H, kh, sh, padding_h)`` (likewise W_out).

    Raises:
        TypeError: `x` is not a floating array, or an argument has the wrong type.
        ValueError: `x` is not 4-D, an argument is out of range, the window is larger than
            the padded input, or a padding amount is >= the window (a window of padding only).

    Example:
        >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
        >>> max_pool(x, 2)[0, :, :, 0]
        Array([[ 5.,  7.],
               [13., 15.]], dtype=float32)

    Introduced in chapter 02, notebooks/02-pooling.ipynb.
    """
    window, stride, pads = _pool_args(x, window, stride, padding, "max_pool")
    if _tiles(x, window, stride, pads):
        return _max_blocks(x, window)
    if stride == (1, 1) and pads == ((0, 0), (0, 0)) and math.prod(window) <= 9:
        return _max_shifted(x, window)
    return lax.reduce_window(
        x, -jnp.inf, lax.max, (1, *window, 1), (1, *stride, 1), ((0, 0), *pads, (0, 0))
    )


def avg_pool(
    x: Any,
    window: Any,
    stride: Any = None,
    padding: Any = "VALID",
    count_include_pad: bool = True,
) -> jax.Array:
    """Mean of each window, per channel.

    Padding is filled with zeros. With ``count_include_pad=True`` (PyTorch's default) every
    window is divided by kh * kw, so the zeros pull border outputs towards 0; with False it is
    divided by the number of real pixels it covers, so a constant image stays constant.

    Args:
        x: floating array of shape (N, H, W, C).
        window: int or (kh, kw), >= 1.
        stride: int or (sh, sw), >= 1; defaults to `window`.
        padding: as in `max_pool`.
        count_include_pad: whether padded zeros count in the denominator.

    Returns:
        Array of shape (N, H_out, W_out, C), the dtype of `x`, sizes as in `max_pool`.

    Raises:
        TypeError: `x` is not a floating array, or an argument has the wrong type.
        ValueError: as in `max_pool`.

    Example:
        >>> x = jnp.ones((1, 3, 3, 1))
        >>> avg_pool(x, 2, stride=1, padding=((0, 1), (0, 1)))[0, :, :, 0]
        Array([[1.  , 1.  , 0.5 ],
               [1.  , 1.  , 0.5 ],
               [0.5 , 0.5 , 0.25]], dtype=float32)

    Introduced in chapter 02, notebooks/02-pooling.ipynb.
    """
    window, stride, pads = _pool_args(x, window, stride, padding, "avg_pool")
    if not isinstance(count_include_pad, bool):
        raise TypeError(
            f"avg_pool: `count_include_pad` must be True or False; got {count_include_pad!r}."
        )
    if _tiles(x, window, stride, pads):
        n, h, w, c = x.shape
        blocks = x.reshape(n, h // window[0], window[0], w // window[1], window[1], c)
        return blocks.sum(axis=(2, 4)) / math.prod(window)

    def window_sum(v):
        return lax.reduce_window(
            v, 0.0, lax.add, (1, *window, 1), (1, *stride, 1), ((0, 0), *pads, (0, 0))
        )

    total = window_sum(x)  # (N, H_out, W_out, C)
    if count_include_pad:
        return total / math.prod(window)
    counts = window_sum(jnp.ones((1, *x.shape[1:3], 1), x.dtype))  # (1, H_out, W_out, 1)
    return total / counts


def global_avg_pool(x: Any) -> jax.Array:
    """Mean over all positions: one number per image and channel.

    Args:
        x: floating array of shape (N, H, W, C).

    Returns:
        Array of shape (N, C), the dtype of `x`.

    Raises:
        TypeError: `x` is not a floating array.
        ValueError: `x` is not 4-D or has an empty axis.

    Example:
        >>> global_avg_pool(jnp.ones((2, 7, 7, 64))).shape
        (2, 64)

    Introduced in chapter 02, notebooks/02-pooling.ipynb.
    """
    check_nhwc(x, "global_avg_pool")
    return jnp.mean(x, axis=(1, 2))


def global_max_pool(x: Any) -> jax.Array:
    """Largest value over all positions: one number per image and channel.

    Args:
        x: floating array of shape (N, H, W, C).

    Returns:
        Array of shape (N, C), the dtype of `x`.

    Raises:
        TypeError: `x` is not a floating array.
        ValueError: `x` is not 4-D or has an empty axis.

    Example:
        >>> global_max_pool(jnp.arange(8.0).reshape(1, 2, 2, 2))
        Array([[6., 7.]], dtype=float32)

    Introduced in chapter 02, notebooks/02-pooling.ipynb.
    """
    check_nhwc(x, "global_max_pool")
    return jnp.max(x, axis=(1, 2))


def binomial_filter(size: int) -> jax.Array:
    """The normalised 2-D binomial low-pass filter of Zhang (2019), shape (size, size).

    Row `size - 1` of Pascal's triangle, outer product with itself, divided by its sum:
    size 3 is [1, 2, 1] x [1, 2, 1] / 16.

    Args:
        size: 1 to 7.

    Returns:
        Array of shape (size, size), float32, summing to 1.

    Raises:
        TypeError: `size` is not an int.
        ValueError: `size` is outside 1..7.

    Example:
        >>> binomial_filter(3) * 16
        Array([[1., 2., 1.],
               [2., 4., 2.],
               [1., 2., 1.]], dtype=float32)

    Introduced in chapter 02, notebooks/02-pooling.ipynb; used again in chapter 04.
    """
    row = _binomial_row(_check_blur_size(size, "binomial_filter"))
    return jnp.asarray(np.outer(row, row), jnp.float32)


def blur_pool(x: Any, *, stride: Any = 2, size: int = 3) -> jax.Array:
    """Anti-aliased downsampling (Zhang, 2019, "Making Convolutional Networks Shift-Invariant
    Again"): low-pass filter each channel, then keep every `stride`-th pixel.

    The filter is `binomial_filter(size)`, applied depthwise (the same filter on every channel)
    after reflect padding of ``(size - 1) // 2`` before and ``size // 2`` after on each spatial
    axis, as in the paper's code, so the filtered image keeps its size before subsampling.
    Blurring first removes the frequencies that plain striding would alias.

    Args:
        x: floating array of shape (N, H, W, C).
        stride: int or (sh, sw), >= 1 (keyword-only).
        size: filter size, 1 to 7 (1 is plain subsampling) (keyword-only).

    Returns:
        Array of shape (N, ceil(H / sh), ceil(W / sw), C), the dtype of `x`.

    Raises:
        TypeError: `x` is not a floating array, or an argument has the wrong type.
        ValueError: `x` is not 4-D, `stride` < 1, or `size` outside 1..7.

    Example:
        >>> blur_pool(jnp.ones((1, 8, 8, 3))).shape
        (1, 4, 4, 3)

    Introduced in chapter 02, notebooks/02-pooling.ipynb; used again in chapter 04.
    """
    where = "blur_pool"
    check_nhwc(x, where)
    stride = positive_pair(stride, "stride", where)
    size = _check_blur_size(size, where)
    pad = ((size - 1) // 2, size // 2)
    x = jnp.pad(x, ((0, 0), pad, pad, (0, 0)), mode="reflect")  # (N, H + size - 1, ...)
    # The filter is an outer product, row x row, so filtering rows then columns equals the 2-D
    # depthwise convolution, and on CPU it is ~10x faster than lax's grouped convolution.
    row = _binomial_row(size).astype(x.dtype)  # (size,), sums to 1
    (sh, sw), (hp, wp) = stride, x.shape[1:3]
    ho, wo = -(-(hp - size + 1) // sh), -(-(wp - size + 1) // sw)  # ceil(H / sh), ceil(W / sw)
    x = sum(row[a] * x[:, a : a + sh * (ho - 1) + 1 : sh] for a in range(size))  # (N, Ho, Wp, C)
    return sum(row[b] * x[:, :, b : b + sw * (wo - 1) + 1 : sw] for b in range(size))


def _pool_args(x, window, stride, padding, where):
    """Check and normalise (window, stride, padding) to pairs and ((t, b), (l, r))."""
    check_nhwc(x, where)
    window = positive_pair(window, "window", where)
    stride = window if stride is None else positive_pair(stride, "stride", where)
    in_hw = (x.shape[1], x.shape[2])
    pads = padding_pairs(padding, in_hw, window, stride, where, POOL_PADDING_MODES)
    for k, pair in zip(window, pads):
        if max(pair) >= k:
            raise ValueError(
                f"{where}: `padding` must be smaller than `window` {window} on every side, or "
                f"some window would hold padding only; got {padding!r} -> {pads}. Use "
                f"padding=\"SAME\" or less padding."
            )
    for n, k, (p0, p1) in zip(in_hw, window, pads):
        if k > n + p0 + p1:
            raise ValueError(
                f"{where}: `window` must fit in the padded input (H, W) = {in_hw} plus "
                f"padding {pads}; got window={window}. Use a smaller window or padding=\"SAME\"."
            )
    return window, stride, pads


def _check_blur_size(size, where):
    size = check_positive_int(size, "size", where)
    if size > 7:
        raise ValueError(f"{where}: `size` must be between 1 and 7; got {size}. Use size=3.")
    return size


def _binomial_row(size: int) -> np.ndarray:
    """Row `size - 1` of Pascal's triangle divided by its sum 2**(size - 1), float64."""
    return np.array([math.comb(size - 1, k) for k in range(size)]) / 2 ** (size - 1)


def _tiles(x, window, stride, pads) -> bool:
    """True when the windows tile x exactly: window == stride, no padding, H and W divisible."""
    return (
        window == stride
        and pads == ((0, 0), (0, 0))
        and x.shape[1] % window[0] == 0
        and x.shape[2] % window[1] == 0
    )


def _max_shifted(x, window):
    """max_pool with stride 1, no padding and at most 9 taps: a running max over the shifted
    views, in row-major window order. `where(view > best, ...)` keeps the earlier pixel at a
    tie, so derivatives follow the first maximum; on CPU the gradient is several times faster
    than reduce_window's select-and-scatter (benchmarks/README.md, "Operations")."""
    (kh, kw), (h, w) = window, x.shape[1:3]
    best = x[:, : h - kh + 1, : w - kw + 1]  # tap (0, 0) of every window
    for u in range(kh):
        for v in range(kw):
            if u or v:
                view = x[:, u : u + h - kh + 1, v : v + w - kw + 1]  # tap (u, v)
                best = jnp.where(view > best, view, best)
    return best


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _max_blocks(x, window):
    """max_pool for windows that tile x: reshape to (N, H/kh, kh, W/kw, kw, C), reduce."""
    n, h, w, c = x.shape
    return x.reshape(n, h // window[0], window[0], w // window[1], window[1], c).max(axis=(2, 4))


@_max_blocks.defjvp
def _max_blocks_jvp(window, primals, tangents):
    # The tie rule of max_pool's docstring: each window's tangent comes from its first maximum
    # (row-major); jnp.max's derivative would split it between ties. argmax returns the first.
    (x,), (dx,) = primals, tangents
    n, h, w, c = x.shape
    kh, kw = window

    def taps_last(v):  # (N, H/kh, W/kw, C, kh * kw), taps in row-major window order
        v = v.reshape(n, h // kh, kh, w // kw, kw, c).transpose(0, 1, 3, 5, 2, 4)
        return v.reshape(*v.shape[:4], kh * kw)

    first = jax.nn.one_hot(jnp.argmax(taps_last(x), axis=-1), kh * kw, dtype=x.dtype)
    return _max_blocks(x, window), jnp.sum(taps_last(dx) * first, axis=-1)
