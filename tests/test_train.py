"""cnnlib.train against closed forms and NumPy: loss, accuracy, one optimiser step, fit
(determinism, history, learning, validation, keys and state), evaluate, the checks that stop
bad input before training, data-parallel training on 4 devices (BatchNorm included)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnlib import train
from cnnlib.layers import (
    BatchNorm,
    Conv,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    MaxPool,
    Relu,
    init_params,
    init_state,
    serial,
)


def log_softmax64(logits):
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def blobs(n=96, seed=0):
    """Three well separated Gaussian blobs as 4x4 one-channel "images"."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centres = rng.normal(size=(3, 16)) * 3
    x = (centres[y] + rng.normal(size=(n, 16))).astype(np.float32).reshape(n, 4, 4, 1)
    return x, y


def linear_model():
    model = serial(Flatten(), Dense(3, w_init="lecun"))
    _, params = init_params(model, jax.random.key(0), (-1, 4, 4, 1))
    return model, params


# --- Loss and accuracy --------------------------------------------------------------------------


def test_cross_entropy_and_accuracy_equal_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 7)).astype(np.float32) * 3
    labels = rng.integers(0, 7, 50)
    want = -np.mean(log_softmax64(logits)[np.arange(50), labels])
    np.testing.assert_allclose(float(train.cross_entropy(logits, labels)), want, rtol=1e-6)
    want_acc = np.mean(logits.argmax(axis=1) == labels)
    assert float(train.accuracy(jnp.asarray(logits), jnp.asarray(labels))) == pytest.approx(want_acc)


def test_cross_entropy_is_stable_for_huge_logits():
    logits = jnp.array([[1e4, 0.0, -1e4], [0.0, 3e4, 0.0]], jnp.float32)
    labels = jnp.array([1, 1])
    loss = float(train.cross_entropy(logits, labels))
    assert loss == pytest.approx(1e4 / 2)  # first row costs 1e4, the second 0
    assert float(train.cross_entropy(jnp.zeros((4, 10)), jnp.arange(4))) == pytest.approx(
        np.log(10))


def test_label_smoothing_equals_the_smoothed_target():
    """(1 - e) * onehot + e / K as the target, in float64; e = 0 is the plain loss, bit for bit."""
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(30, 5)).astype(np.float32) * 4
    labels = rng.integers(0, 5, 30)
    for e in (0.1, 0.5):
        target = (1 - e) * np.eye(5)[labels] + e / 5
        want = -np.mean(np.sum(target * log_softmax64(logits), axis=1))
        got = float(train.cross_entropy(logits, labels, label_smoothing=e))
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert train.cross_entropy(logits, labels, 0.0) == train.cross_entropy(logits, labels)
    # Smoothing penalises over-confidence: a confident right answer costs more than without.
    sure = jnp.array([[20.0, 0.0, 0.0]])
    assert train.cross_entropy(sure, jnp.array([0]), 0.1) > train.cross_entropy(sure, jnp.array([0]))


def test_loss_errors():
    with pytest.raises(ValueError, match=r"cross_entropy: `logits` must have shape \(N, "
                       r"num_classes\) and `labels` shape \(N,\); got \(4, 3\) and \(4, 3\)\. "
                       r"Pass integer labels, not one-hot\."):
        train.cross_entropy(jnp.zeros((4, 3)), jnp.eye(3)[jnp.array([0, 1, 2, 0])])
    with pytest.raises(TypeError, match=r"accuracy: `labels` must be integers \(class indices\); "
                       r"got float32\."):
        train.accuracy(jnp.zeros((2, 3)), jnp.zeros(2))
    for bad in (1.0, -0.1, True, "0.1"):
        with pytest.raises(ValueError, match=r"cross_entropy: `label_smoothing` must be a number "
                           r"in \[0, 1\); got .*\. Use 0 for plain cross-entropy"):
            train.cross_entropy(jnp.zeros((2, 3)), jnp.array([0, 1]), label_smoothing=bad)


