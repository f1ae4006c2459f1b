"""Training: loss, accuracy, augmentation, a jitted optimizer step, a fit loop, evaluation.

Introduced in chapter 06, notebooks/06-training.ipynb; keys, train mode and state (Dropout,
BatchNorm) in chapter 07, notebooks/07-going-deeper.ipynb.

`fit` works with any `Layer`'s apply (or any function ``apply(params, x) -> logits``) and any
optax `GradientTransformation`. It is deterministic for a given `key`: the key decides the
order of the examples, the augmentation and every dropout mask. When more than one device is
visible (or passed in `devices`), each batch is split along a "data" mesh axis and the
parameters are replicated; `jax.jit` inserts the gradient all-reduce (data parallelism, no
code change in the step).

Nothing fails silently: before the first step `fit` checks the data on the host (float and
finite images, integer labels in range, shapes the model accepts, for the training and the
validation data alike), and a loss that stops being finite ends training with an error naming
the epoch and step. Checkpoints are in `cnnlib.checkpoint`.

In a job of several processes (`cnnlib.distributed.initialize`), `fit` and `evaluate` work
unchanged: every process passes the same arguments and feeds its own slice of each global
batch, and every process returns the same result; see `cnnlib.distributed`.
"""

from __future__ import annotations

import functools
import inspect
import sys
import warnings
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from cnnlib import distributed
from cnnlib._validate import (
    check_fraction, check_key, check_max_shift, check_nhwc, check_positive_int,
)

with warnings.catch_warnings():
    # tqdm.auto warns (TqdmWarning) when ipywidgets is missing, as it is on purpose in the book's
    # build environment; without this every notebook's output would carry that warning.
    warnings.simplefilter("ignore")
    from tqdm.auto import tqdm
    from tqdm.notebook import IProgress, tqdm as _widget_tqdm
    if IProgress is None:  # no ipywidgets; tqdm < 4.63 still picks the widget bar, which raises
        from tqdm.std import tqdm


