"""Checkpoints: parameters and state in one .npz file, exactly, without pickle.

Introduced in chapter 06, notebooks/06-training.ipynb.

A checkpoint is an ``.npz`` archive (NumPy's zip of ``.npy`` arrays) written and read with
``allow_pickle=False``: nothing in it is ever unpickled, so loading a file cannot run code.
Nested dict keys are joined with "/" ("0_conv/w"); a model's state, if saved, sits under the
reserved prefix ``__cnnlib_state__/``. Entries whose dtype NumPy cannot store without pickle
(bfloat16, float8) are stored as raw bits with their real dtype recorded beside them.

Loading checks the file against the model it is for: ``load_params(path, model=model,
in_shape=in_shape)`` compares every key, shape and dtype with `cnnlib.layers.param_shapes`, and
a mismatch names the key and both shapes. Every file that cannot be read raises
`CheckpointError` naming the file and what is wrong with it.

In a job of several processes (`cnnlib.distributed`) every process calls `save_params`; only
process 0 writes, and all return once the file is there. Every process can load it.
"""

from __future__ import annotations

import os
import re
import uuid
import zipfile
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from cnnlib.layers import Layer, init_state, param_shapes

# Entries NumPy cannot store natively are saved as raw bits; this entry records their dtypes
# as "key=dtype" strings. State entries sit under the state prefix.
_DTYPES_KEY = "__cnnlib_dtypes__"
_STATE = "__cnnlib_state__"
_RESERVED = "__cnnlib"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or does not fit the model it is loaded for.

    Introduced in chapter 06, notebooks/06-training.ipynb.
    """


def save_params(path: str | os.PathLike, params: Any, *, state: Any = None) -> None:
    """Write params (and optionally state) to an .npz file, exactly: values, shapes, dtypes.

    The file is written under a temporary name in the same folder and then renamed, so a crash
    never leaves half a file; it gets the permissions of any new file (0644 under the usual
    umask 022).

    In a job of several processes call it in every process: only process 0 writes (params are
    the same everywhere after `fit`), and every process returns once the file is written, so
    any of them may load it next; on several hosts `path` must be on a shared file system for
    the others to read it.

    Args:
        path: file to write (the name is used as given; ".npz" is not appended).
        params: nested dicts with string keys (no "/") and array leaves.
        state: optional state of a model with state (from `cnnlib.layers.init_state` or `fit`).

    Raises:
        TypeError: a node is not a dict or array, a key is not a string, or an array holds
            Python objects (they would need pickle).
        ValueError: a key contains "/", is empty, or starts with the reserved "__cnnlib".
        FileNotFoundError: the folder of `path` does not exist.

    Example:
        >>> save_params("lenet.npz", params)
        >>> restored = load_params("lenet.npz", model=model, in_shape=(-1, 28, 28, 1))

    Introduced in chapter 06, notebooks/06-training.ipynb.
    """
    where = "save_params"
    flat = _flatten(params, "", where, "params")
    if state is not None:
        for key, value in _flatten(state, "", where, "state").items():
            flat[f"{_STATE}/{key}"] = value
    arrays, odd = {}, []
    for key, value in flat.items():
        array = np.asarray(value)
        if array.dtype.kind == "O":
            raise TypeError(
                f"{where}: {key!r} is an array of Python objects (dtype object), which only "
                f"pickle can store; got {array.dtype}. Convert it to numbers with "
                f"np.asarray(value, np.float32)."
            )
        if array.dtype.kind == "V" or array.dtype.type.__module__.startswith("ml_dtypes"):
            odd.append(f"{key}={array.dtype.name}")  # bfloat16 etc.: store the bits
            array = array.view(f"u{array.dtype.itemsize}")
        arrays[key] = array
    if odd:
        arrays[_DTYPES_KEY] = np.array(odd)  # unicode strings, no pickle needed
    path = os.fspath(path)
    if jax.process_index() == 0:  # several processes (cnnlib.distributed): process 0 writes
        _write(path, arrays, where)
    if jax.process_count() > 1:  # ...and the others return once the file is there
        multihost_utils.sync_global_devices("cnnlib.checkpoint.save_params")


def _write(path, arrays, where):
    """Write `arrays` to `path` through a temporary file in the same folder, then rename."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"{where}: the folder {folder!r} of `path` {path!r} does not exist. Create it first "
            f"with os.makedirs({folder!r}, exist_ok=True)."
        )
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.part")
    try:
        # os.open with 0o666 applies the user's umask, as creating any file does.
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError as err:
        raise OSError(err.errno, f"{where}: cannot write {path!r}: {err.strerror}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_params(
    path: str | os.PathLike,
    *,
    model: Layer | None = None,
    in_shape: Any = None,
    like: Any = None,
) -> dict:
    """Read the params of a checkpoint written by `save_params`, checked against the model.

    Pass the model and its input shape (the usual way): every key, shape and dtype is compared
    with ``param_shapes(model, in_shape)``. Or pass `like`: params (arrays or
    `jax.ShapeDtypeStruct` leaves) the file must match. With neither, the file is read
    unchecked (to inspect it).

    Files written before parameter keys stopped being zero-padded ("03_conv" in chains of more
    than ten layers, now "3_conv") load into the model they were saved from: when the keys differ
    only in those leading zeros, they are renamed.

    Args:
        path: the .npz file.
        model: the `Layer` the params are for; needs `in_shape`.
        in_shape: the model's input shape, e.g. ``(-1, 28, 28, 1)``.
        like: alternatively, params to compare with.

    Returns:
        Nested dicts of NumPy arrays, bitwise equal to what was saved (JAX functions take them
        as they are).

    Raises:
        CheckpointError: the file is not a checkpoint (truncated, not a zip archive, corrupt
            entries, keys that contradict each other), or it does not match the model: the
            message names the missing and extra keys, or the key whose shape or dtype differs.

    Example:
        >>> params = load_params("lenet.npz", model=lenet5(), in_shape=(-1, 28, 28, 1))

    Introduced in chapter 06, notebooks/06-training.ipynb.
    """
    flat = {k: v for k, v in _read(path, "load_params").items() if not k.startswith(_STATE + "/")}
    want = _expected(model, in_shape, like, "load_params", params=True)
    if want is not None:
        flat = _check_like(_renumbered(flat, want), want, os.fspath(path), "load_params", "params")
    return _unflatten(flat, os.fspath(path), "load_params")


