"""Training: loss, accuracy, augmentation, a jitted optimizer step, a fit loop, evaluation,
checkpoints.

Introduced in chapter 06, notebooks/06-training.ipynb.

`fit` works with any `apply(params, x) -> logits` (a `Layer`'s apply) and any optax
`GradientTransformation`. It is deterministic for a given `key`: the key alone decides the
order of the examples. When more than one device is visible (or passed in `devices`), each
batch is split along a "data" mesh axis and the parameters are replicated; `jax.jit` inserts
the gradient all-reduce (data parallelism, no code change in the step).

Checkpoints are `.npz` files written and read with ``allow_pickle=False``: nested dict keys
are joined with "/" ("00_conv/w"); nothing is ever unpickled.
"""

from __future__ import annotations

import functools
import numbers
import os
import sys
import tempfile
import warnings
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from cnnlib._validate import _is_int, check_nhwc, check_positive_int

with warnings.catch_warnings():
    # tqdm.auto warns (TqdmWarning) when ipywidgets is missing, as it is on purpose in the book's
    # build environment; without this every notebook's output would carry that warning.
    warnings.simplefilter("ignore")
    from tqdm.auto import tqdm
    from tqdm.notebook import tqdm as _widget_tqdm

# Entries whose dtype NumPy cannot store without pickle (bfloat16, float8...) are saved as raw
# bits; this entry records their real dtypes as "key=dtype" strings.
_DTYPES_KEY = "__cnnlib_dtypes__"


def cross_entropy(logits: Any, labels: Any, label_smoothing: float = 0.0) -> jax.Array:
    """Mean softmax cross-entropy with integer labels, computed stably with `log_softmax`.

    ``mean_n( logsumexp(logits[n]) - logits[n, labels[n]] )``; no exp overflows, whatever
    the size of the logits. With label smoothing e the target is ``1 - e`` on the label plus
    ``e / num_classes`` on every class (Szegedy et al. 2016), so the loss no longer rewards
    pushing one logit without bound.

    Args:
        logits: array of shape (N, num_classes).
        labels: integer array of shape (N,), values in 0..num_classes - 1.
        label_smoothing: e in [0, 1); 0 is the plain cross-entropy.

    Returns:
        A scalar (float, the dtype of `logits`).

    Example:
        >>> float(cross_entropy(jnp.zeros((2, 10)), jnp.array([3, 7])))  # log(10)
        2.302585...

    Introduced in chapter 06, notebooks/06-training.ipynb.
    """
    _check_logits_labels(logits, labels, "cross_entropy")
    e = _check_smoothing(label_smoothing, "cross_entropy")
    labels = jnp.asarray(labels)
    log_p = jax.nn.log_softmax(logits, axis=-1)  # (N, num_classes)
    nll = -jnp.take_along_axis(log_p, labels[:, None].astype(jnp.int32), axis=1)[:, 0]  # (N,)
    if e:
        nll = (1 - e) * nll - e * jnp.mean(log_p, axis=-1)
    return jnp.mean(nll)


def accuracy(logits: Any, labels: Any) -> jax.Array:
    """Fraction of rows whose largest logit is at the label.

    Args:
        logits: array of shape (N, num_classes).
        labels: integer array of shape (N,).

    Returns:
        A scalar float32 in [0, 1].

    Example:
        >>> float(accuracy(jnp.array([[0.0, 1.0], [1.0, 0.0]]), jnp.array([1, 1])))
        0.5

    Introduced in chapter 06, notebooks/06-training.ipynb.
    """
    _check_logits_labels(logits, labels, "accuracy")
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)


def make_train_step(
    apply: Callable,
    optimizer: optax.GradientTransformation,
    *,
    augment: Callable | None = None,
    label_smoothing: float = 0.0,
) -> Callable:
    """One jitted optimisation step on a batch.

    Args:
        apply: ``apply(params, x) -> logits`` of shape (N, num_classes).
        optimizer: any optax `GradientTransformation` (e.g. ``optax.adam(1e-3)``).
        augment: optional ``augment(key, x) -> x`` applied to the batch inside the step, such
            as ``functools.partial(random_shift, max_shift=1)``; the step then takes a key.
        label_smoothing: passed to `cross_entropy`.

    Returns:
        ``step(params, opt_state, x, y) -> (params, opt_state, loss, accuracy)``, jitted, or
        ``step(params, opt_state, x, y, key)`` with `augment`. Loss and accuracy are those of
        the (augmented) batch before the update. With a batch sharded across devices and
        replicated params, jit averages the gradients across devices itself.

    Example:
        >>> step = make_train_step(model.apply, optax.adam(1e-3))
        >>> params, opt_state, loss, acc = step(params, opt_state, x, y)

    Introduced in chapter 06, notebooks/06-training.ipynb.
    """
    where = "make_train_step"
    if not callable(apply):
        raise TypeError(
            f"{where}: `apply` must be a function apply(params, x) -> logits; got "
            f"{type(apply).__name__}. Pass model.apply."
        )
    _check_optimizer(optimizer, where)
    _check_augment(augment, where)
    e = _check_smoothing(label_smoothing, where)

    def loss_fn(params, x, y):
        logits = apply(params, x)  # (N, num_classes)
        return cross_entropy(logits, y, e), logits

    def update(params, opt_state, x, y):
        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, accuracy(logits, y)

    if augment is None:
        return jax.jit(update)
    return jax.jit(lambda params, opt_state, x, y, key:
                   update(params, opt_state, augment(key, x), y))