def cross_entropy(logits: Any, labels: Any, label_smoothing: float = 0.0) -> jax.Array:
    """Mean softmax cross-entropy with integer labels, computed stably with `log_softmax`.

    ``mean_n( logsumexp(logits[n]) - logits[n, labels[n]] )``; no exp overflows, whatever
    the size of the logits. With label smoothing e the target is ``1 - e`` on the label plus
    ``e / num_classes`` on every class (Szegedy et al. 2016), so the loss no longer rewards
    pushing one logit without bound.

    A label outside 0..num_classes - 1 raises a ValueError when the labels are concrete (an
    eager call); inside `jax.jit`, where values are unknown while tracing, it makes the loss
    NaN, which `fit` reports, instead of a finite wrong number.

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
    e = _check_loss_args(logits, labels, label_smoothing, "cross_entropy")
    log_p = jax.nn.log_softmax(logits, axis=-1)  # (N, num_classes)
    # A label outside 0..K-1 reads NaN ("fill"), not a wrapped-around class: -1 is not K - 1.
    labels = jnp.asarray(labels, jnp.int32)
    index = jnp.where(labels < 0, log_p.shape[-1], labels)[:, None]  # (N, 1)
    nll = -jnp.take_along_axis(log_p, index, axis=1, mode="fill", fill_value=jnp.nan)[:, 0]
    if e:
        nll = (1 - e) * nll - e * jnp.mean(log_p, axis=-1)
    return jnp.mean(nll)


def accuracy(logits: Any, labels: Any) -> jax.Array:
    """Fraction of rows whose largest logit is at the label (rows with a NaN never count).

    Args:
        logits: array of shape (N, num_classes).
        labels: integer array of shape (N,), values in 0..num_classes - 1.

    Returns:
        A scalar float32 in [0, 1].

    Example:
        >>> float(accuracy(jnp.array([[0.0, 1.0], [1.0, 0.0]]), jnp.array([1, 1])))
        0.5

    Introduced in chapter 06, notebooks/06-training.ipynb.
    """
    _check_logits_labels(logits, labels, "accuracy")
    right = (jnp.argmax(logits, axis=-1) == labels) & jnp.all(jnp.isfinite(logits), axis=-1)
    return jnp.mean(right).astype(jnp.float32)


def make_train_step(
    apply: Callable,
    optimizer: optax.GradientTransformation,
    *,
    augment: Callable | None = None,
    label_smoothing: float = 0.0,
) -> Callable:
    """One jitted optimisation step on a batch.

    Args:
        apply: a `Layer`'s apply (``model.apply``), called in training mode with the step's
            key; or any ``apply(params, x) -> logits`` of shape (N, num_classes).
        optimizer: any optax `GradientTransformation` (e.g. ``optax.adam(1e-3)``).
        augment: optional ``augment(key, x) -> x`` applied to the batch inside the step, such
            as ``functools.partial(random_shift, max_shift=1)``.
        label_smoothing: passed to `cross_entropy`.

    Returns:
        ``step(params, opt_state, x, y, key=None) -> (params, opt_state, loss, accuracy)``,
        jitted. `key` is needed by `augment` (which gets it as it is) and by layers that draw
        random numbers in training, such as Dropout (the model gets ``fold_in(key, 1)``). For a
        model with state: ``step(params, opt_state, x, y, key, state) -> (params, opt_state,
        state, loss, accuracy)``. Loss and accuracy are those of the (augmented) batch before
        the update. With a batch sharded across devices and replicated params, jit averages
        the gradients across devices itself.

    Example:
        >>> step = make_train_step(model.apply, optax.adam(1e-3))
        >>> params, opt_state, loss, acc = step(params, opt_state, x, y, jax.random.key(0))

    Introduced in chapter 06, notebooks/06-training.ipynb.
    """
    forward, e = _check_step_args(apply, optimizer, augment, label_smoothing, "make_train_step")

    def loss_fn(params, x, y, key, state):
        logits, state = forward(params, x, key=key, train=True, state=state)  # (N, classes)
        return cross_entropy(logits, y, e), (logits, state)

    def step(params, opt_state, x, y, key=None, state=None):
        if augment is not None:
            x = augment(_step_key(key), x)  # the batch as the model sees it
        model_key = None if key is None else jax.random.fold_in(key, 1)  # for Dropout
        (loss, (logits, state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, x, y, model_key, state)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        if state is None:
            return params, opt_state, loss, accuracy(logits, y)
        return params, opt_state, state, loss, accuracy(logits, y)

    return jax.jit(step)


# jit keeps its compiled programs on the function object, so a new step per `fit` call would be
# traced and compiled again for every seed. `fit` reuses the steps of its recent calls (with
# their compiled programs), keyed by the apply, optimizer, augment and smoothing it was given.
_cached_train_step = functools.lru_cache(maxsize=16)(make_train_step)


def _train_step(apply, optimizer, augment, label_smoothing):
    """`make_train_step`'s step, the same object for the same (hashable) arguments."""
    try:
        hash((apply, optimizer, augment, label_smoothing))
    except TypeError:  # e.g. an augment object without __hash__: a step of its own
        return make_train_step(apply, optimizer, augment=augment,
                               label_smoothing=label_smoothing)
    return _cached_train_step(apply, optimizer, augment=augment, label_smoothing=label_smoothing)


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
    check_key(key, "key", where)
    check_nhwc(x, where)
    n, h, w, c = x.shape
    s = check_max_shift(max_shift, x.shape, where)
    padded = jnp.pad(x, ((0, 0), (s, s), (s, s), (0, 0)))  # (N, H + 2s, W + 2s, C)
    corner = jax.random.randint(key, (n, 2), 0, 2 * s + 1)  # top-left of each crop
    crop = lambda image, at: jax.lax.dynamic_slice(image, (at[0], at[1], 0), (h, w, c))
    return jax.vmap(crop)(padded, corner)


