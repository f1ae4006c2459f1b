"""features: per-layer outputs vs applying the layers by hand, top activations vs a sort,
crops vs NumPy slicing of a padded image, the linear probe vs separable and random labels."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnlib.features import (
    crop_box,
    layer_outputs,
    linear_probe,
    top_activations,
    top_patches,
)
from cnnlib.layers import Conv, Dense, Flatten, MaxPool, Relu, init_params, serial
from cnnlib.receptive_field import receptive_field


def small_model():
    return serial(*[Conv(3, 3, padding="SAME"), Relu(), MaxPool(2)] * 4, Flatten(), Dense(5))


def test_layer_outputs_match_manual_chain():
    model = small_model()  # 14 layers, the same three Layer objects four times
    _, params = init_params(model, jax.random.key(0), (2, 16, 16, 1))
    x = jax.random.normal(jax.random.key(1), (2, 16, 16, 1))
    outs = layer_outputs(model, params, x)
    assert len(outs) == 14
    np.testing.assert_array_equal(outs[-1], model.apply(params, x))
    # By hand: the first conv with its own params, then ReLU, then the pool.
    first = model.config["layers"][0].apply(params["0_conv"], x)
    np.testing.assert_array_equal(outs[0], first)
    np.testing.assert_array_equal(outs[1], jnp.maximum(first, 0))
    np.testing.assert_array_equal(outs[2], first.reshape(2, 8, 2, 8, 2, 3).max((2, 4)).clip(0))
    assert [o.shape for o in outs[-3:]] == [(2, 1, 1, 3), (2, 3), (2, 5)]


def test_layer_outputs_single_layer():
    conv = Conv(2, 3)
    _, params = init_params(conv, jax.random.key(0), (1, 5, 5, 1))
    x = jnp.ones((1, 5, 5, 1))
    np.testing.assert_array_equal(layer_outputs(conv, params, x)[0], conv.apply(params, x))


def test_top_activations_against_sort():
    acts = np.asarray(jax.random.normal(jax.random.key(0), (20, 5, 6, 3)))
    where, values = top_activations(acts, 2, 4)
    per_image = acts[..., 2].reshape(20, -1).max(axis=1)
    np.testing.assert_array_equal(values, np.sort(per_image)[::-1][:4])
    for (n, i, j), v in zip(where, values):
        assert acts[n, i, j, 2] == v
    assert len(set(where[:, 0])) == 4


def test_crop_box_against_padded_slice():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(7, 9, 2))
    padded = np.pad(image, ((5, 5), (5, 5), (0, 0)), constant_values=-1.0)
    for box in [((-3, 2), (4, 10)), ((0, 7), (0, 9)), ((5, 11), (-5, 0)), ((2, 4), (3, 4))]:
        (t, b), (l, r) = box
        np.testing.assert_array_equal(crop_box(image, box, fill=-1.0), padded[t + 5 : b + 5, l + 5 : r + 5])


def test_top_patches_are_receptive_fields():
    model = serial(Conv(2, 3, padding="SAME"), Relu(), MaxPool(2), Conv(2, 3))
    x = jax.random.normal(jax.random.key(0), (6, 12, 12, 1))
    _, params = init_params(model, jax.random.key(1), (6, 12, 12, 1))
    acts = layer_outputs(model, params, x)[3]
    rec = receptive_field(model, (6, 12, 12, 1))[3]
    patches, values = top_patches(x, acts, rec, 1, 3)
    assert patches.shape == (3, *rec.r, 1)
    where, _ = top_activations(acts, 1, 3)
    n, i, j = where[0]
    top, left = rec.start[0] + i * rec.j[0], rec.start[1] + j * rec.j[1]
    np.testing.assert_array_equal(patches[0], crop_box(np.asarray(x[n]), ((top, top + 8), (left, left + 8))))
    # The unit's value depends on its patch only: paste the patch into zeros and recompute.
    alone = np.zeros((1, 12, 12, 1), np.float32)
    (t, b), (l, r) = (top, top + 8), (left, left + 8)
    alone[0, max(t, 0) : b, max(l, 0) : r] = np.asarray(x[n])[max(t, 0) : b, max(l, 0) : r]
    again = layer_outputs(model, params, jnp.asarray(alone))[3]
    assert again[0, i, j, 1] == pytest.approx(float(values[0]), rel=1e-5)


def test_linear_probe_separable_and_random():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    centres = rng.normal(size=(3, 20)) * 4
    f = centres[y] + rng.normal(size=(600, 20))  # well separated clusters
    res = linear_probe((f[:400], y[:400]), (f[400:], y[400:]))
    assert res.test_accuracy > 0.95
    noise = rng.normal(size=(600, 20))  # labels independent of the features
    res = linear_probe((noise[:400], y[:400]), (noise[400:], y[400:]))
    assert res.test_accuracy < 0.5  # chance is 1/3


def test_errors():
    with pytest.raises(TypeError, match="layer_outputs: `model` must be a Layer"):
        layer_outputs("cnn", {}, jnp.ones((1, 4, 4, 1)))
    with pytest.raises(ValueError, match=r"top_activations: `acts` must have shape \(N, H, W, C\)"):
        top_activations(np.ones((3, 4)), 0, 1)
    with pytest.raises(ValueError, match="top_activations: `channel` must be in 0..1"):
        top_activations(np.ones((3, 4, 4, 2)), 2, 1)
    with pytest.raises(ValueError, match="top_activations: `k` must be at most N = 3"):
        top_activations(np.ones((3, 4, 4, 2)), 0, 4)
    with pytest.raises(ValueError, match=r"crop_box: `image` must have shape \(H, W, C\)"):
        crop_box(np.ones((1, 4, 4, 1)), ((0, 1), (0, 1)))
    with pytest.raises(TypeError, match="linear_probe: `train` must be a pair"):
        linear_probe(np.ones((4, 2)), (np.ones((4, 2)), np.zeros(4, int)))
    with pytest.raises(TypeError, match="linear_probe: `test` labels must be integers"):
        linear_probe((np.ones((4, 2)), np.zeros(4, int)), (np.ones((4, 2)), np.zeros(4)))
    with pytest.raises(ValueError, match="train and test features must have the same width"):
        linear_probe((np.ones((4, 2)), np.zeros(4, int)), (np.ones((4, 3)), np.zeros(4, int)))
    with pytest.raises(ValueError, match="`train` features and labels must have the same length"):
        linear_probe((np.ones((4, 2)), np.zeros(3, int)), (np.ones((4, 2)), np.zeros(4, int)))
