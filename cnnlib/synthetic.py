"""A synthetic image set whose classes are defined by the arrangement of parts, and its control.

Introduced in chapter 05, notebooks/05-hierarchy.ipynb, for the depth-versus-width experiment.

`parts` draws small greyscale images containing 3 x 3 *primitives* ("plus", "ring", "diagonal",
"bar"), a few distractor pixels and Gaussian noise, from a NumPy seed (so the same seed gives
the same images on every machine and JAX version):

- ``task="arrangement"``: every image holds one plus and one ring; the class says where the
  ring is relative to the plus (right, left, below, above), at a distance of 3 to 11 pixels
  (centre to centre) with up to 2 pixels of sideways jitter, anywhere in the image. Every
  class contains the same two parts; only their arrangement differs.
- ``task="single"`` (the control): every image holds one primitive; the class says which. A
  unit that sees 3 x 3 pixels can tell them apart; no arrangement is involved.
"""

from __future__ import annotations

import numpy as np

from cnnlib._validate import check_positive_int

#: The four 3 x 3 primitives, in class order for ``task="single"``.
PRIMITIVES = {
    "plus": np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.float32),
    "ring": np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], np.float32),
    "diagonal": np.eye(3, dtype=np.float32),
    "bar": np.array([[0, 0, 0], [1, 1, 1], [0, 0, 0]], np.float32),
}
#: Class names for ``task="arrangement"``: where the ring is, seen from the plus.
RELATIONS = ("right", "left", "below", "above")
TASKS = ("arrangement", "single")


def parts(
    n: int,
    task: str = "arrangement",
    *,
    seed: int = 0,
    size: int = 20,
    distance: tuple[int, int] = (3, 11),
    jitter: int = 2,
    distractors: int = 4,
    noise: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw `n` images of parts and their labels (4 classes), reproducibly from `seed`.

    Args:
        n: number of images, >= 1.
        task: "arrangement" (class = where the ring lies relative to the plus) or "single"
            (class = which primitive the image holds).
        seed: NumPy seed; the same seed gives the same images.
        size: image height and width in pixels, >= 3 + the largest distance.
        distance: smallest and largest centre-to-centre distance of the two parts.
        jitter: largest sideways offset of the ring, in pixels.
        distractors: pixels set to 1 at random places in every image.
        noise: standard deviation of the Gaussian noise added to every pixel.

    Returns:
        ``(x, y)``: float32 images (n, size, size, 1) with values about 0 to 1, and int labels
        (n,) in 0..3 (names in `RELATIONS` or the keys of `PRIMITIVES`).

    Example:
        >>> x, y = parts(8, "arrangement", seed=0)
        >>> x.shape, x.dtype, sorted(set(y.tolist())) <= [0, 1, 2, 3]
        ((8, 20, 20, 1), dtype('float32'), True)

    Introduced in chapter 05, notebooks/05-hierarchy.ipynb.
    """
    where = "parts"
    n = check_positive_int(n, "n", where)
    size = check_positive_int(size, "size", where)
    if task not in TASKS:
        raise ValueError(f"{where}: `task` must be one of {TASKS}; got {task!r}.")
    low, high = distance
    if not 1 <= low <= high or size < 3 + high + jitter:
        raise ValueError(
            f"{where}: `distance` must be (low, high) with 1 <= low <= high, and `size` at "
            f"least 3 + high + jitter = {3 + high + jitter}; got distance {distance}, size {size}."
        )
    rng = np.random.default_rng(seed)
    x = np.zeros((n, size, size), np.float32)
    y = rng.integers(0, 4, n)
    names = list(PRIMITIVES)
    for i in range(n):
        if task == "arrangement":
            d, side = rng.integers(low, high + 1), rng.integers(-jitter, jitter + 1)
            dy, dx = [(side, d), (side, -d), (d, side), (-d, side)][y[i]]  # ring minus plus
            top = rng.integers(max(0, -dy), size - 3 - max(0, dy) + 1)
            left = rng.integers(max(0, -dx), size - 3 - max(0, dx) + 1)
            _stamp(x[i], PRIMITIVES["plus"], top, left)
            _stamp(x[i], PRIMITIVES["ring"], top + dy, left + dx)
        else:
            top, left = rng.integers(0, size - 2, 2)
            _stamp(x[i], PRIMITIVES[names[y[i]]], top, left)
        rows, cols = rng.integers(0, size, distractors), rng.integers(0, size, distractors)
        x[i, rows, cols] = 1.0
    x += rng.normal(0.0, noise, x.shape).astype(np.float32)
    return x[..., None], y


def _stamp(image, pattern, top, left):
    """Draw a 3 x 3 pattern with its top-left corner at (top, left), keeping what is there."""
    window = image[top : top + 3, left : left + 3]
    np.maximum(window, pattern, out=window)