# --- Augmentation -------------------------------------------------------------------------------


def test_random_shift_moves_each_image_by_its_own_offset():
    """Every output is its input moved by some (dy, dx) in -s..s with zero fill; the offsets
    cover all (2s + 1)^2 choices over many images; s = 0 is the identity."""
    rng = np.random.default_rng(0)
    x = rng.random((400, 6, 7, 2)).astype(np.float32) + 1  # no zeros inside an image
    out = np.asarray(train.random_shift(jax.random.key(3), jnp.asarray(x), max_shift=2))
    assert out.shape == x.shape and out.dtype == x.dtype
    seen = set()
    for image, moved in zip(x, out):
        matches = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                want = np.zeros_like(image)
                want[max(dy, 0):6 + min(dy, 0), max(dx, 0):7 + min(dx, 0)] = image[
                    max(-dy, 0):6 + min(-dy, 0), max(-dx, 0):7 + min(-dx, 0)]
                if np.array_equal(moved, want):
                    matches.append((dy, dx))
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) == 25
    np.testing.assert_array_equal(train.random_shift(jax.random.key(0), x, max_shift=0), x)
    a = train.random_shift(jax.random.key(5), x)
    np.testing.assert_array_equal(a, train.random_shift(jax.random.key(5), x))  # same key


def test_random_shift_errors():
    x = jnp.zeros((2, 4, 5, 1))
    for bad in (4, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"random_shift: `max_shift` must be an int in "
                           r"0\.\.3 \(less than the image size 4 x 5\); got .*\. Use "
                           r"max_shift=1 or 2\."):
            train.random_shift(jax.random.key(0), x, max_shift=bad)
    with pytest.raises(ValueError, match=r"random_shift: `x` must have shape \(N, H, W, C\); "
                       r"got \(4, 5\)"):
        train.random_shift(jax.random.key(0), jnp.zeros((4, 5)))


# --- One step against the closed-form gradient ---------------------------------------------------