def random_shift(key: jax.Array, x: Any, max_shift: int = 1) -> jax.Array:
    """Shift every image by its own random offset, filling with zeros (data augmentation).

    Image n moves down by ``dy[n]`` and right by ``dx[n]`` pixels (negative: up, left), both
    drawn uniformly from -max_shift..max_shift; pixels shifted out are lost and the border
    that opens is zero. The label of a translated garment does not change, so training on
    shifted copies asks the network for what convolution and pooling give only approximately:
    invariance to small translations (chapter 04).

    Args:
        key: `jax.random` key.
        x: float array (N, H, W, C).
        max_shift: largest shift in pixels, an int in 0..min(H, W) - 1.

    Returns:
        Array of the shape and dtype of `x`.

    Example:
        >>> step = make_train_step(model.apply, optax.adam(1e-3),
        ...                        augment=functools.partial(random_shift, max_shift=1))

    Introduced in chapter 06, notebooks/06-training.ipynb.
    """
    where = "random_shift"
    check_nhwc(x, where)
    n, h, w, c = x.shape
    if not _is_int(max_shift) or not 0 <= max_shift < min(h, w):
        raise ValueError(
            f"{where}: `max_shift` must be an int in 0..{min(h, w) - 1} (less than the image "
            f"size {h} x {w}); got {max_shift!r}. Use max_shift=1 or 2."
        )
    s = int(max_shift)
    padded = jnp.pad(x, ((0, 0), (s, s), (s, s), (0, 0)))  # (N, H + 2s, W + 2s, C)
    corner = jax.random.randint(key, (n, 2), 0, 2 * s + 1)  # top-left of each crop
    crop = lambda image, at: jax.lax.dynamic_slice(image, (at[0], at[1], 0), (h, w, c))
    return jax.vmap(crop)(padded, corner)