def random_flip(key: jax.Array, x: Any) -> jax.Array:
    """Mirror each image left-right with probability 1/2 (data augmentation).

    For classes that have no handedness, as garments and shoes, the mirror image has the same
    label. Use it with `random_shift` through one function, e.g. ``lambda key, x:
    random_flip(key, random_shift(jax.random.fold_in(key, 1), x))``.

    Args:
        key: `jax.random` key.
        x: float array (N, H, W, C).

    Returns:
        Array of the shape and dtype of `x`.

    Example:
        >>> x = jnp.arange(4.0).reshape(1, 1, 4, 1)
        >>> y = random_flip(jax.random.key(0), x)
        >>> y.ravel().tolist() in ([0.0, 1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 0.0])
        True

    Introduced in chapter 07, notebooks/07-going-deeper.ipynb.
    """
    check_key(key, "key", "random_flip")
    check_nhwc(x, "random_flip")
    flip = jax.random.bernoulli(key, 0.5, (x.shape[0], 1, 1, 1))
    return jnp.where(flip, x[:, :, ::-1, :], x)


def split_validation(
    x: Any, y: Any, fraction: float = 0.1
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Hold out `fraction` of every class, evenly spaced: ``(train, validation)``.

    Within each class, examples are taken at evenly spaced positions of the data's order (for
    0.1, one in ten), so the split is stratified, the same for every seed and every JAX or NumPy
    version, and needs no key. Fashion-MNIST's training order is already random, so evenly
    spaced examples are a random sample. Choose hyperparameters on the validation part; touch
    the test set once, for the number you report.

    Args:
        x: array (N, ...).
        y: integer labels (N,).
        fraction: the share held out, in (0, 1).

    Returns:
        ``((x_train, y_train), (x_val, y_val))``, each in the original order.

    Example:
        >>> (xt, yt), (xv, yv) = split_validation(np.zeros((100, 2)), np.arange(100) % 4, 0.2)
        >>> len(yt), len(yv), np.bincount(yv).tolist()
        (80, 20, [5, 5, 5, 5])

    Introduced in chapter 06, notebooks/06-training.ipynb.
    """
    where = "split_validation"
    check_fraction(fraction, "fraction", where, zero=False, fix="Use e.g. 0.1.")
    x, y = np.asarray(x), np.asarray(y)
    if y.ndim != 1 or len(x) != len(y) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"{where}: `x` and `y` must have the same length and `y` integer shape (N,); got "
            f"{x.shape} and {y.shape} ({y.dtype})."
        )
    held = np.zeros(len(y), bool)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)  # (n_c,) in the data's order
        k = np.arange(len(members))
        held[members[np.floor((k + 1) * fraction) > np.floor(k * fraction)]] = True
    if held.all() or not held.any():
        raise ValueError(
            f"{where}: `fraction` {fraction} leaves no example on one side of the split of "
            f"{len(y)} examples. Use more data or a fraction nearer 0.5."
        )
    return (x[~held], y[~held]), (x[held], y[held])


def fit(
    apply: Callable,
    params: Any,
    optimizer: optax.GradientTransformation,
    train_data: tuple[Any, Any],
    *,
    epochs: int,
    batch_size: int,
    key: jax.Array,
    validation: float | tuple[Any, Any] | None = None,
    state: Any = None,
    progress: bool = True,
    devices: Sequence[jax.Device] | None = None,
    augment: Callable | None = None,
    label_smoothing: float = 0.0,
    on_nonfinite: str = "raise",
) -> tuple:
    """Train with minibatch gradient steps; return the trained params and per-epoch history.

    Each epoch visits the examples in an order drawn from ``fold_in(key, epoch)`` and takes
    ``len(x) // batch_size`` steps; the remainder (different examples each epoch) is left out
    so that every batch has the same shape and the step compiles once. Every step gets its own
    key (for `augment` and for layers such as Dropout) and runs the model in training mode.

    Args:
        apply: a `Layer`'s apply (``model.apply``), or any ``apply(params, x) -> logits``.
        params: the initial parameters (not modified).
        optimizer: an optax `GradientTransformation`.
        train_data: ``(x, y)``: x float array (N, ...) such as NHWC images, y integer (N,).
            Convert uint8 images with `cnnlib.data.to_float`.
        epochs: passes over the data, >= 1.
        batch_size: examples per step, >= 1, at most N, divisible by the number of devices.
        key: `jax.random` key; the same key gives the same result.
        validation: data evaluated after every epoch: ``(x_val, y_val)``, or a fraction in
            (0, 1) held out of `train_data` by `split_validation` (the same examples for
            every key). Use it, not the test set, to choose epochs and learning rates.
        state: the model's state (`cnnlib.layers.init_state`), for a model with state such as
            BatchNorm; then fit returns the trained state too.
        progress: show a tqdm progress bar.
        devices: devices to split each batch over; default all of `jax.devices()` (in a job
            of several processes, the devices of all of them). Simulated CPU devices of one
            process (chapter 08) wait for each other at every all-reduce, and XLA:CPU ends the
            process when one has waited 40 s; on a slow 2-core virtual machine that happened
            in rare long runs (benchmarks/README.md, "A hazard of two devices in one process").
        augment: optional ``augment(key, x) -> x`` applied to every training batch (see
            `make_train_step`); its keys come from `key` too, one per step.
        label_smoothing: passed to `cross_entropy`; validation always uses plain
            cross-entropy.
        on_nonfinite: "raise" (default) stops with a FloatingPointError when the training loss
            is NaN or infinite; "warn" warns once and carries on.

    Calls with the same apply, optimizer and augment objects (and label smoothing) share one
    jitted step, so training one model from several seeds (`experiments.train_seeds`)
    compiles it once.

    Returns:
        ``(params, history)``, or ``(params, state, history)`` when `state` is given. history
        has lists with one float per epoch: "loss" and "accuracy" (means over the epoch's
        batches, measured before each update), and "val_loss" and "val_accuracy" (after the
        epoch, in evaluation mode) with `validation`.

    Raises:
        TypeError: uint8 or other non-float images, non-integer labels, a bad optimizer or key.
        ValueError: mismatched lengths, labels outside 0..num_classes - 1, non-finite images,
            data the model cannot take, a batch size that is too large or does not divide
            evenly over the devices, epochs < 1, no devices.
        FloatingPointError: the loss became NaN or infinite (message: epoch and step).

    Example:
        >>> (xtr, ytr), _ = fashion_mnist()
        >>> params, history = fit(model.apply, params, optax.adam(1e-3), (to_float(xtr), ytr),
        ...                       epochs=3, batch_size=128, key=jax.random.key(0),
        ...                       validation=0.1)

    Introduced in chapter 06, notebooks/06-training.ipynb.
    """
    where = "fit"
    forward = _forward(apply, where)
    x, y = _check_data(train_data, where, "train_data")
    check_key(key, "key", where)
    _check_optimizer(optimizer, where)
    _check_augment(augment, where)
    _check_smoothing(label_smoothing, where)
    epochs = check_positive_int(epochs, "epochs", where)
    batch_size = check_positive_int(batch_size, "batch_size", where)
    if on_nonfinite not in ("raise", "warn"):
        raise ValueError(
            f"{where}: `on_nonfinite` must be \"raise\" or \"warn\"; got {on_nonfinite!r}."
        )
    if validation is not None and not isinstance(validation, (tuple, list)):
        (x, y), validation = split_validation(x, y, validation)
    val = None if validation is None else _check_data(validation, where, "validation")
    devices = _check_devices(devices, where)
    if batch_size > len(x):
        raise ValueError(
            f"{where}: `batch_size` must be at most the number of training examples {len(x)}; "
            f"got {batch_size}. Use batch_size={min(len(x), 128)} or more data."
        )
    if batch_size % len(devices):
        across = f" of {jax.process_count()} processes" if jax.process_count() > 1 else ""
        raise ValueError(
            f"{where}: `batch_size` must be divisible by the number of devices {len(devices)}"
            f"{across} (each gets an equal share); got {batch_size}. Use "
            f"batch_size={batch_size // len(devices) * len(devices) or len(devices)}."
        )
    # Before the first step: the model accepts both data sets, and labels fit its classes.
    classes = _check_model_accepts(forward, params, state, x[:batch_size], where, "train_data")
    _check_labels(y, classes, where, "train_data")
    if val is not None:
        _check_model_accepts(forward, params, state, val[0][:1], where, "validation")
        _check_labels(val[1], classes, where, "validation")
    distributed.check_same(where, {  # several processes: the same run in each
        "the number of training examples": len(x), "the number of validation examples":
        0 if val is None else len(val[0]), "batch_size": batch_size, "epochs": epochs,
        "the number of devices": len(devices), "the training data": (x, y),
        "the validation data": val, "the params": params, "the state": state, "the key": key})

    # Params (and state) replicated on every device, batches split along the "data" axis.
    mesh = Mesh(np.array(devices), ("data",))
    replicated = NamedSharding(mesh, PartitionSpec())
    split = NamedSharding(mesh, PartitionSpec("data"))
    params = distributed.replicate(params, replicated)
    opt_state = distributed.replicate(optimizer.init(params), replicated)
    if state is not None:
        state = distributed.replicate(state, replicated)
    step = _train_step(apply, optimizer, augment, label_smoothing)  # compiled once per model

    history: dict[str, list[float]] = {"loss": [], "accuracy": []}
    if val is not None:
        history.update(val_loss=[], val_accuracy=[])
    steps = len(x) // batch_size
    # Without a terminal or a notebook widget (a book build, a CI log) every redraw becomes a
    # new line of output: redraw once per epoch (set_postfix) instead of ten times a second.
    live = issubclass(tqdm, _widget_tqdm) or sys.stderr.isatty()
    bar = tqdm(
        total=epochs * steps, disable=not progress or jax.process_index() > 0, unit="step",
        desc="fit", mininterval=0.1 if live else 60.0,
    )
    warned = False
    for epoch in range(epochs):
        epoch_key = jax.random.fold_in(key, epoch)
        order = np.asarray(jax.random.permutation(epoch_key, len(x)))
        # One key per step, independent of the permutation's.
        step_keys = distributed.replicate(
            jax.random.split(jax.random.fold_in(epoch_key, 1), steps), replicated)
        losses, accs = [], []  # device scalars: no host sync inside the epoch
        for i in range(steps):
            idx = order[i * batch_size : (i + 1) * batch_size]
            xb, yb = distributed.put_batch((x, y), idx, split)  # (B, ...) split over devices
            if state is None:
                params, opt_state, loss, acc = step(params, opt_state, xb, yb, step_keys[i])
            else:
                params, opt_state, state, loss, acc = step(params, opt_state, xb, yb,
                                                           step_keys[i], state)
            losses.append(loss)
            accs.append(acc)
            bar.update()
        losses = jnp.stack(losses)
        bad = np.flatnonzero(~np.isfinite(np.asarray(losses)))
        if bad.size and not warned:
            message = (
                f"{where}: the training loss became {float(losses[bad[0]])} at epoch "
                f"{epoch + 1} of {epochs}, step {bad[0] + 1} of {steps}. Lower the learning "
                f"rate, check the data, or clip gradients (optax.clip_by_global_norm)."
            )
            if on_nonfinite == "raise":
                bar.close()
                raise FloatingPointError(message)
            if jax.process_index() == 0:
                warnings.warn(message, RuntimeWarning, stacklevel=2)
            warned = True
        history["loss"].append(float(jnp.mean(losses)))
        history["accuracy"].append(float(jnp.mean(jnp.stack(accs))))
        postfix = {"loss": f"{history['loss'][-1]:.4f}"}
        if val is not None:
            val_loss, val_acc = evaluate(apply, params, *val, state=state)
            history["val_loss"].append(val_loss)
            history["val_accuracy"].append(val_acc)
            postfix["val_acc"] = f"{val_acc:.4f}"
        bar.set_postfix(postfix)
    bar.close()
    return (params, history) if state is None else (params, state, history)


def evaluate(
    apply: Callable, params: Any, x: Any, y: Any, batch_size: int = 250, *, state: Any = None
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a whole data set, in batches, in evaluation mode.

    The last batch is padded to `batch_size` and the padding masked out, so one program serves
    every batch and the result is exact for any N.

    Args:
        apply: a `Layer`'s apply, or any ``apply(params, x) -> logits``.
        params: the parameters.
        x: float array (N, ...), y: integer array (N,) in 0..num_classes - 1.
        batch_size: examples per forward pass, >= 1. The result does not depend on it (up
            to rounding), the speed does: XLA's CPU convolution of one input channel is slow
            in large batches, and the book's networks evaluate up to 1.7 times faster per
            image in batches of 250 than of 1,000 (benchmarks/README.md, "Evaluation batch
            size").
        state: the model's state, for a model with state (BatchNorm uses its running
            averages).

    Returns:
        ``(loss, accuracy)`` as Python floats.

    Example:
        >>> loss, acc = evaluate(model.apply, params, to_float(x_test), y_test)

    Introduced in chapter 06, notebooks/06-training.ipynb.
    """
    where = "evaluate"
    forward = _forward(apply, where)
    x, y = _check_data((x, y), where, "x, y")
    batch_size = min(check_positive_int(batch_size, "batch_size", where), len(x))
    classes = _check_model_accepts(forward, params, state, x[:batch_size], where, "x")
    _check_labels(y, classes, where, "y")
    if jax.process_count() > 1:
        return _evaluate_global(forward, params, state, x, y, batch_size, where)
    total_loss, total_correct = 0.0, 0
    for idx, mask in _batch_indices(len(x), batch_size):
        loss_sum, correct = _eval_batch(forward, params, state, x[idx], y[idx], mask)
        total_loss += float(loss_sum)
        total_correct += int(correct)
    return total_loss / len(x), total_correct / len(x)