def test_train_step_sgd_equals_closed_form_gradient():
    """Softmax regression: dL/dW = x^T (softmax - onehot) / N, dL/db = mean(softmax - onehot)."""
    model, params = linear_model()
    x, y = blobs(16)
    step = train.make_train_step(model.apply, optax.sgd(0.1))
    new, _, loss, acc = step(params, optax.sgd(0.1).init(params), x, y)
    w, b = np.asarray(params["1_dense"]["w"], np.float64), np.asarray(params["1_dense"]["b"])
    xf = x.reshape(16, -1).astype(np.float64)
    log_p = log_softmax64(xf @ w + b)
    delta = (np.exp(log_p) - np.eye(3)[y]) / 16  # (N, 3)
    np.testing.assert_allclose(new["1_dense"]["w"], w - 0.1 * xf.T @ delta, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(new["1_dense"]["b"], b - 0.1 * delta.sum(0), rtol=1e-4, atol=1e-6)
    assert float(loss) == pytest.approx(-log_p[np.arange(16), y].mean(), rel=1e-5)
    assert float(acc) == pytest.approx(np.mean(log_p.argmax(1) == y))


def test_make_train_step_errors():
    with pytest.raises(TypeError, match=r"make_train_step: `apply` must be a function "
                       r"apply\(params, x\) -> logits; got dict\. Pass model\.apply\."):
        train.make_train_step({}, optax.adam(1e-3))
    with pytest.raises(TypeError, match=r"make_train_step: `optimizer` must be an optax "
                       r"GradientTransformation; got float\. Use e\.g\. optax\.adam\(1e-3\)\."):
        train.make_train_step(lambda p, x: x, 1e-3)
    with pytest.raises(TypeError, match=r"make_train_step: `augment` must be None or a function "
                       r"augment\(key, x\) -> x; got int\. Pass e\.g\. "
                       r"functools\.partial\(random_shift, max_shift=1\)\."):
        train.make_train_step(lambda p, x: x, optax.adam(1e-3), augment=1)
    with pytest.raises(ValueError, match=r"make_train_step: `label_smoothing` must be a number "
                       r"in \[0, 1\); got 2"):
        train.make_train_step(lambda p, x: x, optax.adam(1e-3), label_smoothing=2)


def test_train_step_augments_the_batch_it_learns_from():
    """With augment, the step is the plain step on augment(key, x)."""
    model, params = linear_model()
    x, y = blobs(16)
    flip = lambda key, x: x[:, ::-1] * jax.random.uniform(key)  # noqa: E731
    opt = optax.sgd(0.1)
    key = jax.random.key(7)
    got = train.make_train_step(model.apply, opt, augment=flip, label_smoothing=0.2)(
        params, opt.init(params), x, y, key)
    want = train.make_train_step(model.apply, opt, label_smoothing=0.2)(
        params, opt.init(params), flip(key, x), y)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


# --- fit ----------------------------------------------------------------------------------------


def test_fit_is_deterministic_and_learns():
    model, params = linear_model()
    x, y = blobs(96)
    before = jax.tree.map(np.array, params)

    def run(seed):
        return train.fit(model.apply, params, optax.adam(0.05), (x, y), epochs=4, batch_size=16,
                         key=jax.random.key(seed), validation=blobs(40, seed=1), progress=False)

    (p1, h1), (p2, h2), (p3, _) = run(1), run(1), run(2)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
        np.testing.assert_array_equal(a, b)  # the same key: bit for bit
    assert not np.array_equal(p1["1_dense"]["w"], p3["1_dense"]["w"])  # the key sets the order
    assert h1 == h2
    assert set(h1) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 4 and all(isinstance(f, float) for f in v) for v in h1.values())
    assert h1["loss"][-1] < h1["loss"][0] and h1["accuracy"][-1] >= 0.9  # separable blobs
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(before)):
        np.testing.assert_array_equal(a, b)  # the initial params are not modified
    # The validation entries are what evaluate() gives for the final params.
    final = train.evaluate(model.apply, p1, *blobs(40, seed=1))
    assert (h1["val_loss"][-1], h1["val_accuracy"][-1]) == pytest.approx(final)


def test_fit_with_augmentation_is_deterministic_and_differs():
    """The augmentation keys come from `key`: the same key repeats the run bit for bit, and the
    run differs from one without augmentation (whose results do not change)."""
    model, params = linear_model()
    x, y = blobs(48)
    shift = lambda key, x: train.random_shift(key, x, max_shift=1)  # noqa: E731

    def run(**kw):
        return train.fit(model.apply, params, optax.adam(0.05), (x, y), epochs=2, batch_size=16,
                         key=jax.random.key(0), progress=False, **kw)

    (p1, h1), (p2, h2) = run(augment=shift), run(augment=shift)
    (p0, h0), (q0, _) = run(), run(label_smoothing=0.1)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
        np.testing.assert_array_equal(a, b)
    assert h1 == h2 and h1 != h0
    assert not np.array_equal(p1["1_dense"]["w"], p0["1_dense"]["w"])
    assert not np.array_equal(q0["1_dense"]["w"], p0["1_dense"]["w"])


def test_fit_history_without_validation_and_progress_bar(capsys):
    model, params = linear_model()
    x, y = blobs(20)
    _, history = train.fit(model.apply, params, optax.sgd(0.1), (x, y), epochs=1,
                           batch_size=8, key=jax.random.key(0), progress=True)
    assert set(history) == {"loss", "accuracy"}
    assert "2/2" in capsys.readouterr().err  # 20 // 8 = 2 steps, on stderr (tqdm)
    train.fit(model.apply, params, optax.sgd(0.1), (x, y), epochs=1, batch_size=8,
              key=jax.random.key(0), progress=False)
    assert capsys.readouterr().err == ""


