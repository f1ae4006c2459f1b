"""cnnlib.layers.combinators: branches and residual blocks against hand-written sums, shapes from
init equal to the shapes apply produces, keys and state through nesting, labels, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from cnnlib.layers import (
    BatchNorm,
    Conv,
    Dense,
    Dropout,
    FanInConcat,
    FanInSum,
    FanOut,
    Flatten,
    GlobalAvgPool,
    Identity,
    Relu,
    Residual,
    init_params,
    init_state,
    named,
    parallel,
    param_shapes,
    serial,
)
from cnnlib.models import param_count

KEY = jax.random.key(0)
X = jax.random.normal(jax.random.key(1), (2, 6, 6, 3))


def test_residual_is_inner_plus_shortcut_and_equals_the_stax_composition():
    inner = serial(Conv(3, 3, padding="SAME"), Relu(), Conv(3, 3, padding="SAME"))
    block = Residual(inner)
    out_shape, params = init_params(block, KEY, (-1, 6, 6, 3))
    assert out_shape == (-1, 6, 6, 3) and set(params) == {"inner"}
    np.testing.assert_allclose(block.apply(params, X), inner.apply(params["inner"], X) + X,
                               rtol=1e-6, atol=1e-6)
    stax = serial(FanOut(2), parallel(inner, Identity()), FanInSum())
    _, stax_params = init_params(stax, KEY, (-1, 6, 6, 3))
    np.testing.assert_allclose(stax.apply({"1_parallel": {"0_serial": params["inner"]}}, X),
                               block.apply(params, X), rtol=1e-6, atol=1e-6)
    assert jax.tree.structure(stax_params) == jax.tree.structure(
        {"1_parallel": {"0_serial": params["inner"]}})
    # Gradients through the block, by finite differences (float64 not needed at this size).
    check_grads(lambda p, x: block.apply(p, x), (params, X), order=1, modes=["rev"],
                atol=5e-2, rtol=5e-2)


def test_projection_shortcut_when_the_shape_changes():
    inner = serial(Conv(8, 3, stride=2, padding="SAME"), Relu(), Conv(8, 3, padding="SAME"))
    block = Residual(inner, shortcut=Conv(8, 1, stride=2))
    out_shape, params = init_params(block, KEY, (-1, 6, 6, 3))
    assert out_shape == (-1, 3, 3, 8) and set(params) == {"inner", "shortcut"}
    want = inner.apply(params["inner"], X) + Conv(8, 1, stride=2).apply(params["shortcut"], X)
    np.testing.assert_allclose(block.apply(params, X), want, rtol=1e-6, atol=1e-6)
    assert param_count(params) == (27 * 8 + 8) + (72 * 8 + 8) + (3 * 8 + 8)


def test_fan_in_concat_joins_channels_and_parallel_applies_each_branch():
    model = serial(FanOut(3), parallel(Conv(2, 1), Conv(4, 3, padding="SAME"), Identity()),
                   FanInConcat())
    out_shape, params = init_params(model, KEY, (-1, 6, 6, 3))
    assert out_shape == (-1, 6, 6, 9) == (-1, *model.apply(params, X).shape[1:])
    branches = params["1_parallel"]
    want = jnp.concatenate([Conv(2, 1).apply(branches["0_conv"], X),
                            Conv(4, 3, padding="SAME").apply(branches["1_conv"], X), X], axis=-1)
    np.testing.assert_allclose(model.apply(params, X), want, rtol=1e-6, atol=1e-6)
    assert init_params(FanInConcat(axis=1), KEY, ((2, 3, 5, 1), (2, 4, 5, 1)))[0] == (2, 7, 5, 1)


@pytest.mark.parametrize("layer, shape", [
    (Identity(), (2, 5, 5, 3)),
    (Residual(serial(Conv(3, 3, padding="SAME"), Relu())), (2, 5, 5, 3)),
    (Residual(Conv(4, 3, stride=2, padding="SAME"), Conv(4, 1, stride=2)), (2, 5, 5, 3)),
    (serial(FanOut(2), parallel(Conv(2, 1), Relu()), FanInConcat()), (2, 5, 5, 3)),
    (serial(Flatten(), FanOut(2), parallel(Dense(4), Dense(4)), FanInSum()), (2, 5, 5, 3)),
])
def test_init_shape_equals_apply_shape(layer, shape):
    out_shape, params = init_params(layer, KEY, shape)
    assert out_shape == layer.apply(params, jnp.ones(shape)).shape
    assert param_shapes(layer, (-1, *shape[1:]))[0] == (-1, *out_shape[1:])


def test_keys_reach_every_random_layer_and_state_is_keyed_like_params():
    model = serial(Conv(4, 3, padding="SAME"), BatchNorm(), Relu(), Dropout(0.5),
                   Residual(serial(Conv(4, 3, padding="SAME"), BatchNorm(), Dropout(0.5))),
                   GlobalAvgPool(), Dense(2))
    _, params = init_params(model, KEY, (-1, 6, 6, 3))
    state = init_state(model, (-1, 6, 6, 3))
    assert jax.tree.map(jnp.shape, state) == {
        "1_batch_norm": {"mean": (4,), "var": (4,)},
        "4_residual": {"inner": {"1_batch_norm": {"mean": (4,), "var": (4,)}}},
    }
    run = lambda key: model.apply(params, X, state=state, key=key, train=True)  # noqa: E731
    (a, sa), (b, sb), (c, _) = run(jax.random.key(3)), run(jax.random.key(3)), run(KEY)
    np.testing.assert_array_equal(a, b)  # deterministic for a key
    assert not np.array_equal(a, c)
    assert jax.tree.map(np.array_equal, sa, sb) == jax.tree.map(lambda _: True, sa)
    # The two Dropout layers draw different masks: fold_in(key, i) per child.
    d = Dropout(0.5)
    k = jax.random.key(3)
    outer = d.apply({}, jnp.ones((1, 64)), key=jax.random.fold_in(k, 3), train=True)
    inner = d.apply({}, jnp.ones((1, 64)),
                    key=jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(k, 4), 0), 2),
                    train=True)
    assert not np.array_equal(outer, inner)
    # Evaluation: no key needed, the state comes back unchanged.
    y, same = model.apply(params, X, state=state)
    assert jax.tree.map(np.array_equal, same, state) == jax.tree.map(lambda _: True, state)


def test_a_model_without_state_called_with_state_returns_it():
    model = serial(Conv(2, 1), Relu())
    _, params = init_params(model, KEY, (-1, 6, 6, 3))
    y, state = model.apply(params, X, state={})
    assert state == {} and init_state(model, (-1, 6, 6, 3)) == {}
    np.testing.assert_array_equal(y, model.apply(params, X))


def test_named_layers_keep_their_key_when_the_chain_grows():
    short = serial(named("stem", Conv(4, 3)), Relu(), named("head", Flatten()))
    longer = serial(Conv(3, 1), named("stem", Conv(4, 3)), Relu(), named("head", Flatten()))
    assert set(init_params(short, KEY, (-1, 6, 6, 3))[1]) == {"stem"}
    _, params = init_params(longer, KEY, (-1, 6, 6, 3))
    assert set(params) == {"0_conv", "stem"}
    assert named("stem", Conv(4, 3)).name == "conv"  # the kind of layer is unchanged
    with pytest.raises(ValueError, match=r"serial: two layers have the label 'a'; labels given "
                       r"with named\(\) must be unique within one chain\. Rename one\."):
        serial(named("a", Relu()), named("a", Relu()))
    for bad in ("", "0_conv", "a/b", 3):
        with pytest.raises(ValueError, match=r"named: `label` must be a non-empty string"):
            named(bad, Relu())


def test_shape_errors_name_both_shapes_and_the_layer():
    with pytest.raises(ValueError, match=r"in layer '1_residual': Residual: the inner branch maps "
                       r"\(-1, 6, 6, 3\) to \(-1, 3, 3, 8\) but the identity shortcut keeps "
                       r"\(-1, 6, 6, 3\); the two are added, so they must have the same shape\. "
                       r"Pass shortcut=Conv\(8, 1, stride=2\) \(a projection\)"):
        init_params(serial(Relu(), Residual(Conv(8, 3, stride=2, padding="SAME"))), KEY,
                    (-1, 6, 6, 3))
    with pytest.raises(ValueError, match=r"in layer '2_fan_in_sum': FanInSum: the inputs must "
                       r"have the same shape to be added; got \(-1, 6, 6, 2\) and \(-1, 6, 6, 3\)"):
        init_params(serial(FanOut(2), parallel(Conv(2, 1), Identity()), FanInSum()), KEY,
                    (-1, 6, 6, 3))
    with pytest.raises(ValueError, match=r"FanInSum: the inputs must have the same shape to be "
                       r"added; got \(2, 3\) and \(2, 4\)"):
        FanInSum().apply({}, (jnp.ones((2, 3)), jnp.ones((2, 4))))
    with pytest.raises(ValueError, match=r"FanInConcat: the inputs must have the same shape to "
                       r"be joined along axis -1; got \(-1, 6, 6, 2\) and \(-1, 5, 5, 3\)"):
        init_params(FanInConcat(), KEY, ((-1, 6, 6, 2), (-1, 5, 5, 3)))
    with pytest.raises(ValueError, match=r"FanInConcat: `axis` must be an axis of the inputs "
                       r"other than the batch axis 0"):
        init_params(FanInConcat(axis=0), KEY, ((-1, 6), (-1, 6)))
    with pytest.raises(ValueError, match=r"in layer '1_conv': Conv: takes one input, but gets 2 "
                       r"\(shapes .*\) from FanOut or parallel\. Combine them first with "
                       r"FanInSum\(\) or FanInConcat\(\)\."):
        init_params(serial(FanOut(2), Conv(2, 1)), KEY, (-1, 6, 6, 3))
    with pytest.raises(ValueError, match=r"parallel: takes 2 inputs, one per branch; got in_shape "
                       r"\(-1, 6, 6, 3\)\. Put FanOut\(2\) before it\."):
        init_params(parallel(Relu(), Relu()), KEY, (-1, 6, 6, 3))
    with pytest.raises(ValueError, match=r"FanInSum: takes a tuple of at least two inputs"):
        init_params(FanInSum(), KEY, (-1, 6, 6, 3))
    with pytest.raises(TypeError, match=r"Residual: inner must be a Layer; got 3"):
        Residual(3)
    with pytest.raises(ValueError, match=r"FanOut: `n` must be a positive int; got 0"):
        FanOut(0)


def test_state_errors():
    model = serial(Conv(2, 1), BatchNorm())
    _, params = init_params(model, KEY, (-1, 6, 6, 3))
    other = init_state(serial(Conv(2, 1), Relu(), BatchNorm()), (-1, 6, 6, 3))
    with pytest.raises(ValueError, match=r"serial: `state` must be the dict that init returned "
                       r"for this model, keys among \['0_conv', '1_batch_norm'\]; got "
                       r"\['2_batch_norm'\]"):
        model.apply(params, X, state=other)
    wrong = init_state(serial(Conv(5, 1), BatchNorm()), (-1, 6, 6, 3))
    with pytest.raises(ValueError, match=r"in layer '1_batch_norm': BatchNorm: "
                       r"state\['mean'\] must have shape \(2,\) .*; got \(5,\)\. The state "
                       r"belongs to another model"):
        model.apply(params, X, state=wrong)
    with pytest.raises(ValueError, match=r"serial: the model has state \(layer '1_batch_norm' is "
                       r"a batch_norm\), so apply needs `state` and returns \(y, state\); got no "
                       r"state\. Pass state=init_state\(model, in_shape\)"):
        model.apply(params, X)
