"""Argument checks shared by every public function.

Each check raises a ValueError or TypeError whose message names the function, the
argument, the value received and the fix, e.g.

    conv2d: `x` must have shape (N, H, W, C); got (32, 32). Add axes with x[None, ..., None].

Arguments are normalised once, here (Equinox `_ntuple`, Flax `canonicalize_padding`),
so the operations themselves never guess.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# How to turn a lower-rank image into the batched NHWC layout cnnlib uses.
ADD_AXES = {
    2: "x[None, ..., None]",  # (H, W) -> (1, H, W, 1)
    3: "x[None] for one (H, W, C) image, or x[..., None] for a batch of (N, H, W) images",
}


def as_pair(value: Any, name: str, where: str) -> tuple[int, int]:
    """Normalise an int or a pair of ints to a pair: `as_pair(3) -> (3, 3)`.

    Args:
        value: an int, or a sequence of exactly two ints.
        name: the argument's name, for the error message.
        where: the public function's name, for the error message.

    Returns:
        A tuple `(h, w)` of Python ints.

    Raises:
        TypeError: `value` is not an int or a pair of ints (bools and floats included).
        ValueError: `value` is a sequence whose length is not 2.
    """
    if _is_int(value):
        return (int(value), int(value))
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(
                f"{where}: `{name}` must be an int or a pair (h, w); got {value!r} of length "
                f"{len(value)}. Pass one int for both axes, e.g. {name}=3, or exactly two."
            )
        if all(_is_int(v) for v in value):
            return (int(value[0]), int(value[1]))
    raise TypeError(
        f"{where}: `{name}` must be an int or a pair of ints (h, w); got {value!r} "
        f"of type {type(value).__name__}. Pass e.g. {name}=2 or {name}=(2, 2)."
    )


def positive_pair(value: Any, name: str, where: str) -> tuple[int, int]:
    """`as_pair`, then require both entries to be >= 1."""
    pair = as_pair(value, name, where)
    if min(pair) < 1:
        raise ValueError(
            f"{where}: `{name}` must be positive; got {value!r}. Use {name}=1 for the default."
        )
    return pair


def check_positive_int(value: Any, name: str, where: str) -> int:
    """Require a Python or NumPy int >= 1 (not a bool, not a float)."""
    if not _is_int(value):
        raise TypeError(
            f"{where}: `{name}` must be a positive int; got {value!r} of type "
            f"{type(value).__name__}."
        )
    if value < 1:
        raise ValueError(f"{where}: `{name}` must be a positive int; got {value!r}.")
    return int(value)


def check_max_shift(max_shift: Any, shape: tuple[int, ...], where: str) -> int:
    """Require an int shift smaller than the images of an NHWC `shape`: 0 <= max_shift < H, W."""
    h, w = shape[1:3]
    if not _is_int(max_shift) or not 0 <= max_shift < min(h, w):
        raise ValueError(
            f"{where}: `max_shift` must be an int in 0..{min(h, w) - 1} (less than the image "
            f"size {h} x {w}); got {max_shift!r}. Use max_shift=1 or 2."
        )
    return int(max_shift)


def check_fraction(
    value: Any, name: str, where: str, *, zero: bool, fix: str, meaning: str = ""
) -> float:
    """Require a real number (not a bool) in [0, 1) if `zero` is allowed, else in (0, 1).

    `meaning` follows the interval in the message (", the probability of ..."); `fix` ends it.
    """
    interval = "[0, 1)" if zero else "(0, 1)"
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not real or not (0 <= value < 1 if zero else 0 < value < 1):
        raise ValueError(
            f"{where}: `{name}` must be a number in {interval}{meaning}; got {value!r}. {fix}"
        )
    return float(value)


def check_nhwc(x: Any, where: str, name: str = "x") -> None:
    """Require a 4-D floating array in the batched (N, H, W, C) layout.

    Raises:
        TypeError: `x` has no shape/dtype, or an integer or bool dtype.
        ValueError: `x` is not 4-D (the message says which axes to add), or has an empty axis.
    """
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is None or dtype is None:
        raise TypeError(
            f"{where}: `{name}` must be an array of shape (N, H, W, C); got "
            f"{type(x).__name__}. Convert it with jnp.asarray({name}, jnp.float32)."
        )
    if len(shape) != 4:
        fix = ADD_AXES.get(len(shape), "reshape it to (N, H, W, C)")
        if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[2] > 4:
            # (3, 225, 225) is far more likely one channels-first image than 3 images of width 225.
            fix += f"; it looks channels-first (C, H, W): use {name}.transpose(1, 2, 0)[None]"
        raise ValueError(
            f"{where}: `{name}` must have shape (N, H, W, C); got {tuple(shape)}. "
            f"Add axes with {fix}."
        )
    check_float_dtype(x, where, name)
    if 0 in shape:
        raise ValueError(
            f"{where}: `{name}` must have no empty axis; got shape {tuple(shape)}."
        )


def check_float_dtype(x: Any, where: str, name: str = "x") -> None:
    """Require a floating dtype (integer images must be converted explicitly)."""
    dtype = np.dtype(x.dtype)
    # jnp.issubdtype, not np's: it also knows bfloat16 and the other ml_dtypes floats.
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{where}: `{name}` must have a floating dtype; got {dtype}. "
            f"Convert it with {name}.astype(jnp.float32) (and divide uint8 images by 255)."
        )


def check_key(key: Any, name: str, where: str) -> None:
    """Require one `jax.random` key: a typed key (``jax.random.key(0)``) or a legacy raw
    ``uint32[2]`` key (``jax.random.PRNGKey(0)``)."""
    dtype = getattr(key, "dtype", None)
    shape = getattr(key, "shape", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if shape == ():
            return
    elif dtype == np.uint32 and shape == (2,):
        return
    got = f"{type(key).__name__} {key!r}" if dtype is None else f"shape {shape}, dtype {dtype}"
    raise TypeError(
        f"{where}: `{name}` must be one JAX random key such as jax.random.key(0); got {got}. "
        f"Make one with jax.random.key(seed); split it with jax.random.split(key) for several."
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


# The padding strings every convolution accepts; pooling accepts the first two.
PADDING_MODES = ("VALID", "SAME", "FULL", "CIRCULAR")


def axis_padding(
    padding: Any,
    size: int,
    kernel_size: int,
    stride: int,
    where: str,
    modes: tuple[str, ...] = PADDING_MODES,
) -> tuple[int, int]:
    """Padding of one spatial axis as `(before, after)`; the single place strings are resolved.

    Args:
        padding: a string in `modes` (any case), an int (both sides), or `(before, after)`.
        size: the input's length along this axis.
        kernel_size: the *dilated* kernel extent, `dilation * (k - 1) + 1`.
        stride: the step along this axis.
        where: the public function's name, for the error message.
        modes: the padding strings `where` accepts.

    Returns:
        `(before, after)`, non-negative Python ints. "VALID" is (0, 0); "FULL" is
        `kernel_size - 1` each side; "SAME" and "CIRCULAR" use XLA's SAME rule (output length
        `ceil(size / stride)`, the odd pixel after), CIRCULAR fills with wrapped values instead.

    Raises:
        ValueError: unknown string, negative amount, or a pair of the wrong length.
        TypeError: anything that is not a string, an int or a pair of ints.
    """
    if isinstance(padding, str):
        mode = _padding_mode(padding, where, modes)
        if mode == "VALID":
            return (0, 0)
        if mode == "FULL":
            return (kernel_size - 1, kernel_size - 1)
        out = -(-size // stride)  # ceil(size / stride)
        total = max((out - 1) * stride + kernel_size - size, 0)
        return (total // 2, total - total // 2)
    if _is_int(padding):
        pair = (int(padding), int(padding))  # both sides
    elif isinstance(padding, (tuple, list)) and len(padding) == 2 and all(map(_is_int, padding)):
        pair = (int(padding[0]), int(padding[1]))  # (before, after)
    else:
        raise TypeError(
            f"{where}: `padding` for one axis must be an int, (before, after) or one of "
            f"{modes}; got {padding!r}. Use e.g. padding=1 or padding=(0, 1)."
        )
    _check_non_negative(pair, padding, where)
    return pair


def padding_pairs(
    padding: Any,
    in_hw: tuple[int, int],
    kernel_hw: tuple[int, int],
    stride: tuple[int, int],
    where: str,
    modes: tuple[str, ...] = PADDING_MODES,
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Normalise every padding form to `((top, bottom), (left, right))`.

    Accepted forms: a string in `modes` (any case), an int `p` (every side), a pair of ints
    `(ph, pw)` (symmetric per axis), or a pair of pairs `((top, bottom), (left, right))`.
    `kernel_hw` is the dilated kernel extent; strings are resolved by `axis_padding`.

    Raises:
        ValueError: unknown string, negative amount, or a sequence of the wrong length.
        TypeError: anything else (floats and bools included).
    """
    if isinstance(padding, str):
        return (
            axis_padding(padding, in_hw[0], kernel_hw[0], stride[0], where, modes),
            axis_padding(padding, in_hw[1], kernel_hw[1], stride[1], where, modes),
        )
    if isinstance(padding, (tuple, list)) and len(padding) == 2:
        if all(isinstance(p, (tuple, list)) for p in padding):
            pairs = (as_pair(padding[0], "padding", where), as_pair(padding[1], "padding", where))
            _check_non_negative(pairs[0] + pairs[1], padding, where)
            return pairs
        if any(isinstance(p, (tuple, list)) for p in padding):
            raise TypeError(
                f"{where}: `padding` mixes ints and pairs; got {padding!r}. Pass (ph, pw) "
                f"or ((top, bottom), (left, right))."
            )
    if isinstance(padding, (tuple, list)) and len(padding) != 2:
        raise ValueError(
            f"{where}: `padding` must be an int, (ph, pw), ((top, bottom), (left, right)) or "
            f"one of {modes}; got {padding!r} of length {len(padding)}. Pass exactly two entries."
        )
    ph, pw = as_pair(padding, "padding", where)
    _check_non_negative((ph, pw), padding, where)
    return ((ph, ph), (pw, pw))


