"""cnnlib.layers.normalization against NumPy loops from the definitions: BatchNorm in training
(batch statistics, running averages) and evaluation, LayerNorm, GroupNorm; gradients by finite
differences; dtypes; errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from cnnlib.layers import BatchNorm, GroupNorm, LayerNorm, init_params, init_state

KEY = jax.random.key(0)


def data(shape, seed=1):
    return np.random.default_rng(seed).normal(2.0, 3.0, size=shape).astype(np.float32)


def affine(c, seed=2):
    rng = np.random.default_rng(seed)
    return {"scale": rng.normal(1, 0.3, c).astype(np.float32),
            "offset": rng.normal(0, 0.3, c).astype(np.float32)}


# --- NumPy references, one loop per normalised group ---------------------------------------------


def batch_norm_train_ref(x, scale, offset, eps):
    """Per channel: mean and biased variance over every other axis; also the unbiased one."""
    x = x.astype(np.float64)
    y, means, variances, unbiased = np.empty_like(x), [], [], []
    for c in range(x.shape[-1]):
        values = x[..., c].ravel()
        m, v = values.mean(), ((values - values.mean()) ** 2).mean()
        y[..., c] = (x[..., c] - m) / np.sqrt(v + eps) * scale[c] + offset[c]
        means.append(m), variances.append(v), unbiased.append(v * len(values) / (len(values) - 1))
    return y, np.array(means), np.array(unbiased)


def group_norm_ref(x, groups, scale, offset, eps):
    x = x.astype(np.float64)
    y = np.empty_like(x)
    size = x.shape[-1] // groups
    for n in range(x.shape[0]):
        for g in range(groups):
            block = x[n, ..., g * size : (g + 1) * size]
            y[n, ..., g * size : (g + 1) * size] = (block - block.mean()) / np.sqrt(
                block.var() + eps)
    return y * scale + offset


def layer_norm_ref(x, scale, offset, eps):
    x = x.astype(np.float64)
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + offset


# --- BatchNorm -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(8, 5, 4, 3), (16, 6)])
def test_batch_norm_training_equals_the_batch_statistics(shape):
    bn = BatchNorm(momentum=0.8, epsilon=1e-3)
    x = data(shape)
    c = shape[-1]
    params = affine(c)
    state = {"mean": np.full(c, 0.5, np.float32), "var": np.full(c, 2.0, np.float32)}
    y, new = bn.apply(params, x, state=state, train=True)
    want, mean, unbiased = batch_norm_train_ref(x, params["scale"], params["offset"], 1e-3)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(new["mean"], 0.8 * 0.5 + 0.2 * mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new["var"], 0.8 * 2.0 + 0.2 * unbiased, rtol=1e-5)


def test_batch_norm_evaluation_uses_the_running_statistics_and_keeps_them():
    bn = BatchNorm()
    x = data((4, 3, 3, 2))
    params = affine(2)
    state = {"mean": np.array([1.0, -2.0], np.float32), "var": np.array([4.0, 0.25], np.float32)}
    y, same = bn.apply(params, x, state=state)  # train=False is the default
    want = (x - state["mean"]) / np.sqrt(state["var"] + 1e-5) * params["scale"] + params["offset"]
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    assert same is state
    # Evaluation does not depend on the rest of the batch; training does.
    np.testing.assert_allclose(bn.apply(params, x[:1], state=state)[0], y[:1], rtol=1e-6)
    y_train = bn.apply(params, x, state=state, train=True)[0]
    assert not np.allclose(bn.apply(params, x[:2], state=state, train=True)[0], y_train[:2])


def test_batch_norm_init_and_running_averages_converge_to_the_data_statistics():
    bn = BatchNorm(momentum=0.5)
    out_shape, params = init_params(bn, KEY, (-1, 4, 4, 3))
    state = init_state(bn, (-1, 4, 4, 3))
    assert out_shape == (-1, 4, 4, 3)
    np.testing.assert_array_equal(params["scale"], np.ones(3))
    np.testing.assert_array_equal(params["offset"], np.zeros(3))
    np.testing.assert_array_equal(state["mean"], np.zeros(3))
    np.testing.assert_array_equal(state["var"], np.ones(3))
    step = jax.jit(lambda s, x: bn.apply(params, x, state=s, train=True)[1])
    for seed in range(30):
        state = step(state, data((64, 4, 4, 3), seed))
    np.testing.assert_allclose(state["mean"], 2.0, atol=0.1)  # N(2, 3^2) data
    np.testing.assert_allclose(state["var"], 9.0, rtol=0.1)


def test_normalisation_gradients_by_finite_differences():
    x = jnp.asarray(data((4, 3, 3, 4)) / 3)
    params = jax.tree.map(jnp.asarray, affine(4))
    state = {"mean": jnp.zeros(4), "var": jnp.ones(4)}
    bn = BatchNorm()
    for f in (lambda p, x: bn.apply(p, x, state=state, train=True)[0],
              lambda p, x: bn.apply(p, x, state=state)[0],
              lambda p, x: GroupNorm(2).apply(p, x),
              lambda p, x: LayerNorm().apply(p, x)):
        check_grads(f, (params, x), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)


def test_batch_norm_keeps_low_precision_inputs_and_computes_statistics_in_float32():
    bn = BatchNorm()
    x = (data((8, 4, 4, 2)) + 100).astype(jnp.bfloat16)  # a large mean: bfloat16 sums lose it
    y, _ = bn.apply(affine(2), x, state={"mean": np.zeros(2, np.float32),
                                         "var": np.ones(2, np.float32)}, train=True)
    assert y.dtype == jnp.bfloat16
    want, _, _ = batch_norm_train_ref(np.asarray(x, np.float32), affine(2)["scale"],
                                      affine(2)["offset"], 1e-5)
    np.testing.assert_allclose(np.asarray(y, np.float32), want, atol=0.05)


# --- LayerNorm and GroupNorm ---------------------------------------------------------------------


@pytest.mark.parametrize("groups", [1, 2, 6])
def test_group_norm_equals_the_loop(groups):
    x = data((3, 4, 5, 6))
    params = affine(6)
    y = GroupNorm(groups, epsilon=1e-4).apply(params, x)
    np.testing.assert_allclose(y, group_norm_ref(x, groups, params["scale"], params["offset"],
                                                 1e-4), rtol=1e-4, atol=1e-4)


def test_layer_norm_equals_the_formula_and_ignores_mode():
    for shape in ((3, 4, 5, 6), (7, 10)):
        x = data(shape)
        params = affine(shape[-1])
        want = layer_norm_ref(x, params["scale"], params["offset"], 1e-5)
        np.testing.assert_allclose(LayerNorm().apply(params, x), want, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(LayerNorm().apply(params, x, train=True),
                                      LayerNorm().apply(params, x))
    assert init_state(LayerNorm(), (-1, 8)) == {} and LayerNorm().init_state is None


def test_group_norm_does_not_depend_on_the_batch():
    x = data((5, 4, 4, 4))
    params = affine(4)
    full = GroupNorm(2).apply(params, x)
    np.testing.assert_allclose(GroupNorm(2).apply(params, x[2:3]), full[2:3], rtol=1e-6)


# --- Errors --------------------------------------------------------------------------------------


def test_errors():
    for bad in (-0.1, 1.5, "0.9", True):
        with pytest.raises(ValueError, match=r"BatchNorm: `momentum` must be a number in \[0, 1\];"
                           r" got"):
            BatchNorm(momentum=bad)
    for bad in (0, -1e-5, None):
        with pytest.raises(ValueError, match=r"(BatchNorm|LayerNorm): `epsilon` must be a number "
                           r"> 0; got"):
            (BatchNorm if bad != 0 else LayerNorm)(epsilon=bad)
    with pytest.raises(ValueError, match=r"GroupNorm: `groups`=4 must divide the input's "
                       r"channels 6 \(in_shape \(-1, 8, 8, 6\)\)"):
        init_params(GroupNorm(4), KEY, (-1, 8, 8, 6))
    bn = BatchNorm()
    _, params = init_params(bn, KEY, (-1, 4, 4, 3))
    state = init_state(bn, (-1, 4, 4, 3))
    with pytest.raises(ValueError, match=r"BatchNorm: has state \(running mean and variance\), so "
                       r"apply needs `state` and returns \(y, state\); got no state"):
        bn.apply(params, jnp.ones((2, 4, 4, 3)))
    with pytest.raises(ValueError, match=r"BatchNorm: training needs at least 2 values per "
                       r"channel to estimate a variance; got x of shape \(1, 3\)"):
        BatchNorm().apply(affine(3), jnp.ones((1, 3)), state=state, train=True)
    with pytest.raises(ValueError, match=r"BatchNorm: params\['scale'\] must have shape \(4,\) for "
                       r"this layer's arguments and 4 channels; got \(3,\)"):
        bn.apply(params, jnp.ones((2, 4, 4, 4)), state=state)