def test_fit_errors():
    model, params = linear_model()
    x, y = blobs(20)
    key = jax.random.key(0)

    def fit(data=(x, y), **kw):
        kw = {"epochs": 1, "batch_size": 8, "key": key, "progress": False, **kw}
        return train.fit(model.apply, params, optax.sgd(0.1), data, **kw)

    with pytest.raises(TypeError, match=r"fit: x in `train_data` must be a float array; got "
                       r"uint8\. Convert uint8 images with cnnlib\.data\.to_float\(x\)"):
        fit(((x * 10).astype(np.uint8), y))
    with pytest.raises(TypeError, match=r"fit: y in `train_data` must be integer class labels "
                       r"of shape \(N,\); got float64 of shape \(20,\)"):
        fit((x, y.astype(np.float64)))
    with pytest.raises(ValueError, match=r"fit: x and y in `train_data` must have the same "
                       r"non-zero length; got 20 and 19\."):
        fit((x, y[:19]))
    with pytest.raises(TypeError, match=r"fit: `train_data` must be a pair \(x, y\); got ndarray"):
        fit(x)
    with pytest.raises(TypeError, match=r"fit: x in `validation` must be a float array"):
        fit(validation=(x.astype(np.int32), y))
    with pytest.raises(ValueError, match=r"fit: `batch_size` must be at most the number of "
                       r"training examples 20; got 32\. Use batch_size=20 or more data\."):
        fit(batch_size=32)
    with pytest.raises(ValueError, match=r"fit: `epochs` must be a positive int; got 0\."):
        fit(epochs=0)
    with pytest.raises(TypeError, match=r"fit: `optimizer` must be an optax "
                       r"GradientTransformation; got function"):
        train.fit(model.apply, params, optax.sgd, (x, y), epochs=1, batch_size=8, key=key)
    with pytest.raises(TypeError, match=r"fit: `augment` must be None or a function"):
        fit(augment="shift")
    with pytest.raises(ValueError, match=r"fit: `label_smoothing` must be a number in \[0, 1\)"):
        fit(label_smoothing=-1)


# --- evaluate -----------------------------------------------------------------------------------


def test_evaluate_is_exact_for_any_n():
    model, params = linear_model()
    x, y = blobs(37)
    log_p = log_softmax64(model.apply(params, x))
    want = (-log_p[np.arange(37), y].mean(), np.mean(log_p.argmax(1) == y))
    for batch_size in (10, 37, 1000):  # a padded last batch, one batch, more than N
        loss, acc = train.evaluate(model.apply, params, x, y, batch_size=batch_size)
        assert loss == pytest.approx(want[0], rel=1e-5) and acc == pytest.approx(want[1])
        assert isinstance(loss, float) and isinstance(acc, float)
    with pytest.raises(TypeError, match=r"evaluate: `batch_size` must be a positive int; got "
                       r"'10' of type str\."):
        train.evaluate(model.apply, params, x, y, batch_size="10")


def test_predict_equals_apply_in_eval_mode_for_any_n():
    model = small_net(BatchNorm(), Dropout(0.5))  # state, and a layer that differs in training
    _, params = init_params(model, jax.random.key(0), (-1, 4, 4, 1))
    state = init_state(model, (-1, 4, 4, 1))
    state = jax.tree.map(lambda v: v + 0.5, state)  # running averages that are not the defaults
    x, y = blobs(37)
    want = model.apply(params, x, state=state)[0]  # (37, 3), evaluation mode
    for batch_size in (10, 37, 1000):  # a padded last batch, one batch, more than N
        got = train.predict(model.apply, params, x, batch_size, state=state)
        assert got.shape == (37, 3)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Its argmax is what evaluate counts.
    _, acc = train.evaluate(model.apply, params, x, y, state=state)
    assert acc == np.mean(np.asarray(got).argmax(-1) == y)