def _padding_mode(padding: str, where: str, modes: tuple[str, ...]) -> str:
    mode = padding.upper()
    if mode not in modes:
        raise ValueError(
            f"{where}: `padding` must be one of {modes} (any case), an int or pairs of ints; "
            f"got {padding!r}. Use e.g. padding=\"SAME\" or padding=1."
        )
    return mode


def _check_non_negative(amounts: tuple[int, ...], padding: Any, where: str) -> None:
    if min(amounts) < 0:
        raise ValueError(
            f"{where}: `padding` must be non-negative; got {padding!r}. Crop the input "
            f"(x[:, 1:-1, 1:-1]) instead of padding by a negative amount."
        )


def check_hwio(w: Any, in_channels: int, groups: int, where: str) -> None:
    """Require a floating 4-D kernel in the HWIO layout that matches `in_channels` and `groups`.

    `w` has shape `(kh, kw, in_channels // groups, out_channels)`. When it looks like a PyTorch
    OIHW kernel instead, the message says how to transpose it.

    Raises:
        TypeError: `w` has no shape/dtype, or a non-floating dtype.
        ValueError: `w` is not 4-D, has an empty axis, or its channels do not match.
    """
    shape = getattr(w, "shape", None)
    if shape is None or getattr(w, "dtype", None) is None:
        raise TypeError(
            f"{where}: `w` must be an array of shape (kh, kw, in_channels // groups, "
            f"out_channels); got {type(w).__name__}. Convert it with jnp.asarray(w, jnp.float32)."
        )
    shape = tuple(shape)
    if len(shape) != 4:
        raise ValueError(
            f"{where}: `w` must be a 4-D HWIO kernel (kh, kw, in_channels // groups, "
            f"out_channels); got shape {shape}. For one (kh, kw) filter use w[:, :, None, None]."
        )
    check_float_dtype(w, where, "w")
    if 0 in shape:
        raise ValueError(f"{where}: `w` must have no empty axis; got shape {shape}.")
    w_in, out_channels = shape[2], shape[3]
    if in_channels % groups:
        raise ValueError(
            f"{where}: `groups` must divide in_channels = x.shape[3] = {in_channels}; got "
            f"groups={groups}. Use a divisor of in_channels (groups=in_channels is depthwise)."
        )
    if w_in * groups != in_channels:
        # PyTorch stores (out_channels, in_channels // groups, kh, kw).
        oihw = shape[1] * groups == in_channels
        fix = (
            "It looks like a PyTorch OIHW kernel: use w.transpose(2, 3, 1, 0)."
            if oihw
            else f"Make w.shape[2] == in_channels // groups = {in_channels} // {groups}."
        )
        raise ValueError(
            f"{where}: `w` must have shape (kh, kw, in_channels // groups, out_channels) with "
            f"in_channels = {in_channels} (the last axis of x) and groups = {groups}; got "
            f"{shape}. {fix}"
        )
    if out_channels % groups:
        raise ValueError(
            f"{where}: `groups` must divide out_channels = w.shape[3] = {out_channels}; got "
            f"groups={groups}. Use an out_channels that is a multiple of groups."
        )