def fit(
    apply: Callable,
    params: Any,
    optimizer: optax.GradientTransformation,
    train_data: tuple[Any, Any],
    *,
    epochs: int,
    batch_size: int,
    key: jax.Array,
    eval_data: tuple[Any, Any] | None = None,
    progress: bool = True,
    devices: Sequence[jax.Device] | None = None,
    augment: Callable | None = None,
    label_smoothing: float = 0.0,
) -> tuple[Any, dict[str, list[float]]]:
    """Train with minibatch gradient steps; return the trained params and per-epoch history.

    Each epoch visits the examples in an order drawn from ``fold_in(key, epoch)`` and takes
    ``len(x) // batch_size`` steps; the remainder (different examples each epoch) is left out
    so that every batch has the same shape and the step compiles once.

    Args:
        apply: ``apply(params, x) -> logits`` of shape (N, num_classes).
        params: the initial parameters (not modified).
        optimizer: an optax `GradientTransformation`.
        train_data: ``(x, y)``: x float array (N, ...) such as NHWC images, y integer (N,).
            Convert uint8 images with `cnnlib.data.to_float`.
        epochs: passes over the data, >= 1.
        batch_size: examples per step, >= 1, at most N, divisible by the number of devices.
        key: `jax.random` key; the same key gives the same result.
        eval_data: optional ``(x, y)`` evaluated after every epoch.
        progress: show a tqdm progress bar.
        devices: devices to split each batch over; default all of `jax.devices()`.
        augment: optional ``augment(key, x) -> x`` applied to every training batch (see
            `make_train_step`); its keys come from `key` too, one per step.
        label_smoothing: passed to `cross_entropy`; evaluation always uses plain
            cross-entropy.

    Returns:
        ``(params, history)``; history has lists with one float per epoch: "loss" and
        "accuracy" (means over the epoch's batches, measured before each update), and
        "eval_loss" and "eval_accuracy" when `eval_data` is given.

    Raises:
        TypeError: uint8 or other non-float images, non-integer labels, a bad optimizer.
        ValueError: mismatched lengths, a batch size that is too large or does not divide
            evenly over the devices, epochs < 1.

    Example:
        >>> (xtr, ytr), (xte, yte) = fashion_mnist()
        >>> params, history = fit(model.apply, params, optax.adam(1e-3), (to_float(xtr), ytr),
        ...                       epochs=3, batch_size=128, key=jax.random.key(0))

    Introduced in chapter 06, notebooks/06-training.ipynb.
    """
    where = "fit"
    x, y = _check_data(train_data, where, "train_data")
    if eval_data is not None:
        _check_data(eval_data, where, "eval_data")
    _check_optimizer(optimizer, where)
    _check_augment(augment, where)
    _check_smoothing(label_smoothing, where)
    epochs = check_positive_int(epochs, "epochs", where)
    batch_size = check_positive_int(batch_size, "batch_size", where)
    devices = list(jax.devices() if devices is None else devices)
    if batch_size > len(x):
        raise ValueError(
            f"{where}: `batch_size` must be at most the number of examples {len(x)}; got "
            f"{batch_size}. Use batch_size={min(len(x), 128)} or more data."
        )
    if batch_size % len(devices):
        raise ValueError(
            f"{where}: `batch_size` must be divisible by the number of devices {len(devices)} "
            f"(each gets an equal share); got {batch_size}. Use "
            f"batch_size={batch_size // len(devices) * len(devices) or len(devices)}."
        )
    # Params replicated on every device, batches split along the "data" axis.
    mesh = Mesh(np.array(devices), ("data",))
    replicated = NamedSharding(mesh, PartitionSpec())
    split = NamedSharding(mesh, PartitionSpec("data"))
    params = jax.device_put(params, replicated)
    opt_state = jax.device_put(optimizer.init(params), replicated)
    step = make_train_step(apply, optimizer, augment=augment, label_smoothing=label_smoothing)

    history: dict[str, list[float]] = {"loss": [], "accuracy": []}
    if eval_data is not None:
        history.update(eval_loss=[], eval_accuracy=[])
    steps = len(x) // batch_size
    # Without a terminal or a notebook widget (a book build, a CI log) every redraw becomes a
    # new line of output: redraw once per epoch (set_postfix) instead of ten times a second.
    live = issubclass(tqdm, _widget_tqdm) or sys.stderr.isatty()
    bar = tqdm(
        total=epochs * steps, disable=not progress, unit="step", desc="fit",
        mininterval=0.1 if live else 60.0,
    )
    for epoch in range(epochs):
        epoch_key = jax.random.fold_in(key, epoch)
        order = np.asarray(jax.random.permutation(epoch_key, len(x)))
        if augment is not None:  # one key per step, independent of the permutation's
            step_keys = jax.device_put(jax.random.split(jax.random.fold_in(epoch_key, 1), steps),
                                       replicated)
        losses, accs = [], []  # device scalars: no host sync inside the epoch
        for i in range(steps):
            idx = order[i * batch_size : (i + 1) * batch_size]
            xb, yb = jax.device_put((x[idx], y[idx]), split)  # (B, ...) split over devices
            if augment is None:
                params, opt_state, loss, acc = step(params, opt_state, xb, yb)
            else:
                params, opt_state, loss, acc = step(params, opt_state, xb, yb, step_keys[i])
            losses.append(loss)
            accs.append(acc)
            bar.update()
        history["loss"].append(float(jnp.mean(jnp.stack(losses))))
        history["accuracy"].append(float(jnp.mean(jnp.stack(accs))))
        postfix = {"loss": f"{history['loss'][-1]:.4f}"}
        if eval_data is not None:
            eval_loss, eval_acc = evaluate(apply, params, *eval_data)
            history["eval_loss"].append(eval_loss)
            history["eval_accuracy"].append(eval_acc)
            postfix["eval_acc"] = f"{eval_acc:.4f}"
        bar.set_postfix(postfix)
    bar.close()
    return params, history


