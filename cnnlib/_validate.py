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

import numpy as np

# How to turn a lower-rank image into the batched NHWC layout cnnlib uses.
_ADD_AXES = {
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
        fix = _ADD_AXES.get(len(shape), "reshape it to (N, H, W, C)")
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
    if not np.issubdtype(dtype, np.floating):
        raise TypeError(
            f"{where}: `{name}` must have a floating dtype; got {dtype}. "
            f"Convert it with {name}.astype(jnp.float32) (and divide uint8 images by 255)."
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
