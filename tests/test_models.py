"""Tests for cnnlib.models: counts by closed form, forward passes vs hand-written lax, budgets."""

from __future__ import annotations

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from cnnlib import fashion_mnist, models, to_float
from cnnlib.layers import init_params, init_state, param_shapes
from cnnlib.models import param_count
from cnnlib.receptive_field import receptive_field
from cnnlib.train import fit

IN_SHAPE = (-1, 28, 28, 1)


def count(model, in_shape=IN_SHAPE):
    return models.param_count(param_shapes(model, in_shape)[1])


def names(model):
    return [layer.name for layer in model.config["layers"]]


# --- param_count and the factories' counts, by closed form ------------------------------------


def test_param_count_sums_leaf_sizes():
    params = {"a": {"w": jnp.zeros((3, 4)), "b": jnp.zeros(4)}, "c": {"w": np.zeros((2, 2, 2))}}
    assert models.param_count(params) == 3 * 4 + 4 + 8
    assert models.param_count({}) == 0


def test_param_count_rejects_non_arrays():
    with pytest.raises(TypeError, match=r"param_count: `params` must be a pytree of arrays; got "
                       r"str at \['a'\]\['w'\]"):
        models.param_count({"a": {"w": "weights"}})


@pytest.mark.parametrize("hidden", [(), (7,), (5, 3)])
def test_mlp_count_closed_form(hidden):
    widths = (28 * 28, *hidden, 10)
    want = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
    assert count(models.mlp(hidden)) == want


@pytest.mark.parametrize("pool, head", [("max", "flatten"), ("avg", "global"),
                                        ("blur", "flatten"), (None, "flatten")])
def test_cnn_and_lcn_counts_closed_form(pool, head):
    c1, c2, k = 3, 5, 3
    sizes = (28, 14, 7) if pool else (28, 28, 28)  # H after each block (SAME, then pooling)
    head_in = (sizes[2] ** 2 if head == "flatten" else 1) * c2
    conv = (k * k * 1 * c1 + c1) + (k * k * c1 * c2 + c2)
    local = sizes[0] ** 2 * (k * k * 1 * c1 + c1) + sizes[1] ** 2 * (k * k * c1 * c2 + c2)
    assert count(models.cnn((c1, c2), k, pool=pool, head=head)) == conv + head_in * 10 + 10
    assert count(models.lcn((c1, c2), k, pool=pool, head=head)) == local + head_in * 10 + 10


def test_lenet5_count_and_shapes():
    out_shape, params = param_shapes(models.lenet5(), IN_SHAPE)
    want = (25 * 6 + 6) + (25 * 6 * 16 + 16) + (400 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    assert out_shape == (-1, 10) and models.param_count(params) == want
    assert params["7_dense"]["w"].shape == (5 * 5 * 16, 120)


# --- Forward passes against hand-written lax ---------------------------------------------------


def _lax_conv(x, w, b):
    dn = ("NHWC", "HWIO", "NHWC")
    return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn) + b


def _lax_max_pool(x):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def test_cnn_equals_hand_written_lax():
    model = models.cnn((4, 6))
    _, p = init_params(model, jax.random.key(0), IN_SHAPE)
    x = jax.random.normal(jax.random.key(1), (3, 28, 28, 1))
    h = _lax_max_pool(jax.nn.relu(_lax_conv(x, p["0_conv"]["w"], p["0_conv"]["b"])))
    h = _lax_max_pool(jax.nn.relu(_lax_conv(h, p["3_conv"]["w"], p["3_conv"]["b"])))
    want = h.reshape(3, -1) @ p["7_dense"]["w"] + p["7_dense"]["b"]
    np.testing.assert_allclose(model.apply(p, x), want, rtol=1e-4, atol=1e-4)


def test_cnn_global_head_averages_positions():
    model = models.cnn((4,), pool=None, head="global")
    _, p = init_params(model, jax.random.key(0), IN_SHAPE)
    x = jax.random.normal(jax.random.key(1), (2, 28, 28, 1))
    h = jax.nn.relu(_lax_conv(x, p["0_conv"]["w"], p["0_conv"]["b"])).mean(axis=(1, 2))
    want = h @ p["3_dense"]["w"] + p["3_dense"]["b"]
    np.testing.assert_allclose(model.apply(p, x), want, rtol=1e-4, atol=1e-5)