def load_state(
    path: str | os.PathLike,
    *,
    model: Layer | None = None,
    in_shape: Any = None,
    like: Any = None,
) -> dict:
    """Read the state of a checkpoint written by ``save_params(path, params, state=state)``.

    Checked like `load_params`: against ``init_state(model, in_shape)`` or `like`. A file
    saved without state gives ``{}``, which is an error for a model that has state.

    Example:
        >>> state = load_state("resnet.npz", model=model, in_shape=(-1, 28, 28, 1))

    Introduced in chapter 07, notebooks/07-going-deeper.ipynb.
    """
    prefix = _STATE + "/"
    flat = {k[len(prefix):]: v for k, v in _read(path, "load_state").items()
            if k.startswith(prefix)}
    want = _expected(model, in_shape, like, "load_state", params=False)
    if want is not None:
        if want and not flat:
            raise CheckpointError(
                f"load_state: {os.fspath(path)} holds no state, but the model has state "
                f"({sorted(want)[0]!r} ...). Save it with save_params(path, params, state=state)."
            )
        flat = _check_like(_renumbered(flat, want), want, os.fspath(path), "load_state", "state")
    return _unflatten(flat, os.fspath(path), "load_state")


# --- Reading ----------------------------------------------------------------------------------


def _read(path, where):
    """Every entry of the archive as a flat dict of NumPy arrays, real dtypes restored."""
    path = os.fspath(path)
    flat = {}
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise CheckpointError(
                f"{where}: {path} holds a single .npy array, not an .npz archive of named "
                f"arrays. Write checkpoints with save_params."
            )
        with data:
            for key in data.files:
                flat[key] = data[key]
    except (FileNotFoundError, IsADirectoryError, PermissionError, CheckpointError):
        raise
    except ValueError as err:
        # NumPy says this when the bytes are neither a zip archive nor an array, or an entry
        # holds objects: either way the file would need pickle, which is never used here.
        reason = ("its bytes are neither a zip archive nor a NumPy array"
                  if "pickle" in str(err) else f"an entry cannot be read ({err})")
        raise CheckpointError(f"{where}: {path} is not a checkpoint: {reason}.") from None
    except (zipfile.BadZipFile, EOFError, zlib.error, KeyError, IndexError, OSError) as err:
        raise CheckpointError(
            f"{where}: {path} is not a readable checkpoint: the archive is truncated or "
            f"corrupt ({type(err).__name__}). Save it again with save_params."
        ) from None
    entries = flat.pop(_DTYPES_KEY, np.array([], str))
    if entries.dtype.kind != "U" or entries.ndim != 1:
        raise CheckpointError(f"{where}: {path} has a malformed {_DTYPES_KEY!r} entry.")
    for entry in entries.tolist():
        key, _, dtype = entry.rpartition("=")
        try:
            flat[key] = flat[key].view(jnp.dtype(dtype))
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(
                f"{where}: {path} records dtype {dtype!r} for entry {key!r}, which it does not "
                f"hold or which does not fit; the file is corrupt."
            ) from None
    return flat


