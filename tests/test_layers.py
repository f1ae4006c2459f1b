"""cnnlib.layers against cnnlib.conv2d, the NumPy loops in cnnlib.reference and raw lax: values,
shapes from init (without data) equal to the shapes apply produces, initialisation, errors."""

from __future__ import annotations

import doctest
import math
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import cnnlib.layers
from cnnlib import avg_pool, blur_pool, conv2d, global_avg_pool, max_pool, reference
from cnnlib.layers import (
    AvgPool,
    BlurPool,
    Conv,
    Dense,
    Flatten,
    Gelu,
    GlobalAvgPool,
    Layer,
    LocallyConnected,
    MaxBlurPool,
    MaxPool,
    Relu,
    Tanh,
    cast_params,
    init_params,
    param_shapes,
    serial,
)

KEY = jax.random.key(0)


def normal(shape, seed=1):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def close(a, b, tol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


# --- Shapes from init equal the shapes apply produces ------------------------------------------

LAYERS = [
    (Conv(4, 3), (2, 9, 9, 3)),
    (Conv(4, 3, padding="SAME", stride=2), (2, 9, 9, 1)),
    (Conv(4, (3, 2), padding=((1, 0), (2, 1)), dilation=(2, 1)), (2, 9, 8, 2)),
    (Conv(4, 3, groups=2, use_bias=False), (2, 7, 7, 2)),
    (Conv(3, 5, padding="CIRCULAR"), (1, 6, 6, 1)),
    (Conv(3, 2, padding="FULL"), (1, 5, 5, 2)),
    (LocallyConnected(3, 3), (2, 7, 7, 2)),
    (LocallyConnected(3, (3, 2), stride=2, padding="SAME"), (2, 9, 8, 1)),
    (LocallyConnected(2, 3, padding="CIRCULAR"), (1, 5, 5, 1)),
    (Dense(7), (3, 12)),
    (MaxPool(2), (2, 9, 9, 3)),
    (MaxPool(3, 2, "SAME"), (2, 9, 8, 3)),
    (AvgPool((2, 3)), (2, 8, 9, 1)),
    (BlurPool(), (2, 9, 8, 2)),
    (BlurPool(3, 5), (1, 10, 7, 1)),
    (MaxBlurPool(), (2, 9, 8, 2)),
    (GlobalAvgPool(), (2, 5, 4, 3)),
    (Flatten(), (2, 5, 4, 3)),
    (Relu(), (2, 3, 3, 1)),
    (Tanh(), (2, 7)),
    (Gelu(), (2, 7)),
    (serial(Conv(4, 3), Relu(), MaxPool(2), Flatten(), Dense(5)), (3, 12, 12, 1)),
]


@pytest.mark.parametrize("layer, shape", LAYERS, ids=lambda v: getattr(v, "name", str(v)))
def test_init_shape_equals_apply_shape(layer, shape):
    out_shape, params = init_params(layer, KEY, shape)
    y = layer.apply(params, normal(shape))
    assert out_shape == y.shape
    # param_shapes: the same shapes and dtypes without drawing numbers; with the batch axis
    # unknown (-1) it is carried through and the rest is the same.
    any_n, shapes = param_shapes(layer, (-1, *shape[1:]))
    assert any_n == (-1, *y.shape[1:])
    assert jax.tree.map(lambda a: (a.shape, a.dtype), shapes) == jax.tree.map(
        lambda a: (a.shape, a.dtype), params)


# --- Values against independent references -----------------------------------------------------


@pytest.mark.parametrize("kwargs, in_shape", [
    (dict(out_channels=4, kernel_size=3), (2, 8, 8, 3)),
    (dict(out_channels=6, kernel_size=5, padding="SAME"), (2, 10, 10, 1)),
    (dict(out_channels=2, kernel_size=(3, 2), stride=2, padding=1, dilation=(1, 2)),
     (1, 9, 9, 2)),
    (dict(out_channels=4, kernel_size=3, groups=2), (1, 6, 6, 4)),
    (dict(out_channels=3, kernel_size=2, padding="FULL", use_bias=False), (1, 4, 5, 1)),
])
def test_conv_equals_reference_loops(kwargs, in_shape):
    layer = Conv(**kwargs)
    _, params = init_params(layer, KEY, in_shape)
    if "b" in params:
        params["b"] = normal(params["b"].shape, seed=5)  # a non-zero bias is checked too
    x = normal(in_shape)
    conv_kwargs = {k: kwargs[k] for k in ("stride", "padding", "dilation", "groups") if k in kwargs}
    want = reference.conv2d(np.asarray(x), np.asarray(params["w"]),
                            None if "b" not in params else np.asarray(params["b"]), **conv_kwargs)
    close(layer.apply(params, x), want, 1e-4)


def test_conv_circular_equals_conv2d():
    layer = Conv(3, 3, padding="CIRCULAR")
    _, params = init_params(layer, KEY, (2, 6, 6, 1))
    x = normal((2, 6, 6, 1))
    close(layer.apply(params, x), conv2d(x, params["w"], params["b"], padding="CIRCULAR"))


def _locally_connected_loops(x, w, b, kernel_size, stride, pads):
    """y[n, i, j, o] = b[i, j, o] + sum_{u, v, c} xp[n, i*sh + u, j*sw + v, c] w[i, j, (u, v, c), o]."""
    x = np.pad(np.asarray(x, np.float64), ((0, 0), *pads, (0, 0)))
    (kh, kw), (sh, sw) = kernel_size, stride
    ho, wo, _, cout = w.shape
    c = x.shape[3]
    w = np.asarray(w, np.float64).reshape(ho, wo, kh, kw, c, cout)
    y = np.zeros((x.shape[0], ho, wo, cout))
    for n in range(x.shape[0]):
        for i in range(ho):
            for j in range(wo):
                for o in range(cout):
                    total = b[i, j, o]
                    for u in range(kh):
                        for v in range(kw):
                            for ch in range(c):
                                total += x[n, i * sh + u, j * sw + v, ch] * w[i, j, u, v, ch, o]
                    y[n, i, j, o] = total
    return y


@pytest.mark.parametrize("kernel_size, stride, padding, pads, in_shape", [
    ((3, 3), (1, 1), "VALID", ((0, 0), (0, 0)), (2, 6, 5, 2)),
    ((3, 2), (2, 1), "SAME", ((1, 1), (0, 1)), (1, 7, 6, 1)),
    ((2, 2), (2, 2), 1, ((1, 1), (1, 1)), (2, 5, 5, 3)),
])
def test_locally_connected_equals_numpy_loop(kernel_size, stride, padding, pads, in_shape):
    layer = LocallyConnected(3, kernel_size, stride=stride, padding=padding)
    _, params = init_params(layer, KEY, in_shape)
    params["b"] = normal(params["b"].shape, seed=7)
    x = normal(in_shape)
    want = _locally_connected_loops(x, np.asarray(params["w"]), np.asarray(params["b"]),
                                    kernel_size, stride, pads)
    close(layer.apply(params, x), want, 1e-4)


def test_locally_connected_with_one_kernel_everywhere_is_conv():
    layer = LocallyConnected(3, 3, padding="SAME")
    w = normal((3, 3, 2, 3), seed=2)  # (kh, kw, C_in, C_out)
    params = {"w": jnp.broadcast_to(w.reshape(1, 1, 18, 3), (7, 7, 18, 3)),
              "b": jnp.zeros((7, 7, 3))}
    x = normal((2, 7, 7, 2))
    close(layer.apply(params, x), conv2d(x, w, padding="SAME"))


def test_pools_and_activations_equal_the_functions():
    x = normal((2, 8, 8, 3))
    close(init_and_apply(MaxPool(2), x), max_pool(x, 2))
    close(init_and_apply(MaxPool(3, 2, "SAME"), x), max_pool(x, 3, 2, "SAME"))
    close(init_and_apply(AvgPool(2, 1), x), avg_pool(x, 2, 1))
    close(init_and_apply(BlurPool(2, 5), x), blur_pool(x, stride=2, size=5))
    close(init_and_apply(MaxBlurPool(), x), blur_pool(max_pool(x, 2, 1), stride=2))
    close(init_and_apply(GlobalAvgPool(), x), global_avg_pool(x))
    close(init_and_apply(Flatten(), x), np.asarray(x).reshape(2, -1))
    close(init_and_apply(Relu(), x), np.maximum(np.asarray(x), 0))
    close(init_and_apply(Tanh(), x), np.tanh(np.asarray(x)))
    from math import erf  # exact GELU: x * Phi(x)
    phi = np.vectorize(lambda v: 0.5 * (1 + erf(v / np.sqrt(2))))
    close(init_and_apply(Gelu(), x), np.asarray(x) * phi(np.asarray(x)))


def init_and_apply(layer, x):
    _, params = init_params(layer, KEY, x.shape)
    return layer.apply(params, x)


def test_dense_is_matmul_plus_bias():
    layer = Dense(4)
    _, params = init_params(layer, KEY, (-1, 6))
    params["b"] = normal((4,), seed=3)
    x = normal((5, 6))
    close(layer.apply(params, x), np.asarray(x) @ np.asarray(params["w"]) + params["b"])


def test_serial_equals_hand_written_lax():
    model = serial(Conv(4, 3, stride=2), Tanh(), AvgPool(2), Flatten(), Dense(3))
    _, p = init_params(model, KEY, (-1, 13, 13, 2))
    x = normal((2, 13, 13, 2))
    dn = ("NHWC", "HWIO", "NHWC")
    h = lax.conv_general_dilated(x, p["0_conv"]["w"], (2, 2), "VALID", dimension_numbers=dn)
    h = jnp.tanh(h + p["0_conv"]["b"])  # (2, 6, 6, 4)
    h = lax.reduce_window(h, 0.0, lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4
    want = h.reshape(2, -1) @ p["4_dense"]["w"] + p["4_dense"]["b"]
    close(model.apply(p, x), want)


def test_serial_keys_are_positional_and_do_not_change_when_the_chain_grows():
    model = serial(*[Conv(2, 1) for _ in range(11)])
    _, params = param_shapes(model, (-1, 3, 3, 2))
    assert set(params) == {f"{i}_conv" for i in range(11)}
    _, short = param_shapes(serial(*[Conv(2, 1) for _ in range(3)]), (-1, 3, 3, 2))
    assert set(short) <= set(params)  # growing a chain past 10 layers renames nothing
    # Nested chains nest their dicts; children without parameters leave no key.
    nested = serial(serial(Conv(2, 1), Relu()), MaxBlurPool(), serial(Flatten(), Dense(3)))
    _, params = param_shapes(nested, (-1, 4, 4, 1))
    assert jax.tree.map(lambda a: a.shape, params) == {
        "0_serial": {"0_conv": {"w": (1, 1, 1, 2), "b": (2,)}},
        "2_serial": {"1_dense": {"w": (8, 3), "b": (3,)}},
    }


def test_config_describes_the_layer():
    conv = Conv(8, 3, stride=2, padding="same")
    assert conv.config == dict(out_channels=8, kernel_size=(3, 3), stride=(2, 2),
                               padding="SAME", dilation=(1, 1), groups=1, use_bias=True,
                               w_init="he")
    assert MaxPool(2).config == dict(kernel_size=(2, 2), stride=(2, 2), padding="VALID",
                                     dilation=(1, 1))
    chain = serial(conv, Relu())
    assert chain.name == "serial" and chain.config["layers"] == (conv, chain.config["layers"][1])
    assert [layer.name for layer in MaxBlurPool().config["layers"]] == ["max_pool", "blur_pool"]


# --- Initialisation ----------------------------------------------------------------------------


def test_init_variance_he_and_lecun_and_zero_bias():
    _, he = init_params(Conv(64, 3), KEY, (-1, 8, 8, 32))
    _, lecun = init_params(Dense(256, w_init="lecun"), KEY, (-1, 400))
    fan_in = 3 * 3 * 32
    assert abs(float(jnp.var(he["w"])) / (2 / fan_in) - 1) < 0.05  # 18,432 samples
    assert abs(float(jnp.var(lecun["w"])) / (1 / 400) - 1) < 0.05  # 102,400 samples
    assert not np.any(he["b"]) and he["w"].dtype == jnp.float32


@pytest.mark.parametrize("shape", [(3, 3, 8, 16), (5, 5, 1, 6), (400, 120)])
def test_init_draws_the_numbers_of_jax_random_normal_of_the_shape(shape):
    # layers.base.normal draws a flat vector and reshapes it (it compiles faster); the weights
    # must still be those of jax.random.normal(key, shape), scaled, to the last bit.
    fan_in = math.prod(shape[:-1])
    got = jax.jit(lambda key: cnnlib.layers.base.normal(key, shape, 2.0, fan_in))(KEY)
    want = jax.jit(lambda key: jax.random.normal(key, shape, jnp.float32)
                   * math.sqrt(2.0 / fan_in))(KEY)
    assert got.shape == shape
    np.testing.assert_array_equal(got, want)


def test_init_params_of_a_conv_are_jax_random_normal_scaled():
    _, params = init_params(Conv(6, 5), KEY, (-1, 28, 28, 1))  # one layer: its key is `key`
    want = jax.jit(lambda key: jax.random.normal(key, (5, 5, 1, 6), jnp.float32)
                   * math.sqrt(2.0 / 25))(KEY)
    np.testing.assert_array_equal(params["w"], want)


def test_init_is_deterministic_and_keys_differ():
    model = serial(Conv(4, 3), Relu(), Conv(4, 3))
    _, a = init_params(model, KEY, (-1, 8, 8, 4))
    _, b = init_params(model, KEY, (-1, 8, 8, 4))
    _, c = init_params(model, jax.random.key(1), (-1, 8, 8, 4))
    np.testing.assert_array_equal(a["0_conv"]["w"], b["0_conv"]["w"])
    assert not np.allclose(a["0_conv"]["w"], c["0_conv"]["w"])
    assert not np.allclose(a["0_conv"]["w"], a["2_conv"]["w"])  # each layer its own key


def test_docstring_examples():
    import cnnlib.layers.activations
    import cnnlib.layers.base
    import cnnlib.layers.combinators
    import cnnlib.layers.dropout
    import cnnlib.layers.linear
    import cnnlib.layers.normalization
    import cnnlib.layers.pooling

    names = {name: getattr(cnnlib.layers, name) for name in cnnlib.layers.__all__}
    total = 0
    for module in (cnnlib.layers.base, cnnlib.layers.linear, cnnlib.layers.pooling,
                   cnnlib.layers.activations, cnnlib.layers.combinators, cnnlib.layers.dropout,
                   cnnlib.layers.normalization):
        failures, tried = doctest.testmod(
            module, extraglobs={"jax": jax, "jnp": jnp, **names}, report=False,
            optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        assert failures == 0, module.__name__
        total += tried
    assert total >= 25


# --- Errors ------------------------------------------------------------------------------------


def test_constructor_errors():
    with pytest.raises(ValueError, match=r"Conv: `out_channels` must be a positive int; got 0"):
        Conv(0, 3)
    with pytest.raises(ValueError, match=r"Conv: `kernel_size` must be an int or a pair \(h, w\); "
                       r"got \(3, 3, 3\) of length 3"):
        Conv(4, (3, 3, 3))
    with pytest.raises(ValueError, match=r"Conv: `padding` must be one of \('VALID', 'SAME', "
                       r"'FULL', 'CIRCULAR'\) \(any case\), an int or pairs of ints; got 'same2'"):
        Conv(4, 3, padding="same2")
    with pytest.raises(ValueError, match=r"Conv: `groups` must divide `out_channels`; got "
                       r"groups=2, out_channels=5\. Use an out_channels that is a multiple"):
        Conv(5, 3, groups=2)
    with pytest.raises(TypeError, match=r"Conv: `use_bias` must be True or False; got 1\."):
        Conv(4, 3, use_bias=1)
    with pytest.raises(ValueError, match=r"Dense: `w_init` must be one of \('he', 'lecun'\); "
                       r"got 'xavier'\. Use \"he\" before a ReLU"):
        Dense(3, w_init="xavier")
    with pytest.raises(ValueError, match=r"MaxPool: `padding` must be one of \('VALID', 'SAME'\)"
                       r" \(any case\), an int or pairs of ints; got 'FULL'"):
        MaxPool(2, padding="FULL")
    with pytest.raises(ValueError, match=r"BlurPool: `size` must be between 1 and 7; got 9\. "
                       r"Use size=3\."):
        BlurPool(size=9)
    with pytest.raises(ValueError, match=r"LocallyConnected: `stride` must be positive; got 0"):
        LocallyConnected(3, 3, stride=0)
    with pytest.raises(ValueError, match=r"serial: needs at least one layer; got none\. Pass "
                       r"e\.g\. serial\(Relu\(\)\)\."):
        serial()
    with pytest.raises(TypeError, match=r"serial: layer 1 must be a Layer; got <function Relu "
                       r".*>\. call it: Relu\(\)\."):
        serial(Conv(4, 3), Relu)
    with pytest.raises(TypeError, match=r"serial: layer 0 must be a Layer; got 3\. build one "
                       r"with Conv\(\.\.\.\), Dense\(\.\.\.\), serial\(\.\.\.\)\."):
        serial(3)


def test_init_errors():
    with pytest.raises(TypeError, match=r"init_params: model must be a Layer; got 'conv'"):
        init_params("conv", KEY, (-1, 8, 8, 1))
    with pytest.raises(TypeError, match=r"init_params: `in_shape` must be a tuple of ints with "
                       r"the batch axis first, e\.g\. \(-1, 28, 28, 1\); got \(28, 28\.0\)"):
        init_params(Relu(), KEY, (28, 28.0))
    with pytest.raises(ValueError, match=r"param_shapes: `in_shape` must be \(N, \.\.\.\) with "
                       r"sizes >= 1 \(N may be -1 for any\); got \(-1, 0, 28, 1\)"):
        param_shapes(Relu(), (-1, 0, 28, 1))
    with pytest.raises(ValueError, match=r"Conv: input must have shape \(N, H, W, C\); got "
                       r"in_shape \(-1, 784\)\. Images are batched NHWC"):
        init_params(Conv(4, 3), KEY, (-1, 784))
    with pytest.raises(ValueError, match=r"Dense: input must have shape \(N, features\); got "
                       r"in_shape \(-1, 7, 7, 8\)\. Put Flatten\(\) or GlobalAvgPool\(\) before "
                       r"Dense\."):
        init_params(Dense(10), KEY, (-1, 7, 7, 8))
    with pytest.raises(ValueError, match=r"Conv: `groups`=2 must divide the input's channels 3 "
                       r"\(in_shape \(-1, 8, 8, 3\)\)\. Use a divisor of 3, e\.g\. groups=1\."):
        init_params(Conv(4, 3, groups=2), KEY, (-1, 8, 8, 3))
    with pytest.raises(ValueError, match=r"Conv: `kernel_size` \(5, 5\) \(dilation \(1, 1\)\) "
                       r"must fit in the padded input \(H, W\) = \(3, 3\) with padding "
                       r"\(\(0, 0\), \(0, 0\)\)\. Use padding=\"SAME\""):
        init_params(serial(MaxPool(2), Conv(4, 5)), KEY, (-1, 7, 7, 1))
    with pytest.raises(ValueError, match=r"MaxPool: `kernel_size` \(4, 4\) .* must fit in the "
                       r"padded input \(H, W\) = \(3, 3\)"):
        init_params(MaxPool(4), KEY, (-1, 3, 3, 1))


def test_apply_errors():
    conv = Conv(4, 3)
    _, params = init_params(conv, KEY, (-1, 8, 8, 2))
    with pytest.raises(ValueError, match=r"Conv: params\['w'\] must have shape \(3, 3, 3, 4\) for "
                       r"this layer's arguments and an input of 3 channels; got \(3, 3, 2, 4\)\. "
                       r"The params belong to another model or input shape"):
        conv.apply(params, jnp.ones((1, 8, 8, 3)))
    with pytest.raises(ValueError, match=r"Conv: `x` must have shape \(N, H, W, C\); got "
                       r"\(8, 8\)\. Add axes with x\[None, \.\.\., None\]"):
        conv.apply(params, jnp.ones((8, 8)))
    with pytest.raises(ValueError, match=r"Conv: `x` must have shape \(N, H, W, C\); got "
                       r"\(8, 8, 2\)\. Add axes with x\[None\] for one \(H, W, C\) image"):
        conv.apply(params, jnp.ones((8, 8, 2)))
    with pytest.raises(ValueError, match=r"Conv: `params` must have the keys \['b', 'w'\] \(the "
                       r"dict init_params\(model, key, in_shape\) returned for this layer\); got "
                       r"\['b'\]"):
        conv.apply({"b": params["b"]}, jnp.ones((1, 8, 8, 2)))
    dense = Dense(3)
    _, dp = init_params(dense, KEY, (-1, 6))
    with pytest.raises(ValueError, match=r"Dense: `x` must have shape \(N, in_features\); got "
                       r"\(2, 2, 3\)\. Put Flatten\(\) before Dense"):
        dense.apply(dp, jnp.ones((2, 2, 3)))
    with pytest.raises(ValueError, match=r"Dense: params\['b'\] must have shape \(3,\) .*; got "
                       r"\(4,\)"):
        dense.apply({**dp, "b": jnp.zeros(4)}, jnp.ones((2, 6)))
    local = LocallyConnected(2, 3)
    _, lp = init_params(local, KEY, (-1, 8, 8, 1))
    with pytest.raises(ValueError, match=r"LocallyConnected: params\['w'\] must have shape "
                       r"\(7, 7, 9, 2\) for this layer's arguments and an input of shape "
                       r"\(9, 9, 1\) \(locally connected weights fix the image size\); got "
                       r"\(6, 6, 9, 2\)"):
        local.apply(lp, jnp.ones((1, 9, 9, 1)))
    model = serial(Conv(2, 1), Relu())
    with pytest.raises(ValueError, match=r"serial: `params` must be the dict that init returned "
                       r"for this model, keys among \['0_conv', '1_relu'\]; got \['0_dense'\]"):
        model.apply({"0_dense": {}}, jnp.ones((1, 2, 2, 1)))
    with pytest.raises(ValueError, match=r"serial: `params` must be the dict .* got list"):
        model.apply([], jnp.ones((1, 2, 2, 1)))
    # An error inside a chain names the layer's key, through nested chains.
    _, mp = init_params(model, KEY, (-1, 2, 2, 1))
    with pytest.raises(ValueError, match=r"in layer '0_conv': Conv: params\['w'\] must have "):
        model.apply(mp, jnp.ones((1, 2, 2, 3)))
    nested = serial(Relu(), serial(Conv(2, 1)))
    _, np_ = init_params(nested, KEY, (-1, 2, 2, 1))
    with pytest.raises(ValueError, match=r"^in layer '1_serial/0_conv': Conv: params"):
        nested.apply(np_, jnp.ones((1, 2, 2, 3)))


def test_eager_and_jitted_calls_accept_the_same_inputs():
    model = serial(Conv(2, 3), Relu(), Flatten(), Dense(3))
    _, params = init_params(model, KEY, (-1, 5, 5, 1))
    x64 = np.ones((2, 5, 5, 1), np.float64)  # NumPy's default dtype
    eager = model.apply(params, x64)
    jitted = jax.jit(model.apply)(params, x64)
    np.testing.assert_array_equal(eager, jitted)
    np.testing.assert_array_equal(model.apply(params, x64.tolist()), eager)  # a nested list


def test_layer_is_a_named_tuple():
    layer = Relu()
    assert isinstance(layer, Layer) and layer.name == "relu" and layer.config == {}
    assert Relu.__name__ == "Relu" and "Introduced in chapter 03" in Relu.__doc__


# --- Parameter dtypes ---------------------------------------------------------------------------

FLOAT64 = """
import jax, jax.numpy as jnp, numpy as np, optax
jax.config.update("jax_enable_x64", True)
from cnnlib import train
from cnnlib.layers import BatchNorm, Conv, Dense, Flatten, Relu, init_params, init_state, serial
model = serial(Conv(4, 3), BatchNorm(), Relu(), Flatten(), Dense(3))
_, p32 = init_params(model, jax.random.key(0), (-1, 6, 6, 1))
_, p64 = init_params(model, jax.random.key(0), (-1, 6, 6, 1), dtype=jnp.float64)
state = init_state(model, (-1, 6, 6, 1), dtype=jnp.float64)
assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves((p64, state)))
# The same numbers as float32, widened: float64 starts where float32 does.
for a, b in zip(jax.tree.leaves(p32), jax.tree.leaves(p64)):
    np.testing.assert_array_equal(np.asarray(a, np.float64), b)
x = np.random.default_rng(0).random((8, 6, 6, 1))  # float64
y = np.arange(8) % 3
logits, _ = model.apply(p64, x, state=state)
assert logits.dtype == jnp.float64
p, s, h = train.fit(model.apply, p64, optax.sgd(0.1), (x, y), epochs=1, batch_size=4,
                    key=jax.random.key(0), state=state, progress=False)
assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves((p, s)))
try:
    model.apply(p32, x, state=init_state(model, (-1, 6, 6, 1)))
except TypeError as err:
    print("MESSAGE", err)
"""


def test_float64_params_under_x64_train_and_mixing_dtypes_is_an_error():
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", FLOAT64], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert re.search(r"MESSAGE .*conv2d: `w` must have the dtype of `x` \(float64\); got float32\. "
                     r"Cast the params with cast_params\(params, x\.dtype\) or x with "
                     r"x\.astype\(w\.dtype\)\.", out.stdout), out.stdout


def test_cast_params_to_bfloat16_and_errors():
    model = serial(Conv(4, 3), Relu(), Flatten(), Dense(3))
    _, params = init_params(model, KEY, (-1, 6, 6, 1), dtype=jnp.bfloat16)
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
    y = model.apply(params, jnp.ones((2, 6, 6, 1), jnp.bfloat16))
    assert y.dtype == jnp.bfloat16
    back = cast_params(params, jnp.float32)
    assert {leaf.dtype for leaf in jax.tree.leaves(back)} == {jnp.dtype(jnp.float32)}
    with pytest.raises(TypeError, match=r"cast_params: `dtype` must be a floating dtype such as "
                       r"jnp\.float32, jnp\.float64 or jnp\.bfloat16; got dtype\('int32'\)"):
        cast_params(params, jnp.int32)
    if not jax.config.jax_enable_x64:
        with pytest.raises(ValueError, match=r"cast_params: float64 needs 64-bit mode, which is "
                           r"off"):
            cast_params(params, jnp.float64)