def predict(
    apply: Callable, params: Any, x: Any, batch_size: int = 250, *, state: Any = None
) -> jax.Array:
    """The logits of every example of a data set, in batches, in evaluation mode.

    What ``jax.jit(apply)(params, x)`` computes, without holding every activation of the whole
    data set in memory at once, and at the batch size where XLA's CPU convolutions are fast
    (see `evaluate`). The last batch is padded, so one program serves every batch.

    Args:
        apply: a `Layer`'s apply, or any ``apply(params, x) -> logits``.
        params: the parameters.
        x: float array (N, ...), such as NHWC images.
        batch_size: examples per forward pass, >= 1.
        state: the model's state, for a model with state (BatchNorm uses its running
            averages).

    In a job of several processes each process predicts its own `x` (any number of examples)
    with the parameters that `fit` returned to it.

    Returns:
        The logits, shape (N, num_classes); ``predict(...).argmax(-1)`` are the predicted
        classes.

    Raises:
        FloatingPointError: the model returned NaN or infinite logits (diverged parameters).

    Example:
        >>> classes = predict(model.apply, params, to_float(x_test)).argmax(axis=-1)  # (N,)

    Introduced in chapter 06, notebooks/06-training.ipynb.
    """
    where = "predict"
    forward = _forward(apply, where)
    x = _check_x(x, where, "`x`")
    batch_size = min(check_positive_int(batch_size, "batch_size", where), len(x))
    _check_model_accepts(forward, params, state, x[:batch_size], where, "x")
    logits = jnp.concatenate([_predict_batch(forward, params, state, x[idx])[: real.sum()]
                              for idx, real in _batch_indices(len(x), batch_size)])  # (N, C)
    bad = np.flatnonzero(~np.all(np.isfinite(np.asarray(logits)), axis=-1))
    if bad.size:
        raise FloatingPointError(
            f"{where}: the model returned NaN or infinite logits for {bad.size} of the {len(x)} "
            f"examples (the first: example {bad[0]}). Check the parameters: did training "
            f"diverge?"
        )
    return logits


