"""cnnlib.stats against independent computations: explicit loops, np.corrcoef, a DFT written
from its definition, signals whose statistics are known in closed form."""

from __future__ import annotations

from fractions import Fraction

import jax.numpy as jnp
import numpy as np
import pytest

from cnnlib.stats import fit_power_law, permute_pixels, pixel_correlation, radial_power_spectrum


def images(n=3, h=7, w=9, c=2, seed=0):
    return np.random.default_rng(seed).normal(size=(n, h, w, c))


# pixel_correlation ------------------------------------------------------------------------


def correlation_loops(x, d, axis):
    """Collect the pairs one by one, then np.corrcoef."""
    a, b = [], []
    n, h, w, c = x.shape
    for k in range(n):
        for i in range(h):
            for j in range(w):
                for ch in range(c):
                    if axis == "width" and j + d < w:
                        a.append(x[k, i, j, ch])
                        b.append(x[k, i, j + d, ch])
                    if axis == "height" and i + d < h:
                        a.append(x[k, i, j, ch])
                        b.append(x[k, i + d, j, ch])
    return np.corrcoef(a, b)[0, 1]


@pytest.mark.parametrize("axis", ["width", "height"])
def test_correlation_matches_loops(axis):
    x = np.cumsum(images(), axis=2) + np.cumsum(images(seed=1), axis=1)  # correlated pixels
    got = pixel_correlation(x, 5, axis=axis)
    want = [correlation_loops(x, d, axis) for d in range(6)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_both_is_mean_of_width_and_height():
    x = np.cumsum(images(h=8, w=8), axis=1)
    got = pixel_correlation(x, 4)
    want = (pixel_correlation(x, 4, "width") + pixel_correlation(x, 4, "height")) / 2
    np.testing.assert_allclose(got, want)
    assert got[0] == pytest.approx(1.0)


def test_ar1_process_has_geometric_correlation():
    # x[t + 1] = rho x[t] + sqrt(1 - rho^2) e[t], stationary: corr(d) = rho^d exactly.
    rho, length = 0.8, 200_000
    rng = np.random.default_rng(0)
    e = rng.normal(size=length)
    x = np.empty(length)
    x[0] = e[0]
    for t in range(1, length):
        x[t] = rho * x[t - 1] + np.sqrt(1 - rho**2) * e[t]
    got = pixel_correlation(x.reshape(1, 1, length, 1), 4, axis="width")
    np.testing.assert_allclose(got, rho ** np.arange(5), atol=0.01)


def test_white_noise_is_uncorrelated():
    got = pixel_correlation(images(n=20, h=40, w=40, c=1), 3)
    assert got[0] == pytest.approx(1.0)
    assert np.abs(got[1:]).max() < 0.02


def test_correlation_accepts_jax_float32():
    x = np.cumsum(images(), axis=2)
    got = pixel_correlation(jnp.asarray(x, jnp.float32), 3, "width")
    np.testing.assert_allclose(got, pixel_correlation(x, 3, "width"), rtol=1e-5)


def test_correlation_errors():
    with pytest.raises(ValueError, match=r"pixel_correlation: `x` must have shape \(N, H, W, C\)"):
        pixel_correlation(np.zeros((4, 4)), 1)
    with pytest.raises(TypeError, match="pixel_correlation: `x` must have a floating dtype"):
        pixel_correlation(np.zeros((1, 4, 4, 1), np.uint8), 1)
    with pytest.raises(ValueError, match="pixel_correlation: `axis` must be one of"):
        pixel_correlation(images(), 1, axis="diagonal")
    with pytest.raises(ValueError, match="`max_distance` must be smaller than the image's width 9"):
        pixel_correlation(images(), 9, axis="width")
    with pytest.raises(ValueError, match="`max_distance` must be smaller than the image's height 7"):
        pixel_correlation(images(), 7)
    with pytest.raises(TypeError, match="pixel_correlation: `max_distance` must be a positive int"):
        pixel_correlation(images(), 1.5)
    with pytest.raises(ValueError, match="pixel_correlation: the pixels at offset 0 are constant"):
        pixel_correlation(np.ones((1, 4, 4, 1)), 1)


# radial_power_spectrum --------------------------------------------------------------------


def spectrum_loops(x, window):
    """The DFT from its definition and the ring averages, one frequency at a time."""
    n, h, w, c = x.shape
    step = 1 / min(h, w)
    sums, counts = {}, {}
    for k in range(n):
        for ch in range(c):
            img = x[k, :, :, ch] - x[k, :, :, ch].mean()
            if window:
                img = img * np.outer(np.hanning(h), np.hanning(w))
            for u in range(h):
                for v in range(w):
                    coef = sum(
                        img[r, s] * np.exp(-2j * np.pi * (u * r / h + v * s / w))
                        for r in range(h)
                        for s in range(w)
                    )
                    # Exact rational frequencies (as np.fft.fftfreq), then the ring b with
                    # (b - 1/2)^2 <= (f / step)^2 < (b + 1/2)^2: f / step rounded half up.
                    fy = Fraction(u, h) if u < (h + 1) // 2 else Fraction(u, h) - 1
                    fx = Fraction(v, w) if v < (w + 1) // 2 else Fraction(v, w) - 1
                    f2 = (fy**2 + fx**2) * min(h, w) ** 2
                    ring = 0
                    while (ring + Fraction(1, 2)) ** 2 <= f2:
                        ring += 1
                    sums[ring] = sums.get(ring, 0.0) + abs(coef) ** 2 / (h * w)
                    counts[ring] = counts.get(ring, 0) + 1
    rings = range(1, min(h, w) // 2 + 1)
    return np.array([b * step for b in rings]), np.array([sums[b] / counts[b] for b in rings])


@pytest.mark.parametrize("window", [True, False])
@pytest.mark.parametrize("shape", [(2, 6, 8, 1), (1, 7, 5, 2)])
def test_spectrum_matches_definition(window, shape):
    x = images(*shape)
    freqs, power = radial_power_spectrum(x, window=window)
    want_f, want_p = spectrum_loops(x, window)
    np.testing.assert_allclose(freqs, want_f)
    np.testing.assert_allclose(power, want_p, rtol=1e-10)


def test_sinusoid_puts_its_power_on_its_ring():
    # cos(2 pi 5 s / 32) along the width: power only at (fy, fx) = (0, +-5/32), ring 5.
    s = np.arange(32)
    x = np.tile(np.cos(2 * np.pi * 5 * s / 32), (32, 1))[None, :, :, None]
    freqs, power = radial_power_spectrum(x, window=False)
    assert freqs[4] == pytest.approx(5 / 32)
    assert np.argmax(power) == 4
    # Parseval: all the energy sum(x^2) = 32 * 32 / 2 sits in the two coefficients of ring 5;
    # P = |X|^2 / (H W) sums to sum(x^2) over all (u, v), and ring 5 holds `count` points.
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(32), np.fft.fftfreq(32), indexing="ij"))
    count = (np.rint(f * 32) == 5).sum()
    assert power[4] * count == pytest.approx(32 * 32 / 2)
    np.testing.assert_allclose(np.delete(power, 4), 0, atol=1e-20)


