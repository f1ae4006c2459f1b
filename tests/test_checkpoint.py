"""cnnlib.checkpoint: exact round trips of params and state, checks against the model, files
that are not checkpoints (one error type, never a pickle hint), permissions and paths."""

from __future__ import annotations

import os
import stat
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnlib import checkpoint, models
from cnnlib.checkpoint import CheckpointError, load_params, load_state, save_params
from cnnlib.layers import (
    BatchNorm,
    Conv,
    Dense,
    Flatten,
    MaxPool,
    Relu,
    init_params,
    init_state,
    param_shapes,
    serial,
)

SHAPE = (-1, 8, 8, 1)


def model_with_state():
    return serial(Conv(4, 3, use_bias=False), BatchNorm(), Relu(), MaxPool(2), Flatten(),
                  Dense(3))


def test_round_trip_is_exact_for_params_state_and_odd_dtypes(tmp_path):
    model = model_with_state()
    _, params = init_params(model, jax.random.key(0), SHAPE)
    state = jax.tree.map(lambda a: a + 0.25, init_state(model, SHAPE))
    params["extra"] = {"half": jnp.arange(5, dtype=jnp.float16) / 3,
                       "bf16": jnp.arange(4, dtype=jnp.bfloat16) / 3,
                       "step": np.int32(7) * np.ones((), np.int32)}
    path = tmp_path / "ckpt.npz"
    save_params(path, params, state=state)
    back = load_params(path, like=params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back)):
        assert np.asarray(a).dtype == b.dtype and np.asarray(a).shape == b.shape
        np.testing.assert_array_equal(np.asarray(a), b)
    del params["extra"]
    save_params(path, params, state=state)
    loaded = load_params(path, model=model, in_shape=SHAPE)
    loaded_state = load_state(path, model=model, in_shape=SHAPE)
    assert jax.tree.structure(loaded_state) == jax.tree.structure(state)
    x = jnp.ones((2, 8, 8, 1))
    np.testing.assert_array_equal(model.apply(loaded, x, state=loaded_state)[0],
                                  model.apply(params, x, state=state)[0])
    # Plain NumPy reads the file without pickle: every entry is a plain array.
    with np.load(path, allow_pickle=False) as data:
        assert "0_conv/w" in data.files and "__cnnlib_state__/1_batch_norm/mean" in data.files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.npz"]  # no temporary file left


def test_files_get_the_users_umask_and_paths_name_the_users_path(tmp_path):
    old = os.umask(0o022)
    try:
        save_params(tmp_path / "p.npz", {"w": np.zeros(2)})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "p.npz").stat().st_mode) == 0o644
    missing = tmp_path / "missing_dir" / "x.npz"
    with pytest.raises(FileNotFoundError, match=r"save_params: the folder '.*missing_dir' of "
                       r"`path` '.*missing_dir/x\.npz' does not exist\. Create it first"):
        save_params(missing, {"w": np.zeros(2)})


def test_loading_checks_keys_shapes_and_dtypes_against_the_model(tmp_path):
    path = tmp_path / "p.npz"
    model = models.cnn((4, 8))
    _, params = init_params(model, jax.random.key(0), (-1, 28, 28, 1))
    save_params(path, params)
    with pytest.raises(CheckpointError, match=r"load_params: .*p\.npz entry '0_conv/b' has shape "
                       r"\(4,\) and dtype float32; the model expects shape \(2,\) and dtype "
                       r"float32\. The file was saved from a different model"):
        load_params(path, model=models.cnn((2, 8)), in_shape=(-1, 28, 28, 1))
    with pytest.raises(CheckpointError, match=r"does not match the model's params: missing keys "
                       r"\['10_dense/b', '10_dense/w', '6_conv/b', '6_conv/w'\], extra keys "
                       r"\['7_dense/b', '7_dense/w'\]\. Build the model it was saved from"):
        load_params(path, model=models.cnn((4, 8, 8)), in_shape=(-1, 28, 28, 1))
    with pytest.raises(CheckpointError, match=r"entry '0_conv/b' has shape \(4,\) and dtype "
                       r"float32; the model expects shape \(4,\) and dtype float16"):
        load_params(path, like=jax.tree.map(lambda a: a.astype(jnp.float16), params))
    with pytest.raises(CheckpointError, match=r"load_state: .* holds no state, but the model has "
                       r"state \('1_batch_norm/mean' \.\.\.\)\. Save it with save_params\(path, "
                       r"params, state=state\)\."):
        load_state(path, model=model_with_state(), in_shape=SHAPE)
    assert load_state(path, model=model, in_shape=(-1, 28, 28, 1)) == {}
    with pytest.raises(TypeError, match=r"load_params: `model` needs `in_shape`"):
        load_params(path, model=model)