def test_predict_rejects_bad_input_and_non_finite_logits():
    model, params = linear_model()
    x, _ = blobs(12)
    with pytest.raises(TypeError, match=r"predict: `x` must be a float array; got uint8\. "
                       r"Convert uint8 images with cnnlib\.data\.to_float"):
        train.predict(model.apply, params, x.astype(np.uint8))
    with pytest.raises(TypeError, match=r"predict: `x` must be an array \(N, \.\.\.\); got list"):
        train.predict(model.apply, params, [[1.0]])
    with pytest.raises(ValueError, match=r"predict: `x` must hold at least one example"):
        train.predict(model.apply, params, x[:0])
    with pytest.raises(ValueError, match=r"predict: `x` must be finite; 1 of its 192 values are "
                       r"NaN or infinite \(the first in example 3\)"):
        train.predict(model.apply, params, np.where(np.arange(192).reshape(x.shape) == 50,
                                                    np.nan, x).astype(np.float32))
    with pytest.raises(ValueError, match=r"predict: `batch_size` must be a positive int; got 0"):
        train.predict(model.apply, params, x, 0)
    broken = jax.tree.map(lambda w: w.at[0].set(jnp.nan), params)
    with pytest.raises(FloatingPointError, match=r"predict: the model returned NaN or infinite "
                       r"logits for 12 of the 12 examples \(the first: example 0\)"):
        train.predict(model.apply, broken, x)


# --- Validation split ----------------------------------------------------------------------------


def test_split_validation_is_stratified_evenly_spaced_and_disjoint():
    y = np.repeat(np.arange(4), [30, 20, 50, 10])
    x = np.arange(len(y), dtype=np.float32)[:, None]
    (xt, yt), (xv, yv) = train.split_validation(x, y, 0.1)
    assert np.bincount(yv).tolist() == [3, 2, 5, 1]  # a tenth of every class
    assert len(yt) + len(yv) == len(y) and not set(xt[:, 0]) & set(xv[:, 0])
    held = xv[yv == 2, 0].astype(int) - 50  # positions within class 2: one in ten
    assert held.tolist() == [9, 19, 29, 39, 49]
    again = train.split_validation(x, y, 0.1)  # no key: always the same split
    np.testing.assert_array_equal(again[1][0], xv)
    for bad in (0, 1, 1.5, "0.1", True):
        with pytest.raises(ValueError, match=r"split_validation: `fraction` must be a number in "
                           r"\(0, 1\); got"):
            train.split_validation(x, y, bad)


def test_fit_with_a_validation_fraction_holds_out_the_split():
    model, params = linear_model()
    x, y = blobs(100)
    _, (xv, yv) = train.split_validation(x, y, 0.2)
    p, history = train.fit(model.apply, params, optax.adam(0.05), (x, y), epochs=2,
                           batch_size=16, key=jax.random.key(0), validation=0.2, progress=False)
    assert history["val_loss"][-1] == pytest.approx(train.evaluate(model.apply, p, xv, yv)[0])
    # 80 training examples, batch 16: 5 steps per epoch (the held-out 20 are not trained on).
    q, _ = train.fit(model.apply, params, optax.adam(0.05), train.split_validation(x, y, 0.2)[0],
                     epochs=2, batch_size=16, key=jax.random.key(0), progress=False)
    for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(q)):
        np.testing.assert_array_equal(a, b)


# --- Keys, train mode and state through training -------------------------------------------------


def small_net(*extra):
    return serial(Conv(4, 3, padding="SAME"), *extra, Relu(), GlobalAvgPool(),
                  Dense(3, w_init="lecun"))


