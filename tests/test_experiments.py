"""cnnlib.experiments: summaries against NumPy, the t interval's coverage, pairing, errors."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from cnnlib import experiments
from cnnlib.experiments import Summary, difference, interval_text, over_seeds, table


def test_summary_equals_numpy():
    values = (0.91, 0.89, 0.93, 0.9)
    s = Summary(values)
    assert s.n == 4 and s.mean == pytest.approx(np.mean(values))
    assert s.std == pytest.approx(np.std(values, ddof=1)) and (s.min, s.max) == (0.89, 0.93)
    low, high = s.interval()
    half = 3.182 * np.std(values, ddof=1) / 2  # t with 3 degrees of freedom
    assert (low, high) == pytest.approx((np.mean(values) - half, np.mean(values) + half))
    assert Summary((1.0,)).std == 0.0
    with pytest.raises(ValueError, match=r"Summary\.interval: needs at least 2 values; got 1"):
        Summary((1.0,)).interval()


def test_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    for n in (3, 5):
        hits = 0
        for _ in range(4000):
            low, high = Summary(tuple(rng.normal(1.0, 0.1, n))).interval()
            hits += low <= 1.0 <= high
        assert 0.94 < hits / 4000 < 0.96


def test_over_seeds_runs_each_seed_once_in_order(capsys):
    calls = []

    def run(seed):
        calls.append(seed)
        return {"acc": 0.9 + seed / 100, "loss": 1.0 - seed / 10}

    result = over_seeds(run, seeds=(3, 1, 2), progress=True)
    assert calls == [3, 1, 2] and list(result) == ["acc", "loss"]
    assert result["acc"].values == pytest.approx((0.93, 0.91, 0.92))
    assert capsys.readouterr().out.count("seed ") == 3


def test_difference_is_paired_and_table_prints_every_value():
    a, b = Summary((0.9, 0.8, 0.85)), Summary((0.88, 0.77, 0.84))
    d = difference(a, b)
    assert d.values == pytest.approx((0.02, 0.03, 0.01))
    assert d.std < a.std  # pairing removes the noise the two share
    text = table({"cnn": {"acc": a}, "mlp": {"acc": b}})
    assert "0.850 ± 0.050" in text and "per seed: mlp acc 0.880 0.770 0.840" in text
    assert interval_text(d) == "0.020 [-0.005, 0.045]"


def test_errors():
    with pytest.raises(ValueError, match=r"over_seeds: `seeds` must be a non-empty sequence"):
        over_seeds(lambda s: {"a": 1.0}, seeds=())
    with pytest.raises(TypeError, match=r"over_seeds: `run` must return a non-empty dict"):
        over_seeds(lambda s: 1.0)
    with pytest.raises(ValueError, match=r"returned the metrics \['b'\] for seed 1 but \['a'\]"):
        over_seeds(lambda s: {"a": 1.0} if s == 0 else {"b": 1.0}, seeds=(0, 1))
    with pytest.raises(ValueError, match=r"difference: `a` and `b` must be Summary objects over "
                       r"the same seeds"):
        difference(Summary((1.0, 2.0)), Summary((1.0,)))


def test_docstring_examples():
    failures, tried = doctest.testmod(experiments, report=False,
                                      optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert tried >= 5 and failures == 0


def test_train_seeds_trains_each_seed_from_its_own_keys():
    import jax
    import optax

    from cnnlib.layers import BatchNorm, Dense, Flatten, Relu, init_params, serial
    from cnnlib.train import evaluate, fit

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 96)
    x = (rng.normal(size=(3, 16))[y] * 3 + rng.normal(size=(96, 16))).astype(np.float32)
    model = serial(Flatten(), Dense(8), Relu(), Dense(3))
    runs = experiments.train_seeds(model, optax.adam(0.05), (x, y), seeds=(4, 7), epochs=2,
                                   batch_size=16, validation=(x[:32], y[:32]))
    assert [run.seed for run in runs] == [4, 7] and runs[0].state == {}
    init_key, fit_key = jax.random.split(jax.random.key(7))
    _, p0 = init_params(model, init_key, (-1, 16))
    want, history = fit(model.apply, p0, optax.adam(0.05), (x, y), epochs=2, batch_size=16,
                        key=fit_key, validation=(x[:32], y[:32]), progress=False)
    for a, b in zip(jax.tree.leaves(runs[1].params), jax.tree.leaves(want)):
        np.testing.assert_array_equal(a, b)
    assert runs.final("val_accuracy").values[1] == history["val_accuracy"][-1]
    scores = runs.evaluate(model.apply, x, y)
    assert scores["accuracy"].values[1] == evaluate(model.apply, want, x, y)[1]
    with pytest.raises(KeyError, match=r"Runs\.final: `metric` 'test' is not in the history"):
        runs.final("test")
    with_state = experiments.train_seeds(serial(Dense(8), BatchNorm(), Dense(3)), optax.adam(0.01),
                                         (x, y), seeds=(0,), epochs=1, batch_size=16)
    assert set(with_state[0].state) == {"1_batch_norm"}
