"""Tests for cnnlib.train: loss, accuracy, fit determinism and history, checkpoints."""

from __future__ import annotations

import jax
import numpy as np
import optax

from cnnlib import train
from cnnlib.layers import Dense, Flatten, init_params, serial


def _tiny():
    model = serial(Flatten(), Dense(5))
    _, params = init_params(model, jax.random.key(0), (-1, 4, 4, 1))
    rng = np.random.default_rng(0)
    x = rng.random((32, 4, 4, 1), dtype=np.float32)
    y = rng.integers(0, 5, 32)
    return model, params, x, y


def test_fit_same_key_same_params():
    model, params, x, y = _tiny()
    runs = [train.fit(model.apply, params, optax.adam(1e-2), (x, y), epochs=2, batch_size=8,
                      key=jax.random.key(1), progress=False) for _ in range(2)]
    for a, b in zip(jax.tree.leaves(runs[0][0]), jax.tree.leaves(runs[1][0])):
        np.testing.assert_array_equal(a, b)
    assert set(runs[0][1]) == {"loss", "accuracy"} and len(runs[0][1]["loss"]) == 2


def test_save_load_round_trip(tmp_path):
    _, params, _, _ = _tiny()
    train.save_params(tmp_path / "p.npz", params)
    back = train.load_params(tmp_path / "p.npz", like=params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back)):
        np.testing.assert_array_equal(a, b)