def _expected(model, in_shape, like, where, params):
    if model is not None and like is not None:
        raise TypeError(f"{where}: pass `model` (with `in_shape`) or `like`, not both.")
    if model is not None:
        if in_shape is None:
            raise TypeError(
                f"{where}: `model` needs `in_shape`, the input shape it was initialised for, "
                f"e.g. in_shape=(-1, 28, 28, 1)."
            )
        if params:
            return _flatten(param_shapes(model, in_shape)[1], "", where, "params")
        return _flatten(init_state(model, in_shape), "", where, "state")
    if like is not None:
        return _flatten(like, "", where, "like")
    return None


def _renumbered(flat, want):
    """Map old zero-padded chain keys ("03_conv") onto the model's ("3_conv") when that fits."""
    if set(flat) == set(want):
        return flat
    strip = lambda key: "/".join(re.sub(r"^0+(\d)", r"\1", part) for part in key.split("/"))
    renamed = {strip(key): value for key, value in flat.items()}
    return renamed if set(renamed) == set(want) and len(renamed) == len(flat) else flat


def _check_like(flat, like, path, where, what):
    missing, extra = sorted(set(like) - set(flat)), sorted(set(flat) - set(like))
    if missing or extra:
        raise CheckpointError(
            f"{where}: {path} does not match the model's {what}: missing keys {missing}, extra "
            f"keys {extra}. Build the model it was saved from, or load with no model to "
            f"inspect it."
        )
    for key in sorted(like):
        want, got = like[key], flat[key]
        if tuple(want.shape) != got.shape or jnp.dtype(want.dtype) != got.dtype:
            raise CheckpointError(
                f"{where}: {path} entry {key!r} has shape {got.shape} and dtype {got.dtype}; the "
                f"model expects shape {tuple(want.shape)} and dtype {jnp.dtype(want.dtype)}. The "
                f"file was saved from a different model (or input size, or dtype)."
            )
    return flat


# --- Nested dicts <-> "a/b" keys ----------------------------------------------------------------


def _flatten(tree, prefix, where, name):
    if not isinstance(tree, dict):
        raise TypeError(
            f"{where}: `{name}` must be nested dicts of arrays; got {type(tree).__name__} at "
            f"{repr(prefix) if prefix else 'the top'}. Convert lists or tuples to dicts with "
            f"string keys."
        )
    flat = {}
    for key, value in tree.items():
        if not isinstance(key, str) or not key or "/" in key or key.startswith(_RESERVED):
            raise (TypeError if not isinstance(key, str) else ValueError)(
                f"{where}: every key of `{name}` must be a non-empty string without '/' (it "
                f"joins nested keys) that does not start with {_RESERVED!r}; got {key!r} under "
                f"{repr(prefix) if prefix else 'the top'}. Rename it."
            )
        full = f"{prefix}/{key}" if prefix else key
        if isinstance(value, dict):
            flat.update(_flatten(value, full, where, name))
        elif isinstance(value, (np.ndarray, np.generic, jax.Array, jax.ShapeDtypeStruct)):
            flat[full] = value
        else:
            raise TypeError(
                f"{where}: `{name}` must be nested dicts of arrays; got {type(value).__name__} "
                f"at {full!r}. Convert it with np.asarray."
            )
    return flat


def _unflatten(flat, path, where):
    tree: dict = {}
    for full in sorted(flat):
        parts = full.split("/")
        if not all(parts):
            raise CheckpointError(f"{where}: {path} has the malformed key {full!r}.")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise CheckpointError(
                    f"{where}: {path} has both an array and a group named {part!r} (keys "
                    f"{full!r} and one of its prefixes); the file is corrupt."
                )
        if parts[-1] in node:
            raise CheckpointError(
                f"{where}: {path} has both an array and a group named {full!r}; the file is "
                f"corrupt."
            )
        node[parts[-1]] = flat[full]
    return tree
