"""Convolution and pooling straight from their definitions, in NumPy loops: the test oracles.

Introduced in chapter 01, notebooks/01-convolution.ipynb (pooling: chapter 02,
notebooks/02-pooling.ipynb). Written to be read, not to be fast; the book shows them with
`inspect.getsource`, and tests/ checks `cnnlib.conv2d` and the pooling ops against them.
Every function takes NumPy-convertible arrays in the layouts cnnlib uses (NHWC, HWIO) and
returns float64 NumPy arrays. Padding is zeros (-inf for `max_pool`): an int, (ph, pw),
((top, bottom), (left, right)), or "VALID", "SAME", "FULL" as in `cnnlib.conv2d` ("CIRCULAR"
is not zero padding: apply np.pad(x, ..., mode="wrap") first).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnlib._validate import (
    check_float_dtype,
    check_hwio,
    check_nhwc,
    check_positive_int,
    padding_pairs,
    positive_pair,
)

# Padding strings that mean zeros; "CIRCULAR" (wrap-around) is left to cnnlib.conv2d.
ZERO_PADDING_MODES = ("VALID", "SAME", "FULL")


def cross_correlate2d(x: Any, w: Any) -> np.ndarray:
    """Slide `w` over `x` without flipping it: what deep learning calls "convolution".

    ``y[i, j] = sum_u sum_v x[i + u, j + v] * w[u, v]``, for every (i, j) where `w` fits.

    Args:
        x: one single-channel image, shape (H, W).
        w: kernel, shape (kh, kw), no larger than `x`.

    Returns:
        Array of shape (H - kh + 1, W - kw + 1).

    Raises:
        TypeError: an argument is not a floating array.
        ValueError: an argument is not 2-D, or `w` is larger than `x`.

    Example:
        >>> cross_correlate2d(np.eye(3), np.array([[1.0, 0.0], [0.0, 1.0]]))
        array([[2., 0.],
               [0., 2.]])

    Introduced in chapter 01, notebooks/01-convolution.ipynb.
    """
    x, w = _check_2d(x, w, "reference.cross_correlate2d")
    kh, kw = w.shape
    y = np.zeros((x.shape[0] - kh + 1, x.shape[1] - kw + 1))
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            for u in range(kh):
                for v in range(kw):
                    y[i, j] += x[i + u, j + v] * w[u, v]
    return y


def convolve2d(x: Any, w: Any) -> np.ndarray:
    """True (mathematical) convolution, "valid" part: the kernel is flipped.

    ``(x * w)[m, n] = sum_u sum_v x[m - u, n - v] * w[u, v]``; output (i, j) is the full
    convolution at m = i + kh - 1, n = j + kw - 1, the positions where `w` fits inside `x`.
    Equals `cross_correlate2d(x, w[::-1, ::-1])`.

    Args:
        x: one single-channel image, shape (H, W).
        w: kernel, shape (kh, kw), no larger than `x`.

    Returns:
        Array of shape (H - kh + 1, W - kw + 1).

    Raises:
        TypeError: an argument is not a floating array.
        ValueError: an argument is not 2-D, or `w` is larger than `x`.

    Example:
        >>> convolve2d(np.array([[0.0, 1.0, 2.0]]), np.array([[1.0, -1.0]]))  # a difference
        array([[1., 1.]])

    Introduced in chapter 01, notebooks/01-convolution.ipynb.
    """
    x, w = _check_2d(x, w, "reference.convolve2d")
    kh, kw = w.shape
    y = np.zeros((x.shape[0] - kh + 1, x.shape[1] - kw + 1))
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            m, n = i + kh - 1, j + kw - 1
            for u in range(kh):
                for v in range(kw):
                    y[i, j] += x[m - u, n - v] * w[u, v]
    return y


def conv2d(
    x: Any,
    w: Any,
    b: Any = None,
    *,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
) -> np.ndarray:
    """`cnnlib.conv2d` as loops: each output pixel is one window dotted with one kernel.

    ``y[n, i, j, o] = b[o] + sum_{u, v, c} xp[n, i*sh + u*dh, j*sw + v*dw, g*Cg + c]
    * w[u, v, c, o]`` with `xp` the zero-padded input, ``Cg = in_channels // groups`` and
    ``g = o // (out_channels // groups)`` the group of output channel `o`.

    Args:
        x: array of shape (N, H, W, in_channels).
        w: kernel of shape (kh, kw, in_channels // groups, out_channels).
        b: optional bias of shape (out_channels,).
        stride: int or (sh, sw).
        padding: int, (ph, pw), ((top, bottom), (left, right)), "VALID", "SAME" or "FULL".
        dilation: int or (dh, dw).
        groups: number of channel groups; divides in_channels and out_channels.

    Returns:
        Array of shape (N, H_out, W_out, out_channels), float64.

    Raises:
        TypeError: an array is not floating, or an argument has the wrong type.
        ValueError: a shape or value does not fit, as in `cnnlib.conv2d`.

    Example:
        >>> conv2d(np.ones((1, 4, 4, 2)), np.ones((3, 3, 2, 5)), padding=1).shape
        (1, 4, 4, 5)

    Introduced in chapter 01, notebooks/01-convolution.ipynb.
    """
    where = "reference.conv2d"
    x, w, stride, pads, dilation = _check_conv(x, w, stride, padding, dilation, groups, where)
    xp = np.pad(x, ((0, 0), *pads, (0, 0)))  # zeros around H and W
    kh, kw, c_group, out_channels = w.shape
    o_group = out_channels // groups
    oh = (xp.shape[1] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (xp.shape[2] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    y = np.zeros((x.shape[0], oh, ow, out_channels))
    for i in range(oh):
        for j in range(ow):
            for o in range(out_channels):
                g = o // o_group  # the group this output channel reads from
                for u in range(kh):
                    for v in range(kw):
                        row, col = i * stride[0] + u * dilation[0], j * stride[1] + v * dilation[1]
                        pixel = xp[:, row, col, g * c_group : (g + 1) * c_group]  # (N, Cg)
                        y[:, i, j, o] += pixel @ w[u, v, :, o]
    if b is not None:
        y += _check_bias(b, out_channels, where)
    return y


def max_pool(x: Any, window: Any, stride: Any = None, padding: Any = 0) -> np.ndarray:
    """Largest value in each window, per channel; padding is -inf, so it never wins.

    Args:
        x: array of shape (N, H, W, C).
        window: int or (kh, kw).
        stride: int or (sh, sw); defaults to `window`.
        padding: int, (ph, pw), ((top, bottom), (left, right)), "VALID" or "SAME".

    Returns:
        Array of shape (N, H_out, W_out, C), float64.

    Raises:
        TypeError, ValueError: as in `cnnlib.max_pool`.

    Example:
        >>> max_pool(np.arange(16.0).reshape(1, 4, 4, 1), 2)[0, :, :, 0]
        array([[ 5.,  7.],
               [13., 15.]])

    Introduced in chapter 02, notebooks/02-pooling.ipynb.
    """
    x, window, stride, pads = _check_pool(x, window, stride, padding, "reference.max_pool")
    xp = np.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-np.inf)
    return _pool(xp, window, stride, lambda win: win.max(axis=(1, 2)))


def avg_pool(
    x: Any, window: Any, stride: Any = None, padding: Any = 0, count_include_pad: bool = True
) -> np.ndarray:
    """Mean of each window, per channel; padding is zeros.

    With ``count_include_pad=True`` every window is divided by kh * kw; with False, by the
    number of real (unpadded) pixels in it.

    Args:
        x: array of shape (N, H, W, C).
        window: int or (kh, kw).
        stride: int or (sh, sw); defaults to `window`.
        padding: int, (ph, pw), ((top, bottom), (left, right)), "VALID" or "SAME".
        count_include_pad: whether padded zeros count in the denominator.

    Returns:
        Array of shape (N, H_out, W_out, C), float64.

    Raises:
        TypeError, ValueError: as in `cnnlib.avg_pool`.

    Example:
        >>> avg_pool(np.ones((1, 2, 2, 1)), 2, padding=((0, 1), (0, 0)), stride=1)[0, :, :, 0]
        array([[1. ],
               [0.5]])

    Introduced in chapter 02, notebooks/02-pooling.ipynb.
    """
    x, window, stride, pads = _check_pool(x, window, stride, padding, "reference.avg_pool")
    xp = np.pad(x, ((0, 0), *pads, (0, 0)))
    sums = _pool(xp, window, stride, lambda win: win.sum(axis=(1, 2)))
    if count_include_pad:
        return sums / (window[0] * window[1])
    real = np.pad(np.ones(x.shape[1:3]), pads)[None, :, :, None]  # 1 where x is, 0 in padding
    return sums / _pool(real, window, stride, lambda win: win.sum(axis=(1, 2)))


def patches(
    x: Any, kernel_size: Any, *, stride: Any = 1, padding: Any = 0, dilation: Any = 1
) -> np.ndarray:
    """Every window a kernel of `kernel_size` sees, cut out: the input to im2col.

    Args:
        x: array of shape (N, H, W, C).
        kernel_size: int or (kh, kw).
        stride: int or (sh, sw).
        padding: int, (ph, pw), ((top, bottom), (left, right)), "VALID", "SAME" or "FULL".
        dilation: int or (dh, dw).

    Returns:
        Array of shape (N, H_out, W_out, kh, kw, C), float64, with
        ``out[n, i, j, u, v] = xp[n, i*sh + u*dh, j*sw + v*dw]``.

    Raises:
        TypeError, ValueError: as in `conv2d`.

    Example:
        >>> patches(np.ones((2, 5, 5, 3)), 3).shape
        (2, 3, 3, 3, 3, 3)

    Introduced in chapter 01, notebooks/01-convolution.ipynb.
    """
    where = "reference.patches"
    kh, kw = positive_pair(kernel_size, "kernel_size", where)
    x = _as_nhwc(x, where)
    fake_w = np.zeros((kh, kw, x.shape[3], 1))  # only its shape is checked
    x, _, stride, pads, dilation = _check_conv(x, fake_w, stride, padding, dilation, 1, where)
    xp = np.pad(x, ((0, 0), *pads, (0, 0)))
    oh = (xp.shape[1] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (xp.shape[2] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((x.shape[0], oh, ow, kh, kw, x.shape[3]))
    for i in range(oh):
        for j in range(ow):
            for u in range(kh):
                for v in range(kw):
                    out[:, i, j, u, v] = xp[:, i * stride[0] + u * dilation[0],
                                            j * stride[1] + v * dilation[1]]
    return out


def im2col(
    x: Any, kernel_size: Any, *, stride: Any = 1, padding: Any = 0, dilation: Any = 1
) -> np.ndarray:
    """The patch matrix: one row per output pixel, one column per (u, v, c) kernel tap.

    Args:
        x: array of shape (N, H, W, C).
        kernel_size, stride, padding, dilation: as in `patches`.

    Returns:
        Array of shape (N * H_out * W_out, kh * kw * C), float64; rows in (n, i, j) order,
        columns in (u, v, c) order, matching ``w.reshape(kh * kw * C, out_channels)``.

    Raises:
        TypeError, ValueError: as in `patches`.

    Example:
        >>> im2col(np.ones((2, 5, 5, 3)), 3).shape
        (18, 27)

    Introduced in chapter 01, notebooks/01-convolution.ipynb.
    """
    p = patches(x, kernel_size, stride=stride, padding=padding, dilation=dilation)
    n, oh, ow, kh, kw, c = p.shape
    return p.reshape(n * oh * ow, kh * kw * c)


def conv2d_im2col(
    x: Any, w: Any, b: Any = None, *, stride: Any = 1, padding: Any = 0, dilation: Any = 1
) -> np.ndarray:
    """Convolution as one matrix product: ``im2col(x) @ w.reshape(kh * kw * C, out_channels)``.

    This is how most libraries run convolutions on matrix-multiply hardware (groups=1 only).

    Args:
        x: array of shape (N, H, W, in_channels).
        w: kernel of shape (kh, kw, in_channels, out_channels).
        b: optional bias of shape (out_channels,).
        stride, padding, dilation: as in `conv2d`.

    Returns:
        Array of shape (N, H_out, W_out, out_channels), float64, equal to `conv2d`.

    Raises:
        TypeError, ValueError: as in `conv2d`.

    Example:
        >>> conv2d_im2col(np.ones((1, 4, 4, 2)), np.ones((3, 3, 2, 5))).shape
        (1, 2, 2, 5)

    Introduced in chapter 01, notebooks/01-convolution.ipynb.
    """
    where = "reference.conv2d_im2col"
    x, w, *_ = _check_conv(x, w, stride, padding, dilation, 1, where)
    kh, kw, in_channels, out_channels = w.shape
    p = patches(x, (kh, kw), stride=stride, padding=padding, dilation=dilation)
    n, oh, ow = p.shape[:3]
    cols = p.reshape(n * oh * ow, kh * kw * in_channels)  # (N * H_out * W_out, kh * kw * C)
    y = cols @ w.reshape(kh * kw * in_channels, out_channels)  # (N * H_out * W_out, C_out)
    y = y.reshape(n, oh, ow, out_channels)
    if b is not None:
        y += _check_bias(b, out_channels, where)
    return y


def conv2d_fft(x: Any, w: Any, b: Any = None, *, padding: Any = 0) -> np.ndarray:
    """Convolution by the convolution theorem: multiply spectra, transform back (stride 1).

    Cross-correlation with `w` is convolution with `w` flipped. The spectra are taken at the
    full linear-convolution size (padded H + kh - 1, W + kw - 1), so the FFT's wrap-around
    never folds values back; the valid part is then cut out.

    Args:
        x: array of shape (N, H, W, in_channels).
        w: kernel of shape (kh, kw, in_channels, out_channels).
        b: optional bias of shape (out_channels,).
        padding: int, (ph, pw), ((top, bottom), (left, right)), "VALID", "SAME" or "FULL".

    Returns:
        Array of shape (N, H_out, W_out, out_channels), float64, equal to `conv2d` up to
        rounding (about 1e-12 relative).

    Raises:
        TypeError, ValueError: as in `conv2d`.

    Example:
        >>> conv2d_fft(np.ones((1, 4, 4, 2)), np.ones((3, 3, 2, 5))).shape
        (1, 2, 2, 5)

    Introduced in chapter 01, notebooks/01-convolution.ipynb.
    """
    where = "reference.conv2d_fft"
    x, w, _, pads, _ = _check_conv(x, w, 1, padding, 1, 1, where)
    xp = np.pad(x, ((0, 0), *pads, (0, 0)))  # (N, Hp, Wp, C)
    kh, kw, _, out_channels = w.shape
    size = (xp.shape[1] + kh - 1, xp.shape[2] + kw - 1)  # full linear convolution
    x_hat = np.fft.rfft2(xp, s=size, axes=(1, 2))  # (N, fh, fw, C)
    w_hat = np.fft.rfft2(w[::-1, ::-1], s=size, axes=(0, 1))  # (fh, fw, C, C_out)
    y_hat = np.einsum("nhwc,hwco->nhwo", x_hat, w_hat)  # sum over input channels
    full = np.fft.irfft2(y_hat, s=size, axes=(1, 2))  # (N, Hp + kh - 1, Wp + kw - 1, C_out)
    y = full[:, kh - 1 : xp.shape[1], kw - 1 : xp.shape[2]]  # where w fits inside xp
    if b is not None:
        y = y + _check_bias(b, out_channels, where)
    return y


def conv_as_matrix(
    w: Any, in_shape: Any, *, stride: Any = 1, padding: Any = 0, dilation: Any = 1
) -> np.ndarray:
    """The dense matrix of a convolution layer: sparse, with the kernel's weights repeated.

    For one image `x` of shape `in_shape` = (H, W, in_channels),
    ``conv_as_matrix(w, x.shape) @ x.ravel() == conv2d(x[None], w, ...)[0].ravel()``, with
    both sides ravelled in NumPy's C order: input index ``(r * W + s) * in_channels + c``,
    output index ``(i * W_out + j) * out_channels + o``. Row (i, j, o) holds w[u, v, c, o] at
    the columns of the pixels window (i, j) covers, and zeros elsewhere (padding contributes
    nothing, so it simply has no column).

    Args:
        w: kernel of shape (kh, kw, in_channels, out_channels).
        in_shape: (H, W, in_channels) of one image.
        stride, padding, dilation: as in `conv2d`.

    Returns:
        Array of shape (H_out * W_out * out_channels, H * W * in_channels), float64.

    Raises:
        TypeError, ValueError: as in `conv2d`; also when `in_shape` is not 3 positive ints.

    Example:
        >>> conv_as_matrix(np.ones((3, 3, 1, 1)), (4, 4, 1)).shape
        (4, 16)

    Introduced in chapter 01, notebooks/01-convolution.ipynb.
    """
    where = "reference.conv_as_matrix"
    if not (isinstance(in_shape, (tuple, list)) and len(in_shape) == 3):
        raise ValueError(
            f"{where}: `in_shape` must be (H, W, in_channels) of one image; got {in_shape!r}. "
            f"Pass x.shape[1:] for an NHWC batch x."
        )
    h, w_, c = (check_positive_int(n, "in_shape", where) for n in in_shape)
    x = np.zeros((1, h, w_, c))  # only its shape is checked
    _, w, stride, pads, dilation = _check_conv(x, w, stride, padding, dilation, 1, where)
    kh, kw, _, out_channels = w.shape
    oh = (h + sum(pads[0]) - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w_ + sum(pads[1]) - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    m = np.zeros((oh * ow * out_channels, h * w_ * c))
    for i in range(oh):
        for j in range(ow):
            for u in range(kh):
                for v in range(kw):
                    # The input pixel tap (u, v) of window (i, j) reads, unpadded coordinates.
                    r = i * stride[0] + u * dilation[0] - pads[0][0]
                    s = j * stride[1] + v * dilation[1] - pads[1][0]
                    if not (0 <= r < h and 0 <= s < w_):
                        continue  # a padded zero
                    for o in range(out_channels):
                        row = (i * ow + j) * out_channels + o
                        cols = (r * w_ + s) * c + np.arange(c)
                        m[row, cols] += w[u, v, :, o]
    return m


def _pool(xp, window, stride, reduce):
    """Apply `reduce` to every (N, kh, kw, C) window of the padded input xp."""
    kh, kw = window
    oh = (xp.shape[1] - kh) // stride[0] + 1
    ow = (xp.shape[2] - kw) // stride[1] + 1
    y = np.zeros((xp.shape[0], oh, ow, xp.shape[3]))
    for i in range(oh):
        for j in range(ow):
            r, s = i * stride[0], j * stride[1]
            y[:, i, j] = reduce(xp[:, r : r + kh, s : s + kw])
    return y


def _check_2d(x, w, where):
    for name, a in (("x", x), ("w", w)):
        if getattr(a, "ndim", None) != 2:
            raise ValueError(
                f"{where}: `{name}` must be a 2-D array (one channel of one image); got shape "
                f"{getattr(a, 'shape', type(a).__name__)}. Take one with x[0, :, :, 0]."
            )
        check_float_dtype(a, where, name)
    if w.shape[0] > x.shape[0] or w.shape[1] > x.shape[1]:
        raise ValueError(
            f"{where}: `w` must be no larger than `x` {x.shape}; got {w.shape}. Pad x first."
        )
    return np.asarray(x, np.float64), np.asarray(w, np.float64)


def _as_nhwc(x, where):
    check_nhwc(x, where)
    return np.asarray(x, np.float64)


def _check_conv(x, w, stride, padding, dilation, groups, where):
    """The checks of cnnlib.conv2d, for zero padding only."""
    x = _as_nhwc(x, where)
    groups = check_positive_int(groups, "groups", where)
    check_hwio(w, x.shape[3], groups, where)
    stride = positive_pair(stride, "stride", where)
    dilation = positive_pair(dilation, "dilation", where)
    extent = tuple(d * (k - 1) + 1 for k, d in zip(w.shape[:2], dilation))
    pads = padding_pairs(padding, x.shape[1:3], extent, stride, where, ZERO_PADDING_MODES)
    for n, k, (p0, p1) in zip(x.shape[1:3], extent, pads):
        if k > n + p0 + p1:
            raise ValueError(
                f"{where}: `w` must fit in the padded input; got kernel extent {extent} for "
                f"input {x.shape[1:3]} with padding {pads}. Pad more or use a smaller kernel."
            )
    return x, np.asarray(w, np.float64), stride, pads, dilation


def _check_pool(x, window, stride, padding, where):
    x = _as_nhwc(x, where)
    window = positive_pair(window, "window", where)
    stride = window if stride is None else positive_pair(stride, "stride", where)
    pads = padding_pairs(padding, x.shape[1:3], window, stride, where, ("VALID", "SAME"))
    for n, k, (p0, p1) in zip(x.shape[1:3], window, pads):
        if max(p0, p1) >= k or k > n + p0 + p1:
            raise ValueError(
                f"{where}: `padding` must be smaller than `window` {window} and the window "
                f"must fit in the padded input; got padding {pads} for input {x.shape[1:3]}. "
                f"Use less padding or a smaller window."
            )
    return x, window, stride, pads


def _check_bias(b, out_channels, where):
    if getattr(b, "shape", None) is None or tuple(b.shape) != (out_channels,):
        raise ValueError(
            f"{where}: `b` must have shape (out_channels,) = ({out_channels},); got "
            f"{getattr(b, 'shape', type(b).__name__)}. Use one bias per output channel."
        )
    check_float_dtype(b, where, "b")
    return np.asarray(b, np.float64)