@functools.partial(jax.jit, static_argnums=0)  # one program per model and batch shape
def _predict_batch(forward, params, state, x):
    return forward(params, x, key=None, train=False, state=state)[0]  # (B, num_classes)


def _evaluate_global(forward, params, state, x, y, batch_size, where):
    """`evaluate` in a job of several processes: each feeds its slice of every global batch."""
    mesh = Mesh(np.array(jax.devices()), ("data",))
    split = NamedSharding(mesh, PartitionSpec("data"))
    batch_size = -(-batch_size // mesh.size) * mesh.size  # a multiple of the device count
    distributed.check_same(where, {"the number of examples": len(x), "batch_size": batch_size,
                                   "the data": (x, y), "the params": params, "the state": state})
    params, state = distributed.replicate((params, state), NamedSharding(mesh, PartitionSpec()))
    total_loss, total_correct = 0.0, 0
    for idx, mask in _batch_indices(len(x), batch_size):
        xb, yb = distributed.put_batch((x, y), idx, split)
        (mb,) = distributed.put_batch((mask,), np.arange(batch_size), split)
        loss_sum, correct = _eval_batch(forward, params, state, xb, yb, mb)  # global sums
        total_loss += float(loss_sum)
        total_correct += int(correct)
    return total_loss / len(x), total_correct / len(x)


def _batch_indices(n, batch_size):
    """(indices, real) of consecutive batches of `batch_size` over n examples: the last batch is
    padded with copies of its first example (real False there), so one program serves all."""
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size)
        real = idx < n
        yield np.where(real, idx, start), real


