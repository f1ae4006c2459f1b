"""Translations, and how far a function is from commuting with them.

Introduced in chapter 04, notebooks/04-equivariance-and-invariance.ipynb. A function `f` is
*equivariant* to translations when ``f(shift(x, dy, dx)) == shift(f(x), dy, dx)``, and
*invariant* when ``f(shift(x, dy, dx)) == f(x)``. This module measures both, on NHWC batches:

- `shift`: translate images by whole pixels, circularly or filling with zeros;
- `equivariance_error`: the relative distance between ``f(shift(x))`` and the nearest
  translate of ``f(x)``;
- `shift_consistency`: Zhang (2019)'s probability that a classifier predicts the same
  class for two random shifts of the same image;
- `accuracy_vs_shift`: test accuracy when every test image is shifted by k pixels;
- `shift_averaged`: a model whose prediction is averaged over shifted copies of its input
  (test-time augmentation; chapter 06);
- `shift_sensitivity`: how far a one-pixel shift moves a representation, relative to how far
  apart different images are (chapter 05 measures it layer by layer).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cnnlib._validate import _is_int, check_max_shift, check_nhwc, check_positive_int

MODES = ("circular", "zeros")


def shift(x: Any, dy: Any, dx: Any, *, mode: str = "circular") -> jax.Array:
    """Translate NHWC images by whole pixels: ``out[n, i, j] = x[n, i - dy, j - dx]``.

    Positive `dy` moves the content down, positive `dx` moves it right. With
    ``mode="circular"`` what leaves one edge re-enters at the opposite edge (indices are
    taken modulo H and W), so the shift loses nothing and ``shift(shift(x, a, b), -a, -b)``
    is `x`; with ``mode="zeros"`` it is lost and the uncovered pixels are 0.

    Args:
        x: floating array of shape (N, H, W, C).
        dy: rows to move down: an int for the whole batch, or an int array of shape (N,)
            with one shift per image.
        dx: columns to move right, like `dy`.
        mode: ``"circular"`` or ``"zeros"``.

    Returns:
        Array of shape (N, H, W, C), the same dtype as `x`. Values are moved, never
        combined, so they are bit-for-bit those of `x` (or 0).

    Example:
        >>> x = jnp.arange(4.0).reshape(1, 1, 4, 1)
        >>> shift(x, 0, 1)[0, 0, :, 0].tolist()
        [3.0, 0.0, 1.0, 2.0]
        >>> shift(x, 0, 1, mode="zeros")[0, 0, :, 0].tolist()
        [0.0, 0.0, 1.0, 2.0]

    Introduced in chapter 04, notebooks/04-equivariance-and-invariance.ipynb.
    """
    check_nhwc(x, "shift")
    mode = _check_mode(mode, "shift")
    n = x.shape[0]
    dy = _check_offsets(dy, "dy", n, "shift")
    dx = _check_offsets(dx, "dx", n, "shift")
    return _shift(jnp.asarray(x), dy, dx, mode == "circular")


@functools.partial(jax.jit, static_argnums=3)
def _shift(x: jax.Array, dy: jax.Array, dx: jax.Array, circular: bool) -> jax.Array:
    n, h, w, _ = x.shape
    rows = jnp.arange(h)[None, :] - dy[:, None]  # (N, H): source row of each output row
    cols = jnp.arange(w)[None, :] - dx[:, None]  # (N, W)
    if circular:
        rows, cols = rows % h, cols % w
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    out = x[
        jnp.arange(n)[:, None, None],
        jnp.clip(rows, 0, h - 1)[:, :, None],
        jnp.clip(cols, 0, w - 1)[:, None, :],
    ]  # (N, H, W, C)
    return jnp.where(inside[..., None], out, jnp.zeros((), x.dtype))


def random_shifts(key: Any, n: int, max_shift: int) -> np.ndarray:
    """Draw `n` shifts ``(dy, dx)``, each entry uniform on ``-max_shift, ..., max_shift``.

    Args:
        key: a `jax.random` key.
        n: how many shifts.
        max_shift: the largest absolute shift, >= 0.

    Returns:
        int32 NumPy array of shape (n, 2): column 0 is `dy`, column 1 is `dx`.

    Example:
        >>> random_shifts(jax.random.key(0), 3, 2).shape
        (3, 2)

    Introduced in chapter 04, notebooks/04-equivariance-and-invariance.ipynb.
    """
    n = check_positive_int(n, "n", "random_shifts")
    max_shift = _check_nonnegative_int(max_shift, "max_shift", "random_shifts")
    draws = jax.random.randint(key, (n, 2), -max_shift, max_shift + 1)
    return np.asarray(draws, np.int32)


def equivariance_error(
    f: Callable[[jax.Array], jax.Array],
    x: Any,
    dy: int,
    dx: int,
    *,
    stride: int = 1,
    mode: str = "circular",
    border: int = 0,
) -> float:
    """How far `f` is from commuting with a shift of its input by ``(dy, dx)`` pixels.

    Computes ``y = f(x)`` and ``y_s = f(shift(x, dy, dx))`` and returns

        min over (ey, ex) of  ||y_s - shift(y, ey, ex)|| / ||y||

    (Frobenius norms over the whole batch, after dropping `border` output pixels on every
    side). The output shift ``(ey, ex)`` is the input shift divided by `stride`, the
    factor by which `f` shrinks the image. When that is not a whole number, no translate of
    `y` is the "right" one, and the error is the distance to the *nearest* translate:
    ``ey`` ranges over floor and ceiling of ``dy / stride`` (likewise ``ex``). An error of
    0 means exact equivariance; an error of 1 means the change is as large as `y` itself.

    Args:
        f: maps (N, H, W, C) arrays to (N, H', W', C') arrays, with ``H' = H / stride``.
        x: floating array of shape (N, H, W, C).
        dy: rows to shift the input down (an int).
        dx: columns to shift the input right (an int).
        stride: total downsampling factor of `f`, >= 1.
        mode: how the input and output are shifted: ``"circular"`` or ``"zeros"``.
        border: output pixels to ignore on each side (where padding makes even an
            equivariant operation differ), >= 0.

    Returns:
        The relative error, a Python float >= 0 (the absolute error if ``f(x)`` is 0).

    Example:
        >>> x = jax.random.normal(jax.random.key(0), (1, 8, 8, 1))
        >>> equivariance_error(lambda v: 2 * v, x, 1, 3)
        0.0

    Introduced in chapter 04, notebooks/04-equivariance-and-invariance.ipynb.
    """
    where = "equivariance_error"
    if not callable(f):
        raise TypeError(
            f"{where}: `f` must be a function of an (N, H, W, C) array; got "
            f"{type(f).__name__}. Pass e.g. lambda x: conv2d(x, w)."
        )
    check_nhwc(x, where)
    mode = _check_mode(mode, where)
    for name, value in (("dy", dy), ("dx", dx)):
        if not _is_int(value):
            raise TypeError(
                f"{where}: `{name}` must be an int; got {value!r} of type "
                f"{type(value).__name__}."
            )
    stride = check_positive_int(stride, "stride", where)
    border = _check_nonnegative_int(border, "border", where)
    y = jnp.asarray(f(x))
    y_shifted = jnp.asarray(f(shift(x, dy, dx, mode=mode)))
    if y.ndim != 4 or y.shape != y_shifted.shape:
        raise ValueError(
            f"{where}: `f` must return an (N, H', W', C') array of the same shape for `x` "
            f"and its shift; got {y.shape} and {y_shifted.shape}."
        )
    if 2 * border >= min(y.shape[1:3]):
        raise ValueError(
            f"{where}: `border`={border} leaves no output pixels of the {y.shape[1]} x "
            f"{y.shape[2]} output; use border < {(min(y.shape[1:3]) + 1) // 2}."
        )
    inner = (slice(None), slice(border, y.shape[1] - border), slice(border, y.shape[2] - border))
    scale = float(jnp.linalg.norm(y[inner]))
    scale = scale if scale > 0 else 1.0
    errors = [
        float(jnp.linalg.norm((y_shifted - shift(y, ey, ex, mode=mode))[inner])) / scale
        for ey in _nearest(dy, stride)
        for ex in _nearest(dx, stride)
    ]
    return min(errors)


def shift_consistency(
    predict: Callable[[jax.Array], Any],
    x: Any,
    *,
    max_shift: int,
    key: Any,
    mode: str = "circular",
    batch_size: int = 1000,
) -> float:
    """Zhang (2019)'s consistency: P(same predicted class for two random shifts of an image).

    Each image ``x[n]`` is shifted twice, by ``(dy1, dx1)`` and ``(dy2, dx2)`` drawn
    independently with `random_shifts` (keys ``jax.random.split(key)``), and the result is
    the fraction of images whose two predicted classes (argmax of `predict`) agree. The
    labels are not needed: a classifier can be consistent and wrong.

    Args:
        predict: maps an (B, H, W, C) batch to scores of shape (B, classes).
        x: floating array of shape (N, H, W, C).
        max_shift: the largest absolute shift along each axis, >= 0.
        key: a `jax.random` key.
        mode: ``"circular"`` or ``"zeros"`` (see `shift`).
        batch_size: images per call of `predict`.

    Returns:
        A Python float in [0, 1]; 1.0 for a translation-invariant classifier and
        circular shifts.

    Example:
        >>> x = jax.random.uniform(jax.random.key(0), (8, 6, 6, 3))
        >>> shift_consistency(lambda v: v.mean(axis=(1, 2)), x, max_shift=2, key=jax.random.key(1))
        1.0

    Introduced in chapter 04, notebooks/04-equivariance-and-invariance.ipynb.
    """
    where = "shift_consistency"
    _check_callable(predict, "predict", where)
    check_nhwc(x, where)
    mode = _check_mode(mode, where)
    max_shift = _check_nonnegative_int(max_shift, "max_shift", where)
    batch_size = check_positive_int(batch_size, "batch_size", where)
    n = x.shape[0]
    key_a, key_b = jax.random.split(key)
    a, b = random_shifts(key_a, n, max_shift), random_shifts(key_b, n, max_shift)
    agree = 0
    for start in range(0, n, batch_size):
        part = slice(start, start + batch_size)
        pred_a = _classes(predict, shift(x[part], a[part, 0], a[part, 1], mode=mode), where)
        pred_b = _classes(predict, shift(x[part], b[part, 0], b[part, 1], mode=mode), where)
        agree += int(np.sum(pred_a == pred_b))
    return agree / n


def accuracy_vs_shift(
    predict: Callable[[jax.Array], Any],
    x: Any,
    y: Any,
    shifts: Iterable[int],
    *,
    mode: str = "zeros",
    batch_size: int = 1000,
) -> np.ndarray:
    """Accuracy on test images moved by k pixels, for each k in `shifts`.

    For each k, every image is shifted by k pixels down, up, right and left in turn
    (``(k, 0), (-k, 0), (0, k), (0, -k)``), and the four accuracies are averaged, so no
    direction is favoured. ``k = 0`` is the ordinary accuracy.

    Args:
        predict: maps an (B, H, W, C) batch to scores of shape (B, classes).
        x: floating array of shape (N, H, W, C).
        y: integer labels of shape (N,).
        shifts: non-negative ints, e.g. ``range(0, 9)``.
        mode: ``"zeros"`` (the object moves on a blank background; the default) or
            ``"circular"``.
        batch_size: images per call of `predict`.

    Returns:
        float64 NumPy array of shape (len(shifts),): accuracies in [0, 1].

    Example:
        >>> x = jax.random.uniform(jax.random.key(0), (4, 6, 6, 1))
        >>> accuracy_vs_shift(lambda v: v.sum(axis=(1, 2)), x, np.zeros(4, int), [0, 2])
        array([1., 1.])

    Introduced in chapter 04, notebooks/04-equivariance-and-invariance.ipynb.
    """
    where = "accuracy_vs_shift"
    _check_callable(predict, "predict", where)
    check_nhwc(x, where)
    mode = _check_mode(mode, where)
    batch_size = check_positive_int(batch_size, "batch_size", where)
    labels = np.asarray(y)
    if labels.shape != (x.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"accuracy_vs_shift: `y` must be integer labels of shape ({x.shape[0]},), one per "
            f"image of `x`; got {labels.dtype} of shape {labels.shape}."
        )
    if isinstance(shifts, (str, bytes)) or not isinstance(shifts, Iterable):
        raise TypeError(
            f"accuracy_vs_shift: `shifts` must be an iterable of ints; got {shifts!r}. "
            f"Pass e.g. shifts=range(0, 9)."
        )
    shifts = [_check_nonnegative_int(k, "shifts", where) for k in shifts]
    accuracies = []
    for k in shifts:
        correct = 0
        for dy, dx in ((k, 0), (-k, 0), (0, k), (0, -k)):
            for start in range(0, x.shape[0], batch_size):
                part = slice(start, start + batch_size)
                pred = _classes(predict, shift(x[part], dy, dx, mode=mode), where)
                correct += int(np.sum(pred == labels[part]))
        accuracies.append(correct / (4 * x.shape[0]))
    return np.asarray(accuracies, np.float64)


def shift_averaged(apply: Callable, max_shift: int = 1, *, mode: str = "zeros") -> Callable:
    """Test-time augmentation: a model whose prediction is averaged over shifts of its input.

    The returned function runs `apply` on the K = (2 max_shift + 1)^2 copies of the batch
    moved by every ``(dy, dx)`` with both entries in -max_shift..max_shift (`shift` with
    `mode`), and averages the predicted class probabilities:

        p(c | x) = (1 / K) sum_{dy, dx} softmax(apply(params, shift(x, dy, dx)))_c

    It returns ``log p``, which serves as logits (its softmax is p), so `train.evaluate` and
    anything else that takes a model's apply take it unchanged. Averaging over a group of
    transformations makes a predictor invariant to them (chapter 04): with ``mode="circular"``
    and every shift of the image it would be exactly shift-invariant. Here the shifts are the
    few that a network trained with ``random_shift(max_shift=...)`` has seen, and the
    average is an ensemble of K views of each test image for K times the cost of one
    prediction.

    Args:
        apply: a `Layer`'s apply (``model.apply``), or any ``apply(params, x) -> logits``.
        max_shift: the largest shift in pixels, >= 0 (0 gives ``log_softmax`` of `apply`).
        mode: how images are shifted: ``"zeros"`` (as `train.random_shift` does; default) or
            ``"circular"``.

    Returns:
        ``averaged(params, x, *, state=None, key=None, train=False)``, called like `apply`:
        log-probabilities of shape (N, num_classes), or ``(log-probabilities, state)`` when
        `state` is given (evaluation does not change the state). For evaluation only:
        ``train=True`` is an error.

    Example:
        >>> loss, acc = evaluate(shift_averaged(model.apply, 1), params, x_test, y_test,
        ...                      state=state)

    Introduced in chapter 06, notebooks/06-training.ipynb.
    """
    where = "shift_averaged"
    _check_callable(apply, "apply", where, what="a model's apply(params, x) -> logits",
                    fix="Pass model.apply.")
    max_shift = _check_nonnegative_int(max_shift, "max_shift", where)
    mode = _check_mode(mode, where)
    offsets = [(dy, dx) for dy in range(-max_shift, max_shift + 1)
               for dx in range(-max_shift, max_shift + 1)]

    def averaged(params, x, *, state=None, train=False, **kwargs):
        if train:
            raise ValueError(
                f"{where}: the averaged model is for evaluation; got train=True. Train the "
                f"model itself (augment=functools.partial(random_shift, max_shift="
                f"{max_shift})) and average its predictions afterwards."
            )
        check_nhwc(x, where)
        check_max_shift(max_shift, x.shape, where)
        log_p = []
        for dy, dx in offsets:
            moved = shift(x, dy, dx, mode=mode)
            if state is None:
                logits = apply(params, moved, **kwargs)
            else:
                logits, _ = apply(params, moved, state=state, **kwargs)
            log_p.append(jax.nn.log_softmax(logits, axis=-1))  # (N, num_classes)
        mean = jax.nn.logsumexp(jnp.stack(log_p), axis=0) - np.log(len(offsets))
        return mean if state is None else (mean, state)

    return averaged


def shift_sensitivity(f: Callable[[jax.Array], Any], x: Any, *, mode: str = "zeros") -> float:
    """How far a one-pixel shift moves a representation, relative to how far images are apart.

    ``mean_n ||f(shift(x_n)) - f(x_n)|| / mean_n ||f(x_m(n)) - f(x_n)||``, the numerator
    averaged over the four one-pixel shifts (down, up, right, left), the denominator over
    pairs of different images of `x` (image n paired with image N - 1 - n). Every output is
    flattened. 0 means a one-pixel shift changes nothing; values near the pixels' own ratio
    mean the representation is as sensitive to the shift as the image itself. Dividing by
    the distance between images makes layers of different sizes and scales comparable: a
    layer that merely shrinks every number scores the same.

    Args:
        f: maps an (N, H, W, C) batch to an array with a leading axis N (any other shape).
        x: floating array (N, H, W, C), N >= 2, not all images equal.
        mode: how the images are shifted: ``"zeros"`` (default) or ``"circular"``.

    Returns:
        A Python float >= 0.

    Example:
        >>> x = jax.random.uniform(jax.random.key(0), (16, 8, 8, 1))
        >>> round(shift_sensitivity(lambda v: v.mean(axis=(1, 2)), x, mode="circular"), 6)
        0.0

    Introduced in chapter 05, notebooks/05-hierarchy.ipynb.
    """
    where = "shift_sensitivity"
    _check_callable(f, "f", where)
    check_nhwc(x, where)
    mode = _check_mode(mode, where)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"{where}: `x` must hold at least 2 images; got {n}.")

    def flat(batch):
        out = jnp.asarray(f(batch))
        return out.reshape(n, -1)

    base = flat(x)
    apart = float(jnp.mean(jnp.linalg.norm(base - base[::-1], axis=1)))
    if apart == 0:
        raise ValueError(f"{where}: `f` gives every image of `x` the same output; nothing to "
                         f"compare a shift with.")
    moved = [float(jnp.mean(jnp.linalg.norm(flat(shift(x, dy, dx, mode=mode)) - base, axis=1)))
             for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    return float(np.mean(moved)) / apart


def _nearest(d: int, stride: int) -> list[int]:
    """The integer output shifts nearest to d / stride (one if exact, else floor and ceil)."""
    low = d // stride
    return [low] if d % stride == 0 else [low, low + 1]


def _classes(predict: Callable, x: jax.Array, where: str) -> np.ndarray:
    scores = np.asarray(predict(x))
    if scores.ndim != 2 or scores.shape[0] != x.shape[0]:
        raise ValueError(
            f"{where}: `predict` must return scores of shape (batch, classes); got "
            f"{scores.shape} for a batch of {x.shape[0]}."
        )
    return scores.argmax(axis=1)


def _check_callable(
    f: Any,
    name: str,
    where: str,
    what: str = "a function from an (N, H, W, C) batch to scores (N, classes)",
    fix: str = "Pass e.g. lambda x: apply(params, x).",
) -> None:
    if not callable(f):
        raise TypeError(f"{where}: `{name}` must be {what}; got {type(f).__name__}. {fix}")


def _check_mode(mode: Any, where: str) -> str:
    if mode not in MODES:
        raise ValueError(
            f"{where}: `mode` must be one of {MODES}; got {mode!r}."
        )
    return mode


def _check_offsets(value: Any, name: str, n: int, where: str) -> jax.Array:
    """An int, or an int array of shape (n,), as an int32 array of shape (n,)."""
    if _is_int(value):
        return jnp.full((n,), int(value), jnp.int32)
    dtype = getattr(value, "dtype", None)
    if dtype is not None and np.issubdtype(np.dtype(dtype), np.integer):
        if tuple(value.shape) == (n,):
            return jnp.asarray(value, jnp.int32)
        raise ValueError(
            f"{where}: `{name}` must be an int or an int array of shape ({n},), one shift "
            f"per image; got shape {tuple(value.shape)}."
        )
    raise TypeError(
        f"{where}: `{name}` must be an int (whole pixels) or an int array of shape ({n},); "
        f"got {value!r} of type {type(value).__name__}. Round it with int({name})."
    )


def _check_nonnegative_int(value: Any, name: str, where: str) -> int:
    if not _is_int(value):
        raise TypeError(
            f"{where}: `{name}` must be a non-negative int; got {value!r} of type "
            f"{type(value).__name__}."
        )
    if value < 0:
        raise ValueError(f"{where}: `{name}` must be a non-negative int; got {value!r}.")
    return int(value)
