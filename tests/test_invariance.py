"""cnnlib.invariance against independent NumPy computations (np.roll, explicit loops)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnlib import avg_pool
from cnnlib.layers import (
    BatchNorm,
    Conv,
    Dense,
    GlobalAvgPool,
    Relu,
    init_params,
    init_state,
    serial,
)
from cnnlib.invariance import (
    accuracy_vs_shift,
    equivariance_error,
    random_shifts,
    shift,
    shift_averaged,
    shift_consistency,
    shift_sensitivity,
)
from cnnlib.train import evaluate


def images(n=3, h=7, w=9, c=2, seed=0):
    return np.random.default_rng(seed).normal(size=(n, h, w, c)).astype(np.float32)


def zero_shift_loop(x, dy, dx):
    """out[n, i, j] = x[n, i - dy, j - dx] where inside, else 0: written as loops."""
    out = np.zeros_like(x)
    _, h, w, _ = x.shape
    for i in range(h):
        for j in range(w):
            if 0 <= i - dy < h and 0 <= j - dx < w:
                out[:, i, j] = x[:, i - dy, j - dx]
    return out


@pytest.mark.parametrize("dy, dx", [(0, 0), (1, 0), (0, -2), (3, 4), (-8, 11), (7, 9)])
def test_circular_shift_is_np_roll(dy, dx):
    x = images()
    np.testing.assert_array_equal(shift(x, dy, dx), np.roll(x, (dy, dx), axis=(1, 2)))


@pytest.mark.parametrize("dy, dx", [(0, 0), (1, 0), (0, -2), (3, 4), (-6, 2), (7, 9)])
def test_zero_shift_matches_loops(dy, dx):
    x = images()
    np.testing.assert_array_equal(shift(x, dy, dx, mode="zeros"), zero_shift_loop(x, dy, dx))


@pytest.mark.parametrize("mode", ["circular", "zeros"])
def test_per_image_shifts(mode):
    x = images(n=4)
    dy, dx = np.array([0, 1, -2, 3]), np.array([2, 0, -1, -3])
    got = shift(x, dy, dx, mode=mode)
    for n in range(4):
        one = x[n : n + 1]
        want = (
            np.roll(one, (dy[n], dx[n]), axis=(1, 2))
            if mode == "circular"
            else zero_shift_loop(one, dy[n], dx[n])
        )
        np.testing.assert_array_equal(got[n : n + 1], want)


def test_circular_shift_is_invertible_and_keeps_dtype():
    x = images().astype(np.float16)
    y = shift(x, 2, -3)
    assert y.dtype == jnp.float16
    np.testing.assert_array_equal(shift(y, -2, 3), x)


def test_random_shifts_range_and_coverage():
    s = random_shifts(jax.random.key(0), 2000, 2)
    assert s.shape == (2000, 2) and s.dtype == np.int32
    assert set(np.unique(s)) == {-2, -1, 0, 1, 2}
    assert np.all(random_shifts(jax.random.key(1), 5, 0) == 0)


def test_equivariance_error_zero_for_pointwise_and_circular_conv():
    x = images(n=2, h=8, w=8, c=1).astype(np.float64)
    k = np.array([[0.0, 1.0, 0.0], [2.0, -4.0, 1.0], [0.0, 3.0, 0.0]])

    def conv(v):  # circular cross-correlation written with np.roll
        v = np.asarray(v)
        return sum(k[a, b] * np.roll(v, (1 - a, 1 - b), axis=(1, 2)) for a in range(3) for b in range(3))

    assert equivariance_error(jnp.tanh, x, 3, -1) < 1e-6
    assert equivariance_error(conv, x, 2, 5) < 1e-6


def test_equivariance_error_of_subsampling_known_values():
    # rows alternate 1, 2: keeping even rows gives all ones; shifted by one row, all twos.
    x = (1.0 + (np.arange(8)[:, None] % 2) * np.ones((8, 8)))[None, ..., None]

    def subsample(v):
        return np.asarray(v)[:, ::2, ::2]

    assert equivariance_error(subsample, x, 2, 0, stride=2) == 0.0
    assert equivariance_error(subsample, x, 1, 0, stride=2) == pytest.approx(1.0)
    # on a random image: the error is the distance to the nearest of the candidate shifts
    r = images(n=1, h=8, w=8, c=1).astype(np.float64)
    ys = np.roll(r, 1, axis=1)[:, ::2, ::2]  # f(shift(r, 1, 0)): the odd rows, circularly
    y = subsample(r)
    want = min(
        np.linalg.norm(ys - np.roll(y, e, axis=1)) / np.linalg.norm(y) for e in (0, 1)
    )
    assert equivariance_error(subsample, r, 1, 0, stride=2) == pytest.approx(want, rel=1e-6)


def test_equivariance_error_border_and_zero_mode():
    x = images(n=1, h=10, w=10, c=1).astype(np.float64)

    def weight_by_row(v):  # not equivariant: multiplies row i by i
        return np.asarray(v) * np.arange(10)[None, :, None, None]

    ys = weight_by_row(zero_shift_loop(x, 1, 0))
    want = np.linalg.norm((ys - zero_shift_loop(weight_by_row(x), 1, 0))[:, 2:8, 2:8])
    want /= np.linalg.norm(weight_by_row(x)[:, 2:8, 2:8])
    got = equivariance_error(weight_by_row, x, 1, 0, mode="zeros", border=2)
    assert got == pytest.approx(want, rel=1e-6)


def one_hot_pixel_images(cols):
    """Images with one bright pixel in row 4, column cols[n]."""
    x = np.zeros((len(cols), 9, 9, 1), np.float32)
    x[np.arange(len(cols)), 4, cols, 0] = 1.0
    return x


def parity_classifier(v):
    """Class = parity of the column of the brightest pixel (position-dependent)."""
    col = np.asarray(v)[..., 0].max(axis=1).argmax(axis=1)
    return np.eye(2)[col % 2]


def test_shift_consistency_matches_loop_with_the_same_draws():
    x = one_hot_pixel_images(np.arange(300) % 5 + 2)
    key = jax.random.key(3)
    got = shift_consistency(parity_classifier, x, max_shift=2, key=key, batch_size=64)
    ka, kb = jax.random.split(key)
    a, b = random_shifts(ka, 300, 2), random_shifts(kb, 300, 2)
    # the pixel moves from column c to c + dx; predictions agree iff dx_a, dx_b have equal parity
    want = np.mean((a[:, 1] - b[:, 1]) % 2 == 0)
    assert got == pytest.approx(want)
    assert 0.3 < got < 0.8  # (3/5)^2 + (2/5)^2 = 0.52 in expectation


def test_shift_consistency_is_one_for_an_invariant_classifier():
    x = images(n=50, c=3)
    got = shift_consistency(lambda v: v.mean(axis=(1, 2)), x, max_shift=4, key=jax.random.key(0))
    assert got == 1.0


def test_accuracy_vs_shift_matches_loop():
    cols = np.arange(40) % 9
    x = one_hot_pixel_images(cols)
    labels = cols % 2
    got = accuracy_vs_shift(parity_classifier, x, labels, [0, 1, 2, 3], batch_size=16)
    want = []
    for k in range(4):
        hits = [
            parity_classifier(zero_shift_loop(x, dy, dx)).argmax(axis=1) == labels
            for dy, dx in ((k, 0), (-k, 0), (0, k), (0, -k))
        ]
        want.append(np.mean(hits))
    np.testing.assert_allclose(got, want)
    assert got[0] == 1.0 and got.dtype == np.float64


def test_errors_name_the_argument():
    x = images()
    with pytest.raises(ValueError, match=r"shift: `x` must have shape \(N, H, W, C\)"):
        shift(x[0], 1, 1)
    with pytest.raises(ValueError, match="shift: `mode` must be one of"):
        shift(x, 1, 1, mode="reflect")
    with pytest.raises(TypeError, match="shift: `dy` must be an int"):
        shift(x, 0.5, 1)
    with pytest.raises(ValueError, match=r"shift: `dx` must be an int or an int array of shape \(3,\)"):
        shift(x, 1, np.array([1, 2]))
    with pytest.raises(TypeError, match="equivariance_error: `f` must be a function"):
        equivariance_error("conv", x, 1, 1)
    with pytest.raises(TypeError, match="equivariance_error: `dx` must be an int"):
        equivariance_error(jnp.tanh, x, 1, 1.0)
    with pytest.raises(ValueError, match="equivariance_error: `stride` must be a positive int"):
        equivariance_error(jnp.tanh, x, 1, 1, stride=0)
    with pytest.raises(ValueError, match="equivariance_error: `border`=4 leaves no output"):
        equivariance_error(jnp.tanh, x, 1, 1, border=4)
    with pytest.raises(ValueError, match="equivariance_error: `f` must return"):
        equivariance_error(lambda v: v.mean(axis=(1, 2)), x, 1, 1)
    with pytest.raises(TypeError, match="shift_consistency: `predict` must be a function"):
        shift_consistency(None, x, max_shift=1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="shift_consistency: `max_shift` must be a non-negative"):
        shift_consistency(jnp.tanh, x, max_shift=-1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="shift_consistency: `predict` must return scores"):
        shift_consistency(jnp.tanh, x, max_shift=1, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"accuracy_vs_shift: `y` must be integer labels of shape \(3,\)"):
        accuracy_vs_shift(lambda v: v.mean(axis=(1, 2)), x, np.zeros(2, int), [0])
    with pytest.raises(TypeError, match="accuracy_vs_shift: `shifts` must be an iterable"):
        accuracy_vs_shift(lambda v: v.mean(axis=(1, 2)), x, np.zeros(3, int), 3)
    with pytest.raises(ValueError, match="accuracy_vs_shift: `shifts` must be a non-negative"):
        accuracy_vs_shift(lambda v: v.mean(axis=(1, 2)), x, np.zeros(3, int), [-1])
    with pytest.raises(TypeError, match="random_shifts: `n` must be a positive int"):
        random_shifts(jax.random.key(0), 2.0, 1)


def test_shift_sensitivity_of_identity_pooling_and_scale():
    x = jax.random.uniform(jax.random.key(0), (32, 10, 10, 2))
    pixels = shift_sensitivity(lambda v: v, x)
    # Scaling a representation does not change its score; global averaging (circular) removes
    # the shift entirely; a 2x2 average pooling keeps less of it than the pixels.
    assert shift_sensitivity(lambda v: 3 * v, x) == pytest.approx(pixels, rel=1e-5)
    assert shift_sensitivity(lambda v: v.mean(axis=(1, 2)), x, mode="circular") < 1e-5
    pooled = shift_sensitivity(lambda v: avg_pool(v, 2), x)
    assert pooled < pixels
    # By hand for the pixels: mean distance under the four shifts over the distance to the
    # mirror-paired image.
    flat = np.asarray(x).reshape(32, -1)
    moved = np.mean([np.linalg.norm(np.asarray(shift(x, dy, dx, mode="zeros")).reshape(32, -1)
                                    - flat, axis=1).mean()
                     for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))])
    apart = np.linalg.norm(flat - flat[::-1], axis=1).mean()
    assert pixels == pytest.approx(moved / apart, rel=1e-5)
    with pytest.raises(ValueError, match=r"shift_sensitivity: `x` must hold at least 2 images"):
        shift_sensitivity(lambda v: v, x[:1])
    with pytest.raises(ValueError, match=r"gives every image of `x` the same output"):
        shift_sensitivity(lambda v: v.sum() * 0 + jnp.zeros((32, 1)), x)


def linear_classifier(seed=0, h=7, w=9, c=2, classes=4):
    """apply(params, x) -> logits: a dense map of the flattened image (not shift-invariant)."""
    wts = np.random.default_rng(seed).normal(size=(h * w * c, classes)).astype(np.float32)
    return wts, lambda p, v: v.reshape(v.shape[0], -1) @ p


@pytest.mark.parametrize("max_shift, mode", [(0, "zeros"), (1, "zeros"), (2, "circular")])
def test_shift_averaged_is_the_mean_probability_over_the_shifts(max_shift, mode):
    x = images()
    wts, apply = linear_classifier()
    got = np.asarray(shift_averaged(apply, max_shift, mode=mode)(wts, x))
    probs = []
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            moved = (np.roll(x, (dy, dx), axis=(1, 2)) if mode == "circular"
                     else zero_shift_loop(x, dy, dx))
            logits = moved.reshape(len(x), -1).astype(np.float64) @ wts
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs.append(e / e.sum(axis=1, keepdims=True))
    assert len(probs) == (2 * max_shift + 1) ** 2
    np.testing.assert_allclose(np.exp(got), np.mean(probs, axis=0), rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(np.exp(got).sum(axis=1), 1.0, rtol=1e-5)


def test_shift_averaged_changes_nothing_for_an_invariant_model():
    # Global average pooling after circular shifts sees the same pixels: every copy agrees.
    x = images()
    wts = np.random.default_rng(1).normal(size=(2, 3)).astype(np.float32)
    apply = lambda p, v: v.mean(axis=(1, 2)) @ p  # noqa: E731
    got = shift_averaged(apply, 2, mode="circular")(wts, x)
    np.testing.assert_allclose(got, jax.nn.log_softmax(apply(wts, x)), atol=1e-5)


def test_shift_averaged_model_with_state_in_evaluate():
    model = serial(Conv(4, 3, padding="SAME"), BatchNorm(), Relu(), GlobalAvgPool(), Dense(3))
    _, params = init_params(model, jax.random.key(0), (-1, 7, 9, 2))
    state = init_state(model, (-1, 7, 9, 2))
    state = jax.tree_util.tree_map(lambda s: s + 0.25, state)  # not the initial statistics
    x, y = images(n=10), np.arange(10) % 3
    averaged = shift_averaged(model.apply, 1)
    log_p, same_state = averaged(params, x, state=state)
    assert log_p.shape == (10, 3) and same_state is state
    want = np.mean([jax.nn.softmax(model.apply(params, shift(x, dy, dx, mode="zeros"),
                                               state=state)[0]) for dy in (-1, 0, 1)
                    for dx in (-1, 0, 1)], axis=0)
    np.testing.assert_allclose(np.exp(log_p), want, rtol=2e-5, atol=1e-7)
    loss, acc = evaluate(averaged, params, x, y, batch_size=4, state=state)
    assert acc == pytest.approx(np.mean(want.argmax(axis=1) == y))
    assert loss == pytest.approx(-np.mean(np.log(want[np.arange(10), y])), rel=1e-4)


def test_shift_averaged_errors_name_the_argument():
    x = images()
    wts, apply = linear_classifier()
    with pytest.raises(TypeError, match="shift_averaged: `apply` must be a model's apply"):
        shift_averaged("model", 1)
    with pytest.raises(ValueError, match="shift_averaged: `max_shift` must be a non-negative"):
        shift_averaged(apply, -1)
    with pytest.raises(TypeError, match="shift_averaged: `max_shift` must be a non-negative"):
        shift_averaged(apply, 1.5)
    with pytest.raises(ValueError, match="shift_averaged: `mode` must be one of"):
        shift_averaged(apply, 1, mode="reflect")
    with pytest.raises(ValueError, match="shift_averaged: the averaged model is for evaluation"):
        shift_averaged(apply, 1)(wts, x, train=True)
    with pytest.raises(ValueError, match=r"shift_averaged: `max_shift` must be an int in "
                                         r"0\.\.6 \(less than the image size 7 x 9\); got 7"):
        shift_averaged(apply, 7)(wts, x)
    with pytest.raises(ValueError, match=r"shift_averaged: `x` must have shape \(N, H, W, C\)"):
        shift_averaged(apply, 1)(wts, x[0])