@functools.partial(jax.jit, static_argnums=0)  # one program per model and batch shape
def _eval_batch(forward, params, state, x, y, mask):
    logits = forward(params, x, key=None, train=False, state=state)[0]  # (B, num_classes)
    log_p = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(log_p, y[:, None].astype(jnp.int32), axis=1)[:, 0]  # (B,)
    right = (jnp.argmax(logits, axis=-1) == y) & jnp.all(jnp.isfinite(logits), axis=-1) & mask
    return jnp.sum(jnp.where(mask, nll, 0.0)), jnp.sum(right)


# --- Calling a model ----------------------------------------------------------------------------


class _Forward:
    """``forward(params, x, *, key, train, state) -> (logits, state)`` for any apply.

    A `Layer`'s apply takes `key` and `train` (and `state`, for a model with state); a plain
    function ``apply(params, x)`` is called without them. Hashable by the apply it wraps, so
    jitted helpers that take it as a static argument compile once per model.
    """

    def __init__(self, apply, where):
        self.apply = apply
        self.takes_keywords = _takes_keywords(apply)
        self.where = where

    def __call__(self, params, x, *, key, train, state):
        if not self.takes_keywords:
            if state is not None:
                raise TypeError(
                    f"{self.where}: `state` was given, but `apply` takes no keywords (it must "
                    f"accept state=, key= and train=, as a Layer's apply does)."
                )
            return self.apply(params, x), None
        kwargs = {"train": train}
        if key is not None:
            kwargs["key"] = key
        if state is None:
            return self.apply(params, x, **kwargs), None
        out = self.apply(params, x, state=state, **kwargs)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError(
                f"{self.where}: `apply` was called with state= and must return (y, state); got "
                f"{type(out).__name__}. Use a combinator (serial) as the model, or drop state=."
            )
        return out

    def __hash__(self):
        return hash(self.apply)

    def __eq__(self, other):
        return isinstance(other, _Forward) and other.apply == self.apply


