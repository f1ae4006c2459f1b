"""cnnlib.layers.Dropout: identity at evaluation, inverted scaling in training, the dropped
fraction within binomial bounds, determinism for a key, zero gradient on dropped units."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnlib.layers import Dropout, init_params

X = jax.random.uniform(jax.random.key(1), (64, 32, 32, 3)) + 0.5  # no zeros: drops are visible


def test_evaluation_is_the_identity_and_needs_no_key():
    layer = Dropout(0.3)
    assert init_params(layer, jax.random.key(0), (-1, 32, 32, 3)) == ((-1, 32, 32, 3), {})
    np.testing.assert_array_equal(layer.apply({}, X), X)
    np.testing.assert_array_equal(layer.apply({}, X, train=False, key=jax.random.key(0)), X)
    np.testing.assert_array_equal(Dropout(0.0).apply({}, X, train=True), X)  # rate 0: identity


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_training_drops_the_rate_within_binomial_bounds_and_scales_the_rest(rate):
    y = np.asarray(Dropout(rate).apply({}, X, key=jax.random.key(2), train=True))
    n = y.size  # 196,608 independent units
    dropped = np.count_nonzero(y == 0)
    sd = np.sqrt(n * rate * (1 - rate))
    assert abs(dropped - n * rate) < 5 * sd  # fails with probability < 1e-6
    kept = y != 0
    np.testing.assert_allclose(y[kept], np.asarray(X)[kept] / (1 - rate), rtol=1e-6)


def test_expected_value_is_preserved():
    ones = jnp.ones((400_000,))
    y = Dropout(0.5).apply({}, ones, key=jax.random.key(3), train=True)
    # Each unit is 0 or 2 with probability 1/2: mean 1, standard deviation 1 / sqrt(n).
    assert abs(float(y.mean()) - 1.0) < 5 / np.sqrt(400_000)


def test_deterministic_for_a_key_and_different_across_keys():
    layer = Dropout(0.5)
    a = layer.apply({}, X, key=jax.random.key(4), train=True)
    np.testing.assert_array_equal(a, layer.apply({}, X, key=jax.random.key(4), train=True))
    assert not np.array_equal(a, layer.apply({}, X, key=jax.random.key(5), train=True))
    jitted = jax.jit(lambda x, k: layer.apply({}, x, key=k, train=True))
    np.testing.assert_array_equal(jitted(X, jax.random.key(4)), a)


def test_gradient_is_zero_on_dropped_units_and_the_scale_on_kept_ones():
    layer = Dropout(0.25)
    key = jax.random.key(6)
    y = layer.apply({}, X, key=key, train=True)
    grad = jax.grad(lambda x: layer.apply({}, x, key=key, train=True).sum())(X)
    np.testing.assert_array_equal(grad == 0, y == 0)
    np.testing.assert_allclose(grad[y != 0], 1 / 0.75, rtol=1e-6)


def test_errors():
    for bad in (1.0, -0.1, 1.5, "0.5", True, None):
        with pytest.raises(ValueError, match=r"Dropout: `rate` must be a number in \[0, 1\), the "
                           r"probability of dropping a unit; got"):
            Dropout(bad)
    with pytest.raises(ValueError, match=r"Dropout: training \(train=True\) draws which units to "
                       r"drop and needs a `key`; got key=None\. Pass key=\.\.\. to apply"):
        Dropout(0.5).apply({}, X, train=True)
    with pytest.raises(TypeError, match=r"Dropout: `key` must be one JAX random key such as "
                       r"jax\.random\.key\(0\); got int 3"):
        Dropout(0.5).apply({}, X, train=True, key=3)
