"""Tests for cnnlib.layers: shapes from init, agreement with conv2d and NumPy loops, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnlib import conv2d
from cnnlib.layers import (
    Conv,
    Dense,
    Flatten,
    LocallyConnected,
    MaxPool,
    Relu,
    init_params,
    serial,
)


def test_lenet_shapes_from_init_match_apply():
    model = serial(Conv(6, 5, padding="SAME"), Relu(), MaxPool(2), Conv(16, 5), Relu(),
                   MaxPool(2), Flatten(), Dense(10))
    out_shape, params = init_params(model, jax.random.key(0), (-1, 28, 28, 1))
    y = model.apply(params, jnp.ones((3, 28, 28, 1)))
    assert out_shape == (-1, 10) and y.shape == (3, 10)
    assert sorted(params) == ["0_conv", "3_conv", "7_dense"]


def test_conv_layer_equals_conv2d():
    layer = Conv(4, 3, padding="SAME")
    _, params = init_params(layer, jax.random.key(0), (-1, 9, 9, 1))
    x = jax.random.normal(jax.random.key(1), (2, 9, 9, 1))
    want = conv2d(x, params["w"], params["b"], padding="SAME")
    np.testing.assert_allclose(layer.apply(params, x), want, rtol=1e-5, atol=1e-5)


def test_locally_connected_with_one_kernel_everywhere_is_conv():
    layer = LocallyConnected(3, 3)
    _, params = init_params(layer, jax.random.key(0), (-1, 7, 7, 2))
    w = jax.random.normal(jax.random.key(2), (3, 3, 2, 3))
    params = {"w": jnp.broadcast_to(w.reshape(1, 1, 18, 3), (5, 5, 18, 3)),
              "b": jnp.zeros((5, 5, 3))}
    x = jax.random.normal(jax.random.key(1), (2, 7, 7, 2))
    np.testing.assert_allclose(layer.apply(params, x), conv2d(x, w), rtol=1e-5, atol=1e-5)