def _forward(apply, where):
    if not callable(apply):
        raise TypeError(
            f"{where}: `apply` must be a function apply(params, x) -> logits; got "
            f"{type(apply).__name__}. Pass model.apply."
        )
    return _Forward(apply, where)


def _takes_keywords(apply):
    try:
        parameters = inspect.signature(apply).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is p.VAR_KEYWORD or p.name == "train" for p in parameters)


# --- Checks -----------------------------------------------------------------------------------


def _check_loss_args(logits, labels, label_smoothing, where):
    _check_logits_labels(logits, labels, where)
    return _check_smoothing(label_smoothing, where)


def _check_step_args(apply, optimizer, augment, label_smoothing, where):
    forward = _forward(apply, where)
    _check_optimizer(optimizer, where)
    _check_augment(augment, where)
    return forward, _check_smoothing(label_smoothing, where)


def _step_key(key):
    if key is None:
        raise ValueError(
            "make_train_step: with `augment`, the step needs a `key` (its fifth argument); got "
            "None. Pass one key per step, e.g. jax.random.fold_in(key, step)."
        )
    return key


def _check_data(data, where, name):
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{where}: `{name}` must be a pair (x, y); got {type(data).__name__}.")
    x, y = data
    if not hasattr(x, "dtype") or not hasattr(y, "dtype"):
        raise TypeError(
            f"{where}: `{name}` must be arrays (x, y); got ({type(x).__name__}, "
            f"{type(y).__name__}). Convert them with np.asarray."
        )
    _check_float(x, where, f"x in `{name}`")
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
    return _check_finite(np.asarray(x), where, f"x in `{name}`"), np.asarray(y)