def test_fit_passes_a_fresh_key_per_step_and_train_mode_to_dropout():
    model = small_net(Dropout(0.5))
    _, params = init_params(model, jax.random.key(0), (-1, 4, 4, 1))
    x, y = blobs(64)
    run = lambda seed: train.fit(model.apply, params, optax.adam(0.05), (x, y), epochs=2,  # noqa
                                 batch_size=16, key=jax.random.key(seed), progress=False)
    (p1, h1), (p2, h2), (p3, _) = run(0), run(0), run(1)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
        np.testing.assert_array_equal(a, b)  # the key fixes every dropout mask
    assert h1 == h2 and not np.array_equal(p1["0_conv"]["w"], p3["0_conv"]["w"])
    # Training saw dropout; evaluation does not (deterministic, no key needed).
    logits = model.apply(p1, x)
    np.testing.assert_array_equal(logits, model.apply(p1, x, train=False))
    assert not np.array_equal(model.apply(p1, x, train=True, key=jax.random.key(5)), logits)


def test_fit_compiles_one_step_for_repeated_calls_with_the_same_optimizer():
    model = small_net()
    _, params = init_params(model, jax.random.key(0), (-1, 4, 4, 1))
    x, y = blobs(32)
    traced = []  # one entry per trace of the training step (fit's own checks use train=False)

    def apply(params, x, **kwargs):
        traced.extend([1] if kwargs.get("train") else [])
        return model.apply(params, x, **kwargs)

    adam = optax.adam(0.05)
    run = lambda opt, seed: train.fit(apply, params, opt, (x, y), epochs=1, batch_size=16,  # noqa
                                      key=jax.random.key(seed), progress=False)
    (p0, _), (p1, _) = run(adam, 0), run(adam, 1)
    assert len(traced) == 1  # the second seed reused the first one's compiled step
    assert not np.array_equal(p0["0_conv"]["w"], p1["0_conv"]["w"])
    run(optax.adam(0.05), 0)  # another optimizer object: a step of its own
    assert len(traced) == 2


def test_fit_threads_batch_norm_state_and_evaluate_uses_it():
    model = small_net(BatchNorm())
    _, params = init_params(model, jax.random.key(0), (-1, 4, 4, 1))
    state = init_state(model, (-1, 4, 4, 1))
    x, y = blobs(64)
    p, s, history = train.fit(model.apply, params, optax.adam(0.05), (x, y), epochs=3,
                              batch_size=16, key=jax.random.key(0), state=state,
                              validation=blobs(32, seed=1), progress=False)
    assert history["loss"][-1] < history["loss"][0]
    assert not np.allclose(s["1_batch_norm"]["mean"], 0)  # running averages moved
    np.testing.assert_array_equal(state["1_batch_norm"]["mean"], np.zeros(4))  # input untouched
    # evaluate uses the running statistics: equal to applying the model with them by hand.
    xv, yv = blobs(32, seed=1)
    logits, same = model.apply(p, xv, state=s)
    assert jax.tree.map(np.array_equal, same, s) == jax.tree.map(lambda _: True, s)
    want = train.cross_entropy(logits, yv)
    assert train.evaluate(model.apply, p, xv, yv, state=s)[0] == pytest.approx(float(want), 1e-5)
    assert history["val_loss"][-1] == pytest.approx(float(want), 1e-5)
    with pytest.raises(ValueError, match=r"the model has state \(layer '1_batch_norm' is a "
                       r"batch_norm\), so apply needs `state`"):
        train.fit(model.apply, params, optax.adam(0.05), (x, y), epochs=1, batch_size=16,
                  key=jax.random.key(0), progress=False)


def test_train_step_with_state_returns_it():
    model = small_net(BatchNorm(momentum=0.5))
    _, params = init_params(model, jax.random.key(0), (-1, 4, 4, 1))
    state = init_state(model, (-1, 4, 4, 1))
    x, y = blobs(16)
    opt = optax.sgd(0.1)
    step = train.make_train_step(model.apply, opt)
    _, _, new_state, loss, _ = step(params, opt.init(params), x, y, jax.random.key(0), state)
    h = Conv(4, 3, padding="SAME").apply(params["0_conv"], x)
    np.testing.assert_allclose(new_state["1_batch_norm"]["mean"], 0.5 * h.mean((0, 1, 2)),
                               rtol=1e-5, atol=1e-6)
    assert np.isfinite(float(loss))


