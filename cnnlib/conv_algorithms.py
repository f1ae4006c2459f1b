"""Two other ways to compute `cnnlib.conv2d`, in JAX: im2col + one matrix product, and the FFT.

Introduced in chapter 08, notebooks/08-performance-and-scaling.ipynb. They compute the same
cross-correlation as `cnnlib.conv2d` (stride 1, no dilation, groups 1, zero padding) and run
under `jax.jit` like it, so the chapter can time the algorithms against each other with one
compiler. The NumPy versions in `cnnlib.reference` (`conv2d_im2col`, `conv2d_fft`) are the
readable definitions; tests/ checks these against the loops in `cnnlib.reference.conv2d`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from cnnlib._validate import check_hwio, check_nhwc, padding_pairs
from cnnlib.conv import _check_fits, _check_same_dtype

# Zero padding only: "CIRCULAR" wraps around, which neither algorithm here does.
PADDING_MODES = ("VALID", "SAME", "FULL")


def conv2d_im2col(x: Any, w: Any, *, padding: Any = "VALID") -> jax.Array:
    """Convolution as one matrix product: the patch matrix times the reshaped kernel.

    Every output pixel's window, ravelled in (a, b, c) order, becomes one row of the patch
    matrix (N * H_out * W_out, kh * kw * C); ``w.reshape(kh * kw * C, out_channels)`` has its
    taps in the same order, so one GEMM computes every output. The patch matrix repeats each
    input pixel up to kh * kw times: the price of handing the work to a matrix multiply.

    Args:
        x: floating array of shape (N, H, W, in_channels).
        w: kernel of shape (kh, kw, in_channels, out_channels), the dtype of `x`.
        padding: "VALID", "SAME", "FULL", an int, (ph, pw) or ((top, bottom), (left, right));
            zeros, with the meanings they have in `cnnlib.conv2d`.

    Returns:
        Array of shape (N, H_out, W_out, out_channels), equal to
        ``cnnlib.conv2d(x, w, padding=padding)`` up to rounding.

    Raises:
        TypeError: `x` or `w` is not a floating array, or their dtypes differ.
        ValueError: a shape does not fit, or `padding` is not a zero padding.

    Example:
        >>> conv2d_im2col(jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))).shape
        (2, 6, 6, 4)

    Introduced in chapter 08, notebooks/08-performance-and-scaling.ipynb.
    """
    xp, w = _check(x, w, padding, "conv2d_im2col")
    n, hp, wp, c = xp.shape
    kh, kw, _, out_channels = w.shape
    oh, ow = hp - kh + 1, wp - kw + 1
    # Input row of tap a for output row i is i + a (likewise columns): one gather cuts every
    # window. (Stacking kh * kw slices instead compiles in seconds for an 11 x 11 kernel.)
    rows = jnp.arange(oh)[:, None] + jnp.arange(kh)  # (H_out, kh)
    cols = jnp.arange(ow)[:, None] + jnp.arange(kw)  # (W_out, kw)
    patches = xp[:, rows[:, None, :, None], cols[None, :, None, :]]  # (N, H', W', kh, kw, C)
    patches = patches.reshape(n * oh * ow, kh * kw * c)  # the patch matrix, (a, b, c) order
    y = patches @ w.reshape(kh * kw * c, out_channels)  # (N*H'*W', C_out): the one GEMM
    return y.reshape(n, oh, ow, out_channels)


def conv2d_fft(x: Any, w: Any, *, padding: Any = "VALID") -> jax.Array:
    """Convolution by the convolution theorem: multiply the spectra, transform back.

    Cross-correlating with `w` is convolving with `w` flipped. Both are transformed at the
    full linear-convolution size (H_p + kh - 1, W_p + kw - 1), so the FFT's wrap-around never
    folds values back; the spectra are multiplied and summed over input channels, and the
    positions where `w` fits inside the padded input are cut out of the inverse transform.

    Args:
        x: floating array of shape (N, H, W, in_channels).
        w: kernel of shape (kh, kw, in_channels, out_channels), the dtype of `x`.
        padding: as in `conv2d_im2col`.

    Returns:
        Array of shape (N, H_out, W_out, out_channels) in the dtype of `x`, equal to
        ``cnnlib.conv2d(x, w, padding=padding)`` up to rounding (about 1e-6 relative to the
        largest output in float32: the FFT spreads rounding over every output).

    Raises:
        TypeError, ValueError: as in `conv2d_im2col`.

    Example:
        >>> conv2d_fft(jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))).shape
        (2, 6, 6, 4)

    Introduced in chapter 08, notebooks/08-performance-and-scaling.ipynb.
    """
    xp, w = _check(x, w, padding, "conv2d_fft")
    hp, wp = xp.shape[1:3]
    kh, kw = w.shape[:2]
    size = (hp + kh - 1, wp + kw - 1)  # full linear convolution: no wrap-around
    x_hat = jnp.fft.rfft2(xp, s=size, axes=(1, 2))  # (N, fh, fw // 2 + 1, C), complex
    w_hat = jnp.fft.rfft2(w[::-1, ::-1], s=size, axes=(0, 1))  # (fh, fw // 2 + 1, C, C_out)
    y_hat = jnp.einsum("nhwc,hwco->nhwo", x_hat, w_hat)  # sum over input channels
    full = jnp.fft.irfft2(y_hat, s=size, axes=(1, 2))  # (N, fh, fw, C_out)
    return full[:, kh - 1 : hp, kw - 1 : wp].astype(xp.dtype)  # where w fits inside xp


def _check(x, w, padding, where):
    """conv2d's checks for stride 1, groups 1, zero padding; returns (padded x, w)."""
    check_nhwc(x, where)
    check_hwio(w, x.shape[3], 1, where)
    _check_same_dtype(w, x, "w", where)
    in_hw, kernel_hw = (x.shape[1], x.shape[2]), (w.shape[0], w.shape[1])
    pads = padding_pairs(padding, in_hw, kernel_hw, (1, 1), where, PADDING_MODES)
    _check_fits(in_hw, pads, kernel_hw, w.shape, (1, 1), where)
    return jnp.pad(x, ((0, 0), *pads, (0, 0))), jnp.asarray(w)