def evaluate(
    apply: Callable, params: Any, x: Any, y: Any, batch_size: int = 1000
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a whole data set, in batches.

    The last batch is padded to `batch_size` and the padding masked out, so one program serves
    every batch and the result is exact for any N.

    Args:
        apply: ``apply(params, x) -> logits``.
        params: the parameters.
        x: float array (N, ...), y: integer array (N,).
        batch_size: examples per forward pass, >= 1.

    Returns:
        ``(loss, accuracy)`` as Python floats.

    Example:
        >>> loss, acc = evaluate(model.apply, params, to_float(x_test), y_test)

    Introduced in chapter 06, notebooks/06-training.ipynb.
    """
    where = "evaluate"
    x, y = _check_data((x, y), where, "x, y")
    batch_size = check_positive_int(batch_size, "batch_size", where)
    batch_size = min(batch_size, len(x))
    total_loss, total_correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        real = len(xb)
        if real < batch_size:  # pad with copies of the first example; masked below
            fill = batch_size - real
            xb = np.concatenate([xb, np.repeat(xb[:1], fill, axis=0)])
            yb = np.concatenate([yb, np.repeat(yb[:1], fill, axis=0)])
        mask = np.arange(batch_size) < real
        loss_sum, correct = _eval_batch(apply, params, xb, yb, mask)
        total_loss += float(loss_sum)
        total_correct += int(correct)
    return total_loss / len(x), total_correct / len(x)


@functools.partial(jax.jit, static_argnums=0)  # one program per model and batch shape
def _eval_batch(apply, params, x, y, mask):
    logits = apply(params, x)  # (B, num_classes)
    log_p = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(log_p, y[:, None].astype(jnp.int32), axis=1)[:, 0]  # (B,)
    correct = (jnp.argmax(logits, axis=-1) == y) & mask
    return jnp.sum(jnp.where(mask, nll, 0.0)), jnp.sum(correct)


# --- Checkpoints ------------------------------------------------------------------------------


def save_params(path: str | os.PathLike, params: Any) -> None:
    """Write nested dicts of arrays to an .npz file, exactly (values, shapes and dtypes).

    Keys are joined with "/": ``{"00_conv": {"w": ...}}`` is stored as "00_conv/w". The file
    is written to a temporary name and then renamed, so a crash never leaves half a file.

    Args:
        path: file to write (the name is used as given; ".npz" is not appended).
        params: nested dicts with string keys (no "/") and array leaves.

    Raises:
        TypeError: a node is not a dict or array, or a key is not a string.
        ValueError: a key contains "/" or is empty, or equals the reserved name.

    Example:
        >>> save_params("lenet.npz", params)
        >>> restored = load_params("lenet.npz", like=params)

    Introduced in chapter 06, notebooks/06-training.ipynb.
    """
    flat = _flatten(params, "", "save_params")
    arrays, odd = {}, []
    for key, value in flat.items():
        array = np.asarray(value)
        if array.dtype.kind == "V" or array.dtype.type.__module__.startswith("ml_dtypes"):
            odd.append(f"{key}={array.dtype.name}")  # bfloat16 etc.: store the bits
            array = array.view(f"u{array.dtype.itemsize}")
        arrays[key] = array
    if odd:
        arrays[_DTYPES_KEY] = np.array(odd)  # unicode strings, no pickle needed
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".params.", suffix=".npz.part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_params(path: str | os.PathLike, like: Any = None) -> dict:
    """Read params written by `save_params`; optionally check them against `like`.

    Args:
        path: the .npz file.
        like: optional params (arrays or `jax.ShapeDtypeStruct` leaves, e.g. from
            `cnnlib.layers.param_shapes`) the file must match key for key, in shape and dtype.

    Returns:
        Nested dicts of NumPy arrays, bitwise equal to what was saved (jax functions take them
        as they are).

    Raises:
        ValueError: the file does not match `like`; the message names the missing and extra
            keys, or the key whose shape or dtype differs.

    Example:
        >>> params = load_params("lenet.npz", like=params)

    Introduced in chapter 06, notebooks/06-training.ipynb.
    """
    with np.load(os.fspath(path), allow_pickle=False) as data:
        flat = {key: data[key] for key in data.files}
    for entry in flat.pop(_DTYPES_KEY, np.array([], str)).tolist():
        key, dtype = entry.rsplit("=", 1)
        flat[key] = flat[key].view(jnp.dtype(dtype))
    if like is not None:
        _check_like(flat, _flatten(like, "", "load_params"), os.fspath(path))
    return _unflatten(flat)


def _flatten(tree, prefix, where):
    if not isinstance(tree, dict):
        raise TypeError(
            f"{where}: params must be nested dicts of arrays; got {type(tree).__name__} at "
            f"{repr(prefix) if prefix else 'the top'}. Convert lists or tuples to dicts with "
            f"string keys."
        )
    flat = {}
    for key, value in tree.items():
        if not isinstance(key, str) or not key or "/" in key or key == _DTYPES_KEY:
            raise (TypeError if not isinstance(key, str) else ValueError)(
                f"{where}: every key must be a non-empty string without '/' (it joins nested "
                f"keys) other than {_DTYPES_KEY!r}; got {key!r} under "
                f"{repr(prefix) if prefix else 'the top'}. "
                f"Rename it."
            )
        name = f"{prefix}/{key}" if prefix else key
        if isinstance(value, dict):
            flat.update(_flatten(value, name, where))
        elif hasattr(value, "shape") and hasattr(value, "dtype"):
            flat[name] = value
        else:
            raise TypeError(
                f"{where}: params must be nested dicts of arrays; got {type(value).__name__} "
                f"at {name!r}. Convert it with np.asarray."
            )
    return flat


def _unflatten(flat):
    tree: dict = {}
    for name, value in flat.items():
        *parents, leaf = name.split("/")
        node = tree
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return tree


def _check_like(flat, like, path):
    missing, extra = sorted(set(like) - set(flat)), sorted(set(flat) - set(like))
    if missing or extra:
        raise ValueError(
            f"load_params: {path} does not match `like`: missing keys {missing}, extra keys "
            f"{extra}. Load it with like=None to inspect it, or build the model it was saved "
            f"from."
        )
    for key in sorted(like):
        want, got = like[key], flat[key]
        if tuple(want.shape) != got.shape or jnp.dtype(want.dtype) != got.dtype:
            raise ValueError(
                f"load_params: {path} entry {key!r} has shape {got.shape} and dtype {got.dtype}; "
                f"`like` has shape {tuple(want.shape)} and dtype {jnp.dtype(want.dtype)}. The "
                f"file was saved from a different model (or a different input size)."
            )


# --- Checks -----------------------------------------------------------------------------------


def _check_data(data, where, name):
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{where}: `{name}` must be a pair (x, y); got {type(data).__name__}.")
    x, y = data
    if not hasattr(x, "dtype") or not hasattr(y, "dtype"):
        raise TypeError(
            f"{where}: `{name}` must be arrays (x, y); got ({type(x).__name__}, "
            f"{type(y).__name__}). Convert them with np.asarray."
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        fix = (
            "Convert uint8 images with cnnlib.data.to_float(x) (float32 NHWC in [0, 1])."
            if x.dtype == np.uint8
            else "Convert it with x.astype(np.float32)."
        )
        raise TypeError(f"{where}: x in `{name}` must be a float array; got {x.dtype}. {fix}")
    if not jnp.issubdtype(y.dtype, jnp.integer) or np.ndim(y) != 1:
        raise TypeError(
            f"{where}: y in `{name}` must be integer class labels of shape (N,); got "
            f"{y.dtype} of shape {np.shape(y)}. Use labels like y_train from fashion_mnist()."
        )
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(
            f"{where}: x and y in `{name}` must have the same non-zero length; got {len(x)} and "
            f"{len(y)}."
        )
    return np.asarray(x), np.asarray(y)


def _check_logits_labels(logits, labels, where):
    if np.ndim(logits) != 2 or np.shape(labels) != np.shape(logits)[:1]:
        raise ValueError(
            f"{where}: `logits` must have shape (N, num_classes) and `labels` shape (N,); got "
            f"{np.shape(logits)} and {np.shape(labels)}. Pass integer labels, not one-hot."
        )
    if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        raise TypeError(
            f"{where}: `labels` must be integers (class indices); got {jnp.result_type(labels)}. "
            f"Use labels.astype(jnp.int32); for one-hot targets use argmax(axis=-1) first."
        )


def _check_smoothing(label_smoothing, where):
    real = isinstance(label_smoothing, numbers.Real) and not isinstance(label_smoothing, bool)
    if not real or not 0 <= label_smoothing < 1:
        raise ValueError(
            f"{where}: `label_smoothing` must be a number in [0, 1); got {label_smoothing!r}. "
            f"Use 0 for plain cross-entropy or a small value such as 0.1."
        )
    return float(label_smoothing)


def _check_augment(augment, where):
    if augment is not None and not callable(augment):
        raise TypeError(
            f"{where}: `augment` must be None or a function augment(key, x) -> x; got "
            f"{type(augment).__name__}. Pass e.g. functools.partial(random_shift, max_shift=1)."
        )


def _check_optimizer(optimizer, where):
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            f"{where}: `optimizer` must be an optax GradientTransformation; got "
            f"{type(optimizer).__name__}. Use e.g. optax.adam(1e-3)."
        )