# --- Nothing fails silently ----------------------------------------------------------------------


def test_labels_out_of_range_are_errors_or_nan_never_a_wrong_number():
    logits = jnp.zeros((2, 10))
    for bad in ([3, 12], [3, -1]):
        with pytest.raises(ValueError, match=r"cross_entropy: `labels` must lie in 0\.\.9 "
                           r"\(logits have 10 columns\)"):
            train.cross_entropy(logits, jnp.array(bad))
        with pytest.raises(ValueError, match=r"accuracy: `labels` must lie in 0\.\.9"):
            train.accuracy(logits, jnp.array(bad))
        # Under jit the values are unknown while tracing: the loss is NaN, not finite.
        assert np.isnan(jax.jit(train.cross_entropy)(logits, jnp.array(bad)))
    model, params = linear_model()
    x, y = blobs(20)
    with pytest.raises(ValueError, match=r"fit: labels in `train_data` must lie in 0\.\.2 \(the "
                       r"model has 3 outputs\); got values from 0 to 7"):
        train.fit(model.apply, params, optax.sgd(0.1), (x, np.where(y == 1, 7, y)), epochs=1,
                  batch_size=8, key=jax.random.key(0), progress=False)
    with pytest.raises(ValueError, match=r"evaluate: labels in `y` must lie in 0\.\.2 .* got "
                       r"values from -1 to 2"):
        train.evaluate(model.apply, params, x, np.where(y == 1, -1, y))


def test_nan_logits_are_never_counted_as_correct():
    logits = jnp.array([[np.nan, 0.0], [1.0, 0.0]])
    assert float(train.accuracy(logits, jnp.array([0, 0]))) == 0.5


def test_non_finite_data_and_loss_stop_fit():
    model, params = linear_model()
    x, y = blobs(32)
    kw = dict(epochs=2, batch_size=8, key=jax.random.key(0), progress=False)
    with pytest.raises(ValueError, match=r"fit: x in `train_data` must be finite; 16 of its 512 "
                       r"values are NaN or infinite \(the first in example 3\)"):
        train.fit(model.apply, params, optax.sgd(0.1), (np.where(np.arange(32)[:, None, None,
                  None] == 3, np.nan, x).astype(np.float32), y), **kw)
    with pytest.raises(FloatingPointError, match=r"fit: the training loss became (nan|inf) at "
                       r"epoch 1 of 2, step 2 of 4\. Lower the learning rate"):
        train.fit(model.apply, params, optax.sgd(1e38), (x, y), **kw)
    with pytest.warns(RuntimeWarning, match=r"the training loss became"):
        _, history = train.fit(model.apply, params, optax.sgd(1e38), (x, y),
                               on_nonfinite="warn", **kw)
    assert len(history["loss"]) == 2 and np.isnan(history["loss"][-1])


def test_fit_checks_keys_devices_and_the_validation_shape_before_training():
    model = small_net()
    _, params = init_params(model, jax.random.key(0), (-1, 4, 4, 1))
    x, y = blobs(32)
    kw = dict(epochs=1, batch_size=8, progress=False)
    with pytest.raises(TypeError, match=r"fit: `key` must be one JAX random key such as "
                       r"jax\.random\.key\(0\); got int 0"):
        train.fit(model.apply, params, optax.sgd(0.1), (x, y), key=0, **kw)
    with pytest.raises(ValueError, match=r"fit: `devices` must be None \(all devices\) or a "
                       r"non-empty list of jax devices; got \[\]"):
        train.fit(model.apply, params, optax.sgd(0.1), (x, y), key=jax.random.key(0),
                  devices=[], **kw)
    with pytest.raises(ValueError, match=r"fit: the model cannot take x of `validation` \(shape "
                       r"\(4, 4, 3\) per example\): in layer '0_conv': Conv: params\['w'\]"):
        train.fit(model.apply, params, optax.sgd(0.1), (x, y), key=jax.random.key(0),
                  validation=(np.ones((4, 4, 4, 3), np.float32), y[:4]), **kw)
    with pytest.raises(TypeError, match=r"init_params: `key` must be one JAX random key"):
        init_params(model, 0, (-1, 4, 4, 1))
    with pytest.raises(TypeError, match=r"random_shift: `key` must be one JAX random key"):
        train.random_shift(0, x)


