"""Image statistics: the empirical basis of locality.

Introduced in chapter 03, notebooks/03-locality.ipynb. Nearby pixels of real images are
strongly correlated and the correlation decays with distance (`pixel_correlation`); the
power spectrum falls off as a power law ``P(f) ~ A / f**alpha`` with alpha near 2
(`radial_power_spectrum`, `fit_power_law`). `permute_pixels` scrambles the pixel grid with
one fixed permutation, which destroys that spatial structure and keeps every pixel value.

All functions take batched NHWC images, float, as elsewhere in cnnlib; channels are treated
as further independent images. They return float64 NumPy arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnlib._validate import check_nhwc, check_positive_int

AXES = ("width", "height", "both")


def pixel_correlation(x: Any, max_distance: int, axis: str = "both") -> np.ndarray:
    """Pearson correlation between pixels `d` apart, for d = 0, 1, ..., max_distance.

    For a horizontal offset d, the pairs are ``(x[n, i, j, c], x[n, i, j + d, c])`` for every
    image, row, column and channel where both exist; the result is the Pearson correlation of
    the two lists (each centred by its own mean). Vertical offsets likewise.

    Args:
        x: floating array of shape (N, H, W, C).
        max_distance: largest offset, >= 1 and smaller than the image along `axis`.
        axis: "width" (offsets along rows), "height" (along columns), or "both" (the mean of
            the two correlations).

    Returns:
        Array of shape (max_distance + 1,), float64; entry 0 is 1 (a pixel with itself).

    Raises:
        TypeError: `x` is not a floating array, or `max_distance` is not an int.
        ValueError: `x` is not 4-D, `axis` is unknown, `max_distance` does not fit, or the
            pixels at some offset are constant (the correlation is undefined).

    Example:
        >>> x = np.cumsum(np.random.default_rng(0).normal(size=(1, 1, 500, 1)), axis=2)
        >>> pixel_correlation(x, 2, axis="width").shape  # a random walk: close to 1
        (3,)

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """
    where = "pixel_correlation"
    check_nhwc(x, where)
    max_distance = check_positive_int(max_distance, "max_distance", where)
    if axis not in AXES:
        raise ValueError(f"{where}: `axis` must be one of {AXES}; got {axis!r}.")
    x = np.asarray(x, np.float64)
    if axis == "both":
        return (
            pixel_correlation(x, max_distance, "width")
            + pixel_correlation(x, max_distance, "height")
        ) / 2
    if axis == "height":
        x = x.transpose(0, 2, 1, 3)  # rows become columns
    width = x.shape[2]
    if max_distance >= width:
        raise ValueError(
            f"{where}: `max_distance` must be smaller than the image's {axis} {width}; got "
            f"{max_distance}. Use max_distance <= {width - 1}."
        )
    corr = np.empty(max_distance + 1)
    for d in range(max_distance + 1):
        a = x[:, :, : width - d].ravel()  # left pixel of each pair
        b = x[:, :, d:].ravel()  # the pixel d to its right
        a, b = a - a.mean(), b - b.mean()
        norm = np.sqrt((a @ a) * (b @ b))
        if norm == 0:
            raise ValueError(
                f"{where}: the pixels at offset {d} are constant, so their correlation is "
                f"undefined. Pass images that vary."
            )
        corr[d] = (a @ b) / norm
    return corr


def radial_power_spectrum(x: Any, window: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Power spectrum averaged over images and over rings of equal spatial frequency.

    Each (H, W) image (each channel of each image) has its mean removed, is multiplied by a
    2-D Hann window when `window` is True (so the jump between opposite edges of the image
    does not add spurious high-frequency power), and is transformed:
    ``P[k, l] = |sum_{r, s} x[r, s] exp(-2 pi i (k r / H + l s / W))|**2 / (H W)``.
    The frequency of (k, l) is ``f = sqrt(fy**2 + fx**2)`` in cycles per pixel
    (``np.fft.fftfreq``). With step ``1 / min(H, W)``, ring b holds the frequencies with
    ``(b - 1/2) step <= f < (b + 1/2) step`` (f / step rounded half up to b), for
    b = 1, ..., min(H, W) // 2 (up to 0.5, the Nyquist frequency); its power is the mean of P
    over the ring and over the images.

    Args:
        x: floating array of shape (N, H, W, C), H and W >= 2.
        window: multiply by a Hann window before transforming.

    Returns:
        ``(freqs, power)``, two arrays of shape (min(H, W) // 2,), float64: ring frequencies
        in cycles per pixel, and the mean power on each ring.

    Raises:
        TypeError: `x` is not a floating array.
        ValueError: `x` is not 4-D or an image is smaller than 2 x 2.

    Example:
        >>> freqs, power = radial_power_spectrum(np.ones((2, 28, 28, 1)))
        >>> freqs.shape, float(power.max())  # a constant image has no power off DC
        ((14,), 0.0)

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """
    where = "radial_power_spectrum"
    check_nhwc(x, where)
    n, h, w, c = x.shape
    if min(h, w) < 2:
        raise ValueError(
            f"{where}: images must be at least 2 x 2 pixels; got (H, W) = {(h, w)}."
        )
    images = np.asarray(x, np.float64).transpose(0, 3, 1, 2).reshape(n * c, h, w)
    images = images - images.mean(axis=(1, 2), keepdims=True)  # no DC
    if window:
        images = images * np.outer(np.hanning(h), np.hanning(w))
    power = (np.abs(np.fft.fft2(images)) ** 2).mean(axis=0) / (h * w)  # (H, W)
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij"))
    step = 1.0 / min(h, w)
    # (H, W): the ring of each frequency; + 1e-9 rounds exact halves up despite float error.
    ring = np.floor(f / step + 0.5 + 1e-9).astype(int)
    rings = np.arange(1, min(h, w) // 2 + 1)
    total = np.bincount(ring.ravel(), power.ravel(), minlength=rings[-1] + 1)
    count = np.bincount(ring.ravel(), minlength=rings[-1] + 1)
    return rings * step, total[rings] / count[rings]


def fit_power_law(
    freqs: Any, power: Any, fmin: float | None = None, fmax: float | None = None
) -> tuple[float, float]:
    """Fit ``power = amplitude / freqs**alpha`` by least squares on the log-log scale.

    Args:
        freqs: positive frequencies, shape (K,).
        power: positive powers, shape (K,).
        fmin, fmax: use only frequencies in [fmin, fmax] (default: all).

    Returns:
        ``(alpha, amplitude)``, Python floats: minus the slope of log(power) against
        log(freqs), and exp of the intercept.

    Raises:
        ValueError: the shapes differ, a value in the range is not positive, or fewer than
            two frequencies lie in [fmin, fmax].

    Example:
        >>> f = np.array([0.1, 0.2, 0.4])
        >>> alpha, amplitude = fit_power_law(f, 3.0 / f**2)
        >>> round(alpha, 6), round(amplitude, 6)
        (2.0, 3.0)

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """
    f, p = _power_law_points(freqs, power, fmin, fmax, "fit_power_law")  # (K',), (K',)
    slope, intercept = np.polyfit(np.log(f), np.log(p), 1)  # a line through log-log points
    return float(-slope), float(np.exp(intercept))


def _power_law_points(freqs, power, fmin, fmax, where):
    """The (frequency, power) pairs in [fmin, fmax], checked: 1-D, two or more, positive."""
    freqs, power = np.asarray(freqs, np.float64), np.asarray(power, np.float64)
    if freqs.ndim != 1 or freqs.shape != power.shape:
        raise ValueError(
            f"{where}: `freqs` and `power` must be 1-D of the same length; got shapes "
            f"{freqs.shape} and {power.shape}. Pass the two outputs of radial_power_spectrum."
        )
    lo = -np.inf if fmin is None else fmin
    hi = np.inf if fmax is None else fmax
    keep = (freqs >= lo) & (freqs <= hi)
    if keep.sum() < 2:
        raise ValueError(
            f"{where}: need at least two frequencies in [fmin, fmax] = [{fmin}, {fmax}]; got "
            f"{int(keep.sum())}. Widen the range."
        )
    f, p = freqs[keep], power[keep]
    if (f <= 0).any() or (p <= 0).any():
        raise ValueError(
            f"{where}: `freqs` and `power` must be positive in [fmin, fmax] to take logs. "
            f"Drop the zero frequency (fmin > 0)."
        )
    return f, p


def permute_pixels(x: Any, perm: Any) -> Any:
    """Move every pixel (all its channels together) by one fixed permutation of the grid.

    ``out[n, i, j, :] = x[n, r, s, :]`` where ``r * W + s = perm[i * W + j]``: flattened in
    C order, ``out.reshape(N, H * W, C) == x.reshape(N, H * W, C)[:, perm]``. The same
    `perm` for every image, so the set of values in each image is unchanged and only their
    arrangement is scrambled. Undo it with ``permute_pixels(out, np.argsort(perm))``.

    Args:
        x: array of shape (N, H, W, C) (NumPy or JAX; the type is kept).
        perm: a permutation of 0, ..., H * W - 1, e.g.
            ``np.random.default_rng(0).permutation(H * W)``.

    Returns:
        Array of the shape and type of `x`.

    Raises:
        TypeError: `x` is not a floating array.
        ValueError: `x` is not 4-D, or `perm` is not a permutation of range(H * W).

    Example:
        >>> x = np.arange(4.0).reshape(1, 2, 2, 1)
        >>> permute_pixels(x, np.array([3, 2, 1, 0]))[0, :, :, 0]
        array([[3., 2.],
               [1., 0.]])

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """
    where = "permute_pixels"
    check_nhwc(x, where)
    n, h, w, c = x.shape
    perm = np.asarray(perm)
    if perm.shape != (h * w,) or not np.array_equal(np.sort(perm), np.arange(h * w)):
        raise ValueError(
            f"{where}: `perm` must be a permutation of range(H * W) = range({h * w}); got an "
            f"array of shape {perm.shape}. Use np.random.default_rng(0).permutation({h * w})."
        )
    return x.reshape(n, h * w, c)[:, perm].reshape(x.shape)