def test_lenet5_equals_hand_written_lax():
    model = models.lenet5()
    _, p = init_params(model, jax.random.key(0), IN_SHAPE)
    x = jax.random.normal(jax.random.key(1), (2, 28, 28, 1))
    dn = ("NHWC", "HWIO", "NHWC")
    h = _lax_max_pool(jax.nn.relu(_lax_conv(x, p["0_conv"]["w"], p["0_conv"]["b"])))
    h = lax.conv_general_dilated(h, p["3_conv"]["w"], (1, 1), "VALID", dimension_numbers=dn)
    h = _lax_max_pool(jax.nn.relu(h + p["3_conv"]["b"])).reshape(2, -1)
    h = jax.nn.relu(h @ p["7_dense"]["w"] + p["7_dense"]["b"])
    h = jax.nn.relu(h @ p["9_dense"]["w"] + p["9_dense"]["b"])
    want = h @ p["11_dense"]["w"] + p["11_dense"]["b"]
    np.testing.assert_allclose(model.apply(p, x), want, rtol=1e-4, atol=1e-4)


def test_lcn_with_shared_weights_is_the_cnn():
    """Weight sharing is the only difference: copy each conv kernel to every position."""
    cnn, lcn = models.cnn((3, 4)), models.lcn((3, 4))
    _, pc = init_params(cnn, jax.random.key(0), IN_SHAPE)
    _, pl = param_shapes(lcn, IN_SHAPE)
    assert names(lcn) == [n.replace("conv", "locally_connected") for n in names(cnn)]
    shared = {}
    for (ck, cp), (lk, lp) in zip(sorted(pc.items()), sorted(pl.items())):
        if "w" in cp and cp["w"].ndim == 4 and lp["w"].ndim == 4:  # conv -> locally connected
            kh, kw, cin, cout = cp["w"].shape
            w = cp["w"].reshape(1, 1, kh * kw * cin, cout)
            shared[lk] = {"w": jnp.broadcast_to(w, lp["w"].shape),
                          "b": jnp.broadcast_to(cp["b"], lp["b"].shape)}
        else:
            shared[lk] = cp
    x = jax.random.normal(jax.random.key(2), (2, 28, 28, 1))
    np.testing.assert_allclose(jax.jit(lcn.apply)(shared, x), jax.jit(cnn.apply)(pc, x),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size", [28, 27, 13])
def test_blur_pool_keeps_the_max_pool_sizes(size):
    """MaxBlurPool: (H - 1) then ceil(/ 2) = floor(H / 2), as MaxPool(2): the same features."""
    shape = (-1, size, size, 1)
    blur = param_shapes(models.cnn(pool="blur"), shape)[1]["7_dense"]["w"]
    plain = param_shapes(models.cnn(pool="max"), shape)[1]["7_dense"]["w"]
    assert blur.shape == plain.shape == ((size // 4) ** 2 * 32, 10)


def test_config_records_the_arguments():
    model = models.cnn((8, 16), kernel_size=5, pool="avg", head="global")
    assert model.name == "serial"
    assert (model.config["channels"], model.config["kernel_size"]) == ((8, 16), (5, 5))
    assert (model.config["pool"], model.config["head"]) == ("avg", "global")
    assert models.mlp((32, 16)).config["hidden"] == (32, 16)


# --- equal_budget ------------------------------------------------------------------------------


@pytest.mark.parametrize("budget", [16_000, 50_000, 100_000, 400_000])
def test_equal_budget_within_five_percent(budget):
    built = models.equal_budget(budget)
    assert sorted(built) == ["cnn", "lcn", "mlp"]
    for model in built.values():
        assert abs(count(model) - budget) <= 0.05 * budget
    # Comparable: lcn and cnn have the same blocks, pooling and head; the mlp the same depth.
    assert names(built["lcn"]) == [n.replace("conv", "locally_connected")
                                   for n in names(built["cnn"])]
    assert len(built["mlp"].config["hidden"]) == len(built["cnn"].config["channels"]) == 2


def test_equal_budget_is_the_best_mlp_width():
    budget = 80_000
    h = models.equal_budget(budget)["mlp"].config["hidden"][0]
    errors = {w: abs(count(models.mlp((w, w))) - budget) for w in range(h - 3, h + 4)}
    assert min(errors, key=errors.get) == h


def test_equal_budget_other_options_and_input():
    built = models.equal_budget(60_000, (-1, 32, 32, 3), num_classes=5, pool="blur",
                                head="global")
    for model in built.values():
        assert abs(count(model, (-1, 32, 32, 3)) - 60_000) <= 0.05 * 60_000
        assert param_shapes(model, (-1, 32, 32, 3))[0] == (-1, 5)
    assert built["cnn"].config["pool"] == built["lcn"].config["pool"] == "blur"


def test_equal_budget_too_small():
    smallest = 28 * 28 * (9 + 1) + 14 * 14 * (9 + 1) + 7 * 7 * 10 + 10  # lcn((1, 1))
    with pytest.raises(ValueError, match=rf"equal_budget: `budget` 5000 is too small for the "
                       rf"narrowest lcn \(widths \(1, 1\): {smallest} parameters\)\. Use "
                       rf"budget >= {-(-smallest * 100 // 105)}, or a smaller in_shape"):
        models.equal_budget(5_000)
    # (1, 2) and (1, 3) give 12750 and 15200: nothing within 5% of 14000.
    with pytest.raises(ValueError, match=r"equal_budget: no widths \(c1, c2\) bring the lcn "
                       r"within 5% of `budget` 14000; the closest is \(1, 3\) with 15200"):
        models.equal_budget(14_000)


# --- Errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("factory", [models.cnn, models.lcn])
def test_conv_net_errors(factory):
    name = factory.__name__
    with pytest.raises(ValueError, match=rf"{name}: `pool` must be one of \('max', 'avg', "
                       r"'blur', None\); got 'mean'"):
        factory(pool="mean")
    with pytest.raises(ValueError, match=rf"{name}: `head` must be one of \('flatten', "
                       r"'global'\); got 'dense'"):
        factory(head="dense")
    with pytest.raises(TypeError, match=rf"{name}: `channels` must be a tuple of layer widths; "
                       r"got 16\. Use e\.g\. channels=\(16,\)"):
        factory(16)
    with pytest.raises(ValueError, match=rf"{name}: `channels` must have at least one width"):
        factory(())
    with pytest.raises(ValueError, match=rf"{name}: `channels\[1\]` must be a positive int; "
                       r"got 0"):
        factory((4, 0))
    with pytest.raises(TypeError, match=rf"{name}: `num_classes` must be a positive int; "
                       r"got 2\.5"):
        factory(num_classes=2.5)


def test_mlp_and_budget_errors():
    with pytest.raises(TypeError, match=r"mlp: `hidden\[0\]` must be a positive int; got 1\.5"):
        models.mlp((1.5,))
    with pytest.raises(TypeError, match=r"mlp: `hidden` must be a tuple of layer widths"):
        models.mlp(128)
    with pytest.raises(ValueError, match=r"lenet5: `num_classes` must be a positive int; got 0"):
        models.lenet5(0)
    with pytest.raises(ValueError, match=r"equal_budget: `in_shape` must be an image shape "
                       r"\(N, H, W, C\); got \(-1, 784\)"):
        models.equal_budget(50_000, (-1, 784))
    with pytest.raises(TypeError, match=r"equal_budget: `budget` must be a positive int; "
                       r"got 50000\.0 of type float"):
        models.equal_budget(5e4)


# --- Residual networks --------------------------------------------------------------------------


def _resnet_count(channels, blocks, c_in, classes, skip):
    """Closed form: 3x3 convolutions without bias, BatchNorm (2 params, 2 state) per conv."""
    params = 9 * c_in * channels[0] + 2 * channels[0]
    state = 2 * channels[0]
    width = channels[0]
    for c in channels:
        for b in range(blocks):
            params += 9 * width * c + 9 * c * c + 4 * c
            state += 4 * c
            if skip and (width != c):
                params += width * c + 2 * c  # 1x1 projection and its BatchNorm
                state += 2 * c
            width = c
    return params + channels[-1] * classes + classes, state


@pytest.mark.parametrize("channels, blocks, skip", [((16, 32, 64), 1, True),
                                                     ((16, 32, 64), 1, False),
                                                     ((8, 16), 3, True), ((4,), 2, False)])
def test_resnet_counts_closed_form(channels, blocks, skip):
    model = models.resnet(channels, blocks, skip=skip)
    out_shape, shapes = param_shapes(model, (-1, 28, 28, 1))
    state = init_state(model, (-1, 28, 28, 1))
    assert out_shape == (-1, 10)
    assert (param_count(shapes), param_count(state)) == _resnet_count(channels, blocks, 1, 10,
                                                                       skip)
    residuals = [layer for layer in model.config["layers"] if layer.name == "residual"]
    assert len(residuals) == (blocks * len(channels) if skip else 0)
    assert models.resnet().config["channels"] == (16, 32, 64)


def test_resnet_shapes_for_32x32_colour_and_without_norm():
    model = models.resnet((8, 16), norm=None, dropout=0.2)
    _, params = init_params(model, jax.random.key(0), (-1, 32, 32, 3))
    assert model.init_state is None  # no BatchNorm, no state
    x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    assert model.apply(params, x).shape == (2, 10)
    last = [record for record in receptive_field(model, (-1, 32, 32, 3)) if record.spatial][-1]
    # Stem 3; the first block's two 3x3 convs add 2 + 2; the second stage's stride-2 conv adds
    # 2, its next conv 2 * 2 (jump 2). The 1x1 projection shortcut sees less: the union is the
    # inner branch's field.
    assert last.r == (13, 13) and last.j == (2, 2)


def test_resnet_with_batch_norm_and_dropout_trains_on_fashion_mnist():
    (x_train, y_train), _ = fashion_mnist()
    x, y = to_float(x_train[:1024]), y_train[:1024]
    model = models.resnet((16, 32), dropout=0.2)
    _, params = init_params(model, jax.random.key(0), (-1, 28, 28, 1))
    state = init_state(model, (-1, 28, 28, 1))
    params, state, history = fit(model.apply, params, optax.adam(1e-2), (x, y), epochs=5,
                                 batch_size=64, key=jax.random.key(1), state=state,
                                 validation=0.25, progress=False)
    assert history["loss"][-1] < history["loss"][0] - 0.1, history
    # Evaluation uses the running statistics: one example gives what it gives in a batch.
    one = model.apply(params, x[:1], state=state)[0]
    np.testing.assert_allclose(one, model.apply(params, x[:8], state=state)[0][:1], atol=1e-4)
    assert history["val_accuracy"][-1] > 0.3  # three times chance after 60 steps
    assert float(np.asarray(state["1_batch_norm"]["var"]).min()) > 0


def test_resnet_errors():
    with pytest.raises(ValueError, match=r"resnet: `norm` must be one of \('batch', None\); got "
                       r"'layer'"):
        models.resnet(norm="layer")
    with pytest.raises(ValueError, match=r"resnet: `blocks` must be a positive int; got 0"):
        models.resnet(blocks=0)
    with pytest.raises(TypeError, match=r"resnet: `skip` must be True or False; got 1"):
        models.resnet(skip=1)


# --- The Fashion-MNIST record network -----------------------------------------------------------


def test_vgg_bn_counts_and_shapes():
    model = models.vgg_bn()
    out_shape, shapes = param_shapes(model, (-1, 28, 28, 1))
    state = init_state(model, (-1, 28, 28, 1))
    # Closed form: a biased first conv, then 3x3 convs without bias, each with BatchNorm's
    # scale and offset (params) and running mean and variance (state), GAP, Dense.
    params = (9 * 32 + 32) + 2 * (9 * 32 * 32 + 64) + (9 * 32 * 64 + 128) + (9 * 64 * 64 + 128)
    params += 64 * 10 + 10
    assert out_shape == (-1, 10)
    assert (param_count(shapes), param_count(state)) == (params, 2 * (32 + 32 + 64 + 64))
    assert params == 75_082 < 100_000
    pools = [layer for layer in model.config["layers"] if layer.name == "max_pool"]
    assert len(pools) == 2 and model.config["stages"] == ((32,), (32, 32), (64, 64))
    small = models.vgg_bn(((4,), (8,)), num_classes=3)
    _, p = init_params(small, jax.random.key(0), (-1, 9, 9, 2))
    s = init_state(small, (-1, 9, 9, 2))
    x = jax.random.normal(jax.random.key(1), (5, 9, 9, 2))
    logits, new_state = small.apply(p, x, state=s, train=True)
    assert logits.shape == (5, 3) and jax.tree.structure(new_state) == jax.tree.structure(s)


def test_vgg_bn_docstring_example():
    finder = doctest.DocTestFinder()
    (test,) = finder.find(models.vgg_bn, "vgg_bn", globs={
        "vgg_bn": models.vgg_bn, "init_params": init_params, "init_state": init_state,
        "param_count": param_count, "jax": jax})
    result = doctest.DocTestRunner().run(test)
    assert result.attempted == 3 and result.failed == 0


def test_vgg_bn_errors():
    with pytest.raises(ValueError, match=r"vgg_bn: `stages` must be a non-empty tuple of tuples "
                       r"of widths; got \(\)"):
        models.vgg_bn(())
    with pytest.raises(TypeError, match=r"vgg_bn: `stages\[1\]` must be a tuple of layer widths; "
                       r"got 32"):
        models.vgg_bn(((16,), 32))
    with pytest.raises(ValueError, match=r"vgg_bn: `stages\[0\]\[1\]` must be a positive int"):
        models.vgg_bn(((16, 0),))