def power_law_noise(size, alpha, seed=0):
    """Gaussian noise whose power spectrum is exactly proportional to 1 / f^alpha."""
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij"))
    f[0, 0] = np.inf  # no DC
    noise = np.fft.fft2(np.random.default_rng(seed).normal(size=(size, size)))
    return np.real(np.fft.ifft2(noise * f ** (-alpha / 2)))


@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.0])
def test_fit_recovers_exponent_of_power_law_noise(alpha):
    x = np.stack([power_law_noise(128, alpha, seed) for seed in range(4)])[..., None]
    freqs, power = radial_power_spectrum(x, window=False)
    fitted, _ = fit_power_law(freqs, power, fmin=2 / 128, fmax=0.4)
    assert fitted == pytest.approx(alpha, abs=0.1)


def test_constant_image_has_no_power():
    _, power = radial_power_spectrum(np.full((1, 8, 8, 1), 3.0))
    np.testing.assert_allclose(power, 0, atol=1e-25)


def test_spectrum_errors():
    with pytest.raises(ValueError, match=r"radial_power_spectrum: `x` must have shape"):
        radial_power_spectrum(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="radial_power_spectrum: images must be at least 2 x 2"):
        radial_power_spectrum(np.zeros((1, 1, 8, 1)))


# fit_power_law ----------------------------------------------------------------------------


def test_fit_exact_power_law_and_range():
    f = np.linspace(0.01, 0.5, 50)
    p = np.where(f < 0.2, 7.0 / f**2.5, 1.0)  # a power law only below 0.2
    alpha, amplitude = fit_power_law(f, p, fmax=0.19)
    assert alpha == pytest.approx(2.5) and amplitude == pytest.approx(7.0)


def test_fit_errors():
    f = np.array([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="fit_power_law: `freqs` and `power` must be 1-D"):
        fit_power_law(f, f[:2])
    with pytest.raises(ValueError, match="fit_power_law: need at least two frequencies"):
        fit_power_law(f, f, fmin=0.25)
    with pytest.raises(ValueError, match="fit_power_law: `freqs` and `power` must be positive"):
        fit_power_law(np.array([0.0, 0.1]), np.array([1.0, 1.0]))


# permute_pixels ---------------------------------------------------------------------------


def test_permute_matches_loops_and_inverts():
    x = images(n=2, h=3, w=4, c=2)
    perm = np.random.default_rng(1).permutation(12)
    out = permute_pixels(x, perm)
    for n in range(2):
        for i in range(3):
            for j in range(4):
                r, s = divmod(perm[i * 4 + j], 4)
                np.testing.assert_array_equal(out[n, i, j], x[n, r, s])
    np.testing.assert_array_equal(permute_pixels(out, np.argsort(perm)), x)


def test_permute_keeps_type_and_values():
    x = jnp.asarray(images(c=1), jnp.float32)
    out = permute_pixels(x, np.random.default_rng(0).permutation(63))
    assert isinstance(out, type(x)) and out.shape == x.shape
    np.testing.assert_array_equal(np.sort(np.asarray(out).ravel()), np.sort(np.asarray(x).ravel()))


def test_permute_errors():
    x = images(h=2, w=2)
    with pytest.raises(ValueError, match=r"permute_pixels: `perm` must be a permutation of range\(H \* W\) = range\(4\)"):
        permute_pixels(x, np.arange(5))
    with pytest.raises(ValueError, match="permute_pixels: `perm` must be a permutation"):
        permute_pixels(x, np.array([0, 0, 1, 2]))
    with pytest.raises(ValueError, match=r"permute_pixels: `x` must have shape \(N, H, W, C\)"):
        permute_pixels(np.zeros((2, 2)), np.arange(4))
