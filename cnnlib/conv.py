"""2-D convolution (strictly, cross-correlation) on NHWC batches, and its output-size arithmetic.

Introduced in chapter 01, notebooks/01-convolution.ipynb. `conv2d` is a thin, checked wrapper
around `jax.lax.conv_general_dilated`; every check reads static shapes only, so under `jax.jit`
it runs once at trace time and costs nothing per call. The loop definitions it is tested
against are in `cnnlib.reference`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from cnnlib._validate import (
    axis_padding,
    check_hwio,
    check_nhwc,
    check_positive_int,
    padding_pairs,
    positive_pair,
)

# Activations NHWC, kernels HWIO, outputs NHWC.
DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def conv2d(
    x: Any,
    w: Any,
    b: Any = None,
    *,
    stride: Any = 1,
    padding: Any = "VALID",
    dilation: Any = 1,
    groups: int = 1,
) -> jax.Array:
    """Cross-correlate a batch of images with a bank of kernels, as deep-learning "conv" does.

    ``y[n, i, j, o] = b[o] + sum_{u, v, c} xp[n, i*sh + u*dh, j*sw + v*dw, g*Cg + c]
    * w[u, v, c, o]``, where `xp` is `x` padded, `g = o // (out_channels // groups)` is the
    group of output channel `o` and `Cg = in_channels // groups`.

    Args:
        x: floating array of shape (N, H, W, in_channels).
        w: kernel of shape (kh, kw, in_channels // groups, out_channels) (HWIO), same dtype
            as `x`. A PyTorch OIHW kernel becomes HWIO with ``w.transpose(2, 3, 1, 0)``.
        b: optional bias of shape (out_channels,), same dtype as `x`.
        stride: int or (sh, sw), >= 1.
        padding: "VALID" (none), "SAME" (output ceil(H / sh) x ceil(W / sw), zeros),
            "FULL" (dilated kernel - 1 zeros on every side), "CIRCULAR" (the SAME amounts, but
            filled by wrapping around, so the result commutes exactly with circular shifts),
            an int (every side), (ph, pw), or ((top, bottom), (left, right)). Strings are
            case-insensitive.
        dilation: int or (dh, dw), >= 1: spacing between kernel taps (atrous convolution).
        groups: split channels into `groups` independent convolutions; must divide
            in_channels and out_channels. ``groups=in_channels`` is depthwise.

    Returns:
        Array of shape (N, H_out, W_out, out_channels) and the dtype of `x`, where
        ``H_out = conv_output_size(H, kh, sh, padding_h, dh)`` (likewise W_out).

    Raises:
        TypeError: `x`, `w` or `b` is not a floating array, dtypes differ, or an argument has
            the wrong type.
        ValueError: a shape does not fit (wrong rank, channels, groups, bias length, kernel
            larger than the padded input) or an argument is out of range.

    Example:
        >>> x = jnp.ones((2, 28, 28, 1))
        >>> w = jnp.ones((5, 5, 1, 6)) / 25
        >>> conv2d(x, w, padding="SAME").shape
        (2, 28, 28, 6)

    Introduced in chapter 01, notebooks/01-convolution.ipynb.
    """
    where = "conv2d"
    check_nhwc(x, where)
    groups = check_positive_int(groups, "groups", where)
    check_hwio(w, x.shape[3], groups, where)
    _check_same_dtype(w, x, "w", where)
    stride = positive_pair(stride, "stride", where)
    dilation = positive_pair(dilation, "dilation", where)
    in_hw = (x.shape[1], x.shape[2])
    kernel_hw = _dilated(w.shape[:2], dilation)  # extent of the dilated kernel
    pads = padding_pairs(padding, in_hw, kernel_hw, stride, where)
    _check_fits(in_hw, pads, kernel_hw, w.shape, dilation, where)
    if b is not None:
        _check_bias(b, w.shape[3], x, where)

    if isinstance(padding, str) and padding.upper() == "CIRCULAR":
        # Wrap-around fill, then no padding: every output pixel sees a full window.
        x = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), mode="wrap")
        pads = ((0, 0), (0, 0))
    y = lax.conv_general_dilated(
        x,
        w,
        window_strides=stride,
        padding=pads,
        rhs_dilation=dilation,
        dimension_numbers=DIMENSION_NUMBERS,
        feature_group_count=groups,
    )  # (N, H_out, W_out, out_channels)
    if b is not None:
        y = y + b  # broadcast over (N, H_out, W_out)
    return y


def conv_output_size(
    n: int, kernel_size: int, stride: int = 1, padding: Any = 0, dilation: int = 1
) -> int:
    """Output length of a convolution along one axis (Dumoulin & Visin, 2016).

    ``o = floor((n + p_before + p_after - dilation * (kernel_size - 1) - 1) / stride) + 1``.

    Args:
        n: input length, >= 1.
        kernel_size: kernel length before dilation, >= 1.
        stride: step, >= 1.
        padding: an int (both sides), (before, after), or "VALID", "SAME", "FULL",
            "CIRCULAR" (case-insensitive), with the meanings they have in `conv2d`.
        dilation: spacing between kernel taps, >= 1.

    Returns:
        The output length `o`, a Python int >= 1; `conv2d` produces exactly this shape.

    Raises:
        TypeError: an argument is not an int (or padding form).
        ValueError: an argument is out of range, or the dilated kernel is longer than the
            padded input.

    Example:
        >>> conv_output_size(28, 5)  # LeNet's first layer
        24
        >>> conv_output_size(7, 3, stride=2, padding="SAME")
        4

    Introduced in chapter 01, notebooks/01-convolution.ipynb.
    """
    where = "conv_output_size"
    n = check_positive_int(n, "n", where)
    kernel_size = check_positive_int(kernel_size, "kernel_size", where)
    stride = check_positive_int(stride, "stride", where)
    dilation = check_positive_int(dilation, "dilation", where)
    extent = dilation * (kernel_size - 1) + 1
    before, after = axis_padding(padding, n, extent, stride, where)
    if extent > n + before + after:
        raise ValueError(
            f"{where}: `kernel_size` dilated to {extent} must fit in the padded input of length "
            f"{n} + {before} + {after}; got kernel_size={kernel_size}, dilation={dilation}. "
            f"Use more padding or a smaller kernel_size or dilation."
        )
    return (n + before + after - extent) // stride + 1


def _dilated(kernel_hw: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int]:
    """Extent of a dilated kernel: d * (k - 1) + 1 per axis."""
    return tuple(d * (k - 1) + 1 for k, d in zip(kernel_hw, dilation))


def _check_fits(in_hw, pads, kernel_hw, w_shape, dilation, where: str) -> None:
    padded = tuple(n + p0 + p1 for n, (p0, p1) in zip(in_hw, pads))
    if kernel_hw[0] > padded[0] or kernel_hw[1] > padded[1]:
        raise ValueError(
            f"{where}: `w` must fit in the padded input {padded} (H, W); got kernel (kh, kw) = "
            f"{tuple(w_shape[:2])} with dilation {dilation}, extent {kernel_hw}. Use "
            f"padding=\"SAME\", a smaller kernel_size, or less dilation."
        )


def _check_same_dtype(a: Any, x: Any, name: str, where: str) -> None:
    # No silent promotion: a float64 kernel on float32 images would make every layer float64.
    if a.dtype != x.dtype:
        raise TypeError(
            f"{where}: `{name}` must have the dtype of `x` ({x.dtype}); got {a.dtype}. Cast the "
            f"params with cast_params(params, x.dtype) or x with x.astype({name}.dtype)."
        )


def _check_bias(b: Any, out_channels: int, x: Any, where: str) -> None:
    shape = getattr(b, "shape", None)
    if shape is None or getattr(b, "dtype", None) is None:
        raise TypeError(
            f"{where}: `b` must be an array of shape (out_channels,) = ({out_channels},) or "
            f"None; got {type(b).__name__}. Convert it with jnp.asarray(b, x.dtype)."
        )
    if tuple(shape) != (out_channels,):
        raise ValueError(
            f"{where}: `b` must have shape (out_channels,) = ({out_channels},); got "
            f"{tuple(shape)}. Use one bias per output channel, e.g. jnp.zeros({out_channels})."
        )
    _check_same_dtype(b, x, "b", where)