# --- Data parallelism on 4 (simulated) devices ---------------------------------------------------

FOUR_DEVICES = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import json
    import jax, numpy as np, optax
    from cnnlib import train
    from cnnlib.layers import Conv, Dense, Flatten, MaxPool, Relu, init_params, serial

    assert len(jax.devices()) == 4, jax.devices()
    model = serial(Conv(4, 3, padding="SAME"), Relu(), MaxPool(2), Flatten(), Dense(3))
    _, params = init_params(model, jax.random.key(0), (-1, 8, 8, 1))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    kw = dict(epochs=2, batch_size=16, key=jax.random.key(1), progress=False)
    sharded, h4 = train.fit(model.apply, params, optax.adam(1e-2), (x, y), **kw)
    single, h1 = train.fit(model.apply, params, optax.adam(1e-2), (x, y),
                           devices=jax.devices()[:1], **kw)
    leaf = jax.tree.leaves(sharded)[0]
    assert len(leaf.sharding.device_set) == 4, leaf.sharding
    diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
               for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(single)))
    moved = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(params)))
    try:
        train.fit(model.apply, params, optax.adam(1e-2), (x, y), epochs=1, batch_size=18,
                  key=jax.random.key(1), progress=False)
        message = "no error"
    except ValueError as error:
        message = str(error)
    # BatchNorm's batch statistics are global (the whole batch across devices), and dropout
    # masks do not depend on the sharding: 4 devices train as 1 device does.
    from cnnlib.layers import BatchNorm, Dropout, init_state
    # No conv bias before BatchNorm: its gradient is zero up to rounding, and Adam would turn
    # that rounding noise (which differs between 1 and 4 devices) into full-size steps.
    bn = serial(Conv(4, 3, padding="SAME", use_bias=False), BatchNorm(), Relu(), Dropout(0.3),
                MaxPool(2), Flatten(), Dense(3))
    _, bp = init_params(bn, jax.random.key(0), (-1, 8, 8, 1))
    bs = init_state(bn, (-1, 8, 8, 1))
    p4, s4, _ = train.fit(bn.apply, bp, optax.adam(1e-2), (x, y), state=bs, **kw)
    p1, s1, _ = train.fit(bn.apply, bp, optax.adam(1e-2), (x, y), state=bs,
                          devices=jax.devices()[:1], **kw)
    bn_diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                  for a, b in zip(jax.tree.leaves((p4, s4)), jax.tree.leaves((p1, s1))))
    print(json.dumps(dict(diff=diff, moved=moved, loss4=h4["loss"], loss1=h1["loss"],
                          message=message, bn_diff=bn_diff)))
""")


def test_sharded_training_equals_single_device():
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    out = subprocess.run([sys.executable, "-c", FOUR_DEVICES], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    fields = json.loads(out.stdout.splitlines()[-1])
    diff, moved = fields["diff"], fields["moved"]
    assert moved > 1e-3  # training changed the parameters...
    assert diff <= 1e-5  # ...and 4 devices changed them as 1 device did
    assert fields["bn_diff"] <= 1e-5  # BatchNorm statistics over the whole batch, not per device
    assert fields["message"] == (
        "fit: `batch_size` must be divisible by the number of devices 4 (each gets an equal "
        "share); got 18. Use batch_size=16.")