def test_old_zero_padded_keys_load_into_the_model_they_came_from(tmp_path):
    model = models.lenet5()  # 12 layers: keys were "00_conv" ... "11_dense" before
    _, params = init_params(model, jax.random.key(0), (-1, 28, 28, 1))
    old = {f"{int(k.split('_')[0]):02d}_{k.split('_', 1)[1]}": v for k, v in params.items()}
    assert "00_conv" in old and "11_dense" in old
    path = tmp_path / "old.npz"
    save_params(path, old)
    back = load_params(path, model=model, in_shape=(-1, 28, 28, 1))
    assert set(back) == set(params)
    np.testing.assert_array_equal(back["11_dense"]["w"], params["11_dense"]["w"])


def test_files_that_are_not_checkpoints_raise_checkpoint_error(tmp_path):
    good = tmp_path / "good.npz"
    save_params(good, {"a": {"w": np.arange(1000, dtype=np.float32)}})
    data = good.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "random": np.random.default_rng(0).bytes(4096),
    }
    for name, content in cases.items():
        path = tmp_path / f"{name}.npz"
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match=rf"load_params: .*{name}\.npz is not a") as err:
            load_params(path)
        assert "allow_pickle" not in str(err.value), name
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(CheckpointError, match=r"holds a single \.npy array, not an \.npz archive"):
        load_params(single)
    # An archive of object arrays (only pickle could read it) is refused, without the hint.
    objects = tmp_path / "objects.npz"
    np.savez(objects, w=np.array([{"x": 1}], dtype=object))
    with pytest.raises(CheckpointError, match=r"objects\.npz is not a checkpoint") as err:
        load_params(objects)
    assert "allow_pickle" not in str(err.value)
    # Keys that contradict each other ("a" an array and a group), in either order.
    for order in (("a", "a/b"), ("a/b", "a")):
        path = tmp_path / "clash.npz"
        with zipfile.ZipFile(path, "w") as z:
            for key in order:
                with z.open(f"{key}.npy", "w") as f:
                    np.lib.format.write_array(f, np.zeros(2))
        with pytest.raises(CheckpointError, match=r"has both an array and a group named 'a'"):
            load_params(path)


def test_save_params_errors(tmp_path):
    with pytest.raises(ValueError, match=r"save_params: every key of `params` must be a "
                       r"non-empty string without '/' .*; got 'a/b' under the top\. Rename it\."):
        save_params(tmp_path / "p.npz", {"a/b": np.zeros(2)})
    with pytest.raises(TypeError, match=r"save_params: every key of `params` must be .*; got 3 "
                       r"under 'layer'"):
        save_params(tmp_path / "p.npz", {"layer": {3: np.zeros(2)}})
    with pytest.raises(TypeError, match=r"save_params: `params` must be nested dicts of arrays; "
                       r"got list at 'layer/w'\. Convert it with np\.asarray\."):
        save_params(tmp_path / "p.npz", {"layer": {"w": [1.0, 2.0]}})
    with pytest.raises(TypeError, match=r"save_params: `params` must be nested dicts of arrays; "
                       r"got list at the top"):
        save_params(tmp_path / "p.npz", [np.zeros(2)])
    with pytest.raises(TypeError, match=r"save_params: 'w' is an array of Python objects \(dtype "
                       r"object\), which only pickle can store"):
        save_params(tmp_path / "p.npz", {"w": np.array([1, "a"], dtype=object)})
    with pytest.raises(ValueError, match=r"does not start with '__cnnlib'; got '__cnnlib_state__'"):
        save_params(tmp_path / "p.npz", {"__cnnlib_state__": {"w": np.zeros(2)}})
    assert not list(tmp_path.iterdir())  # nothing written


def test_like_may_be_shapes_only(tmp_path):
    model = serial(Conv(4, 3), Relu(), MaxPool(2), Flatten(), Dense(3))
    _, params = init_params(model, jax.random.key(0), SHAPE)
    save_params(tmp_path / "p.npz", params)
    loaded = load_params(tmp_path / "p.npz", like=param_shapes(model, SHAPE)[1])
    np.testing.assert_array_equal(loaded["4_dense"]["w"], params["4_dense"]["w"])
    assert checkpoint.load_params is load_params