def _check_x(x, where, what):
    """Inputs without labels (`predict`): a non-empty, finite float array (N, ...)."""
    if not hasattr(x, "dtype") or np.ndim(x) < 1:
        raise TypeError(
            f"{where}: {what} must be an array (N, ...); got {type(x).__name__}. Convert it "
            f"with np.asarray."
        )
    _check_float(x, where, what)
    if len(x) == 0:
        raise ValueError(f"{where}: {what} must hold at least one example; got shape "
                         f"{tuple(np.shape(x))}.")
    return _check_finite(np.asarray(x), where, what)


def _check_float(x, where, what):
    if not jnp.issubdtype(x.dtype, jnp.floating):
        fix = (
            "Convert uint8 images with cnnlib.data.to_float(x) (float32 NHWC in [0, 1])."
            if x.dtype == np.uint8
            else "Convert it with x.astype(np.float32)."
        )
        raise TypeError(f"{where}: {what} must be a float array; got {x.dtype}. {fix}")


def _check_finite(x, where, what):
    finite = np.isfinite(x)
    if not finite.all():
        raise ValueError(
            f"{where}: {what} must be finite; {np.size(finite) - np.count_nonzero(finite)} "
            f"of its {np.size(x)} values are NaN or infinite (the first in example "
            f"{int(np.argmin(finite.reshape(len(x), -1).all(axis=1)))}). Clean the data first."
        )
    return x


def _check_model_accepts(forward, params, state, xb, where, name):
    """Trace one forward pass on a batch of `name`'s shape: errors now, not after an epoch."""
    try:
        out = jax.eval_shape(
            lambda p, s, x: forward(p, x, key=None, train=False, state=s)[0], params, state, xb)
    except (ValueError, TypeError) as err:
        if type(err) not in (ValueError, TypeError):
            raise
        raise type(err)(
            f"{where}: the model cannot take x of `{name}` (shape {tuple(xb.shape[1:])} per "
            f"example): {err}"
        ).with_traceback(err.__traceback__) from None
    if len(out.shape) != 2:
        raise ValueError(
            f"{where}: the model must return logits of shape (N, num_classes); got "
            f"{tuple(out.shape)} for x of `{name}`. End it with Flatten() and Dense(num_classes)."
        )
    return out.shape[1]


def _check_labels(y, classes, where, name):
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= classes:
        raise ValueError(
            f"{where}: labels in `{name}` must lie in 0..{classes - 1} (the model has {classes} "
            f"outputs); got values from {low} to {high}. Check the labels, or give the last "
            f"layer {high + 1} outputs."
        )


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
    if not isinstance(labels, jax.core.Tracer) and np.size(labels):
        values = np.asarray(labels)
        classes = np.shape(logits)[1]
        if values.min() < 0 or values.max() >= classes:
            raise ValueError(
                f"{where}: `labels` must lie in 0..{classes - 1} (logits have {classes} "
                f"columns); got values from {values.min()} to {values.max()}."
            )


def _check_devices(devices, where):
    devices = list(jax.devices() if devices is None else devices)
    if not devices or not all(isinstance(d, jax.Device) for d in devices):
        raise ValueError(
            f"{where}: `devices` must be None (all devices) or a non-empty list of jax devices; "
            f"got {devices!r}. Use e.g. devices=jax.devices()[:2]."
        )
    processes = {d.process_index for d in devices}
    if len(processes) < jax.process_count():  # every process must feed a slice of each batch
        raise ValueError(
            f"{where}: in a job of {jax.process_count()} processes `devices` must include "
            f"devices of every process; got devices of processes {sorted(processes)}. Leave "
            f"devices=None (all devices of all processes)."
        )
    return devices


def _check_smoothing(label_smoothing, where):
    return check_fraction(
        label_smoothing, "label_smoothing", where, zero=True,
        fix="Use 0 for plain cross-entropy or a small value such as 0.1.",
    )


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
