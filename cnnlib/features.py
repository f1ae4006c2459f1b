"""What the layers of a trained network compute: activations per layer, the input patches that
excite a channel most, and linear probes.

Introduced in chapter 05, notebooks/05-hierarchy.ipynb. The records of
`cnnlib.receptive_field.receptive_field` are one per top-level layer, in the same order as
`layer_outputs`, so ``records[l]`` says which input pixels a unit of ``outputs[l]`` sees.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnlib._validate import check_positive_int
from cnnlib.layers import Layer
from cnnlib.layers.combinators import child_keys, run
from cnnlib.receptive_field import RFRecord, receptive_box


def layer_outputs(model: Layer, params: dict, x: Any, state: dict | None = None) -> list[jax.Array]:
    """The output of every top-level layer of a serial model, in order (evaluation mode).

    ``layer_outputs(model, params, x)[-1]`` equals ``model.apply(params, x)``.

    Args:
        model: a `serial` Layer (a single other Layer counts as a chain of one).
        params: its parameters, as from `init_params`.
        x: the input batch, e.g. (N, H, W, C).
        state: the model's state, for a model with state (BatchNorm).

    Returns:
        A list with one array per layer: (N, H_l, W_l, C_l) for spatial layers, (N, F) after
        Flatten, Dense or global pooling.

    Example:
        >>> model = serial(Conv(4, 3), Relu(), Flatten(), Dense(2))
        >>> _, params = init_params(model, jax.random.key(0), (1, 8, 8, 1))
        >>> [a.shape for a in layer_outputs(model, params, jnp.ones((1, 8, 8, 1)))]
        [(1, 6, 6, 4), (1, 6, 6, 4), (1, 144), (1, 2)]

    Introduced in chapter 05, notebooks/05-hierarchy.ipynb.
    """
    if not isinstance(model, Layer):
        raise TypeError(
            f"layer_outputs: `model` must be a Layer (e.g. serial(...)); got "
            f"{type(model).__name__}. Build it with cnnlib.layers or cnnlib.models."
        )
    layers = model.config["layers"] if model.name == "serial" else (model,)
    keys = child_keys(layers) if model.name == "serial" else ["model"]
    if model.name != "serial":
        params, state = {"model": params}, None if state is None else {"model": state}
    outputs = []
    for key, layer in zip(keys, layers):
        x, _ = run(layer, params.get(key, {}), x, key, None, False, state, "layer_outputs")
        outputs.append(x)
    return outputs


def top_activations(acts: Any, channel: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k images whose largest activation of `channel` is largest, and where it is.

    One position per image (its maximum), so the k results come from k different images, as
    in the patch figures of Zeiler and Fergus (2014).

    Args:
        acts: activations (N, H, W, C).
        channel: the channel, 0 <= channel < C.
        k: how many, 1 <= k <= N.

    Returns:
        ``(where, values)``: int array (k, 3) of (n, i, j) and float array (k,), largest first.

    Example:
        >>> acts = jnp.zeros((3, 4, 4, 1)).at[1, 2, 3, 0].set(5.0)
        >>> top_activations(acts, 0, 1)[0]
        array([[1, 2, 3]])

    Introduced in chapter 05, notebooks/05-hierarchy.ipynb.
    """
    acts = np.asarray(acts)
    if acts.ndim != 4:
        raise ValueError(
            f"top_activations: `acts` must have shape (N, H, W, C); got {acts.shape}. Pass the "
            f"output of a spatial layer (before Flatten)."
        )
    n, h, w, c = acts.shape
    if not 0 <= channel < c:
        raise ValueError(
            f"top_activations: `channel` must be in 0..{c - 1}; got {channel}. The activations "
            f"have {c} channels."
        )
    k = check_positive_int(k, "k", "top_activations")
    if k > n:
        raise ValueError(f"top_activations: `k` must be at most N = {n}; got {k}. Use k <= {n}.")
    flat = acts[..., channel].reshape(n, h * w)  # (N, H * W)
    best = flat.argmax(axis=1)  # (N,) position of each image's maximum
    values = flat[np.arange(n), best]
    order = np.argsort(-values, kind="stable")[:k]
    where = np.stack([order, best[order] // w, best[order] % w], axis=1)
    return where, values[order]


def crop_box(image: Any, box: tuple, fill: float = 0.0) -> np.ndarray:
    """Cut ``image[top:bottom, left:right]``, filling the parts outside the image with `fill`.

    Args:
        image: array (H, W, C).
        box: ``((top, bottom), (left, right))``, half-open, e.g. from `receptive_box`.
        fill: value for pixels outside the image (the padding a layer saw).

    Returns:
        NumPy array (bottom - top, right - left, C).

    Example:
        >>> crop_box(np.ones((4, 4, 1)), ((-1, 2), (3, 5)), fill=0)[..., 0]
        array([[0., 0.],
               [1., 0.],
               [1., 0.]])

    Introduced in chapter 05, notebooks/05-hierarchy.ipynb.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(
            f"crop_box: `image` must have shape (H, W, C); got {image.shape}. Pass one image, "
            f"x[n], not the batch."
        )
    (top, bottom), (left, right) = box
    h, w, c = image.shape
    out = np.full((bottom - top, right - left, c), fill, image.dtype)
    t, b, l, r = max(top, 0), min(bottom, h), max(left, 0), min(right, w)
    if t < b and l < r:
        out[t - top : b - top, l - left : r - left] = image[t:b, l:r]
    return out


def top_patches(
    x: Any, acts: Any, record: RFRecord, channel: int, k: int, fill: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Input patches, each one receptive field, where `channel` of a layer responds most.

    Args:
        x: the input images (N, H, W, C) that produced `acts`.
        acts: that layer's activations (N, H_l, W_l, C_l).
        record: the layer's `RFRecord` from `receptive_field`.
        channel, k: as in `top_activations`.
        fill: value for the parts of a patch outside the image.

    Returns:
        ``(patches, values)``: (k, r_h, r_w, C) and (k,), largest first.

    Introduced in chapter 05, notebooks/05-hierarchy.ipynb.
    """
    where, values = top_activations(acts, channel, k)
    x = np.asarray(x)
    patches = [crop_box(x[n], receptive_box(record, i, j), fill) for n, i, j in where]
    return np.stack(patches), values


class ProbeResult(NamedTuple):
    """Accuracies of a linear probe. Introduced in chapter 05, notebooks/05-hierarchy.ipynb."""

    train_accuracy: float
    test_accuracy: float


def linear_probe(
    train: tuple[Any, Any],
    test: tuple[Any, Any],
    *,
    steps: int = 300,
    learning_rate: float = 0.01,
    weight_decay: float = 1e-2,
) -> ProbeResult:
    """Fit a softmax-regression classifier on frozen features; report its accuracies.

    Alain and Bengio (2016): how linearly decodable the label is from a layer. Each feature is
    standardised with the training mean and standard deviation; the weights start at zero and
    take `steps` full-batch Adam steps on the cross-entropy plus ``weight_decay * |W|^2 / 2``,
    so the result is deterministic.

    Args:
        train: ``(features, labels)``: features (N, ...) (flattened to (N, F)), labels int (N,).
        test: the same for held-out examples.
        steps: optimisation steps, >= 1.
        learning_rate: Adam's step size.
        weight_decay: L2 penalty on the weights.

    Returns:
        `ProbeResult` with train and test accuracy (floats in [0, 1]).

    Example:
        >>> f = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array([0, 0, 1, 1])
        >>> linear_probe((f, y), (f, y)).test_accuracy
        1.0

    Introduced in chapter 05, notebooks/05-hierarchy.ipynb.
    """
    (ftr, ytr), (fte, yte) = _probe_data(train, "train"), _probe_data(test, "test")
    if ftr.shape[1] != fte.shape[1]:
        raise ValueError(
            f"linear_probe: train and test features must have the same width; got "
            f"{ftr.shape[1]} and {fte.shape[1]}. Take both from the same layer."
        )
    steps = check_positive_int(steps, "steps", "linear_probe")
    mean, std = ftr.mean(axis=0), ftr.std(axis=0) + 1e-6  # (F,)
    ftr, fte = (ftr - mean) / std, (fte - mean) / std
    classes = int(max(ytr.max(), yte.max())) + 1
    train_acc, test_acc = _fit_probe(ftr, ytr, fte, yte, classes, steps, learning_rate,
                                     weight_decay)
    return ProbeResult(float(train_acc), float(test_acc))


def _probe_data(data, name):
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(
            f"linear_probe: `{name}` must be a pair (features, labels); got "
            f"{type(data).__name__}. Pass e.g. (acts, y)."
        )
    features, labels = jnp.asarray(data[0], jnp.float32), jnp.asarray(data[1])
    if not jnp.issubdtype(labels.dtype, jnp.integer) or labels.ndim != 1:
        raise TypeError(
            f"linear_probe: `{name}` labels must be integers of shape (N,); got "
            f"{labels.dtype} {labels.shape}. Pass class indices, e.g. y.astype(int)."
        )
    if len(features) != len(labels):
        raise ValueError(
            f"linear_probe: `{name}` features and labels must have the same length; got "
            f"{len(features)} and {len(labels)}."
        )
    return features.reshape(len(features), -1), labels  # (N, F), (N,)


@functools.partial(jax.jit, static_argnames=("classes", "steps"))
def _fit_probe(ftr, ytr, fte, yte, classes, steps, learning_rate, weight_decay):
    params = {"w": jnp.zeros((ftr.shape[1], classes)), "b": jnp.zeros((classes,))}
    optimizer = optax.adam(learning_rate)

    def loss(p):
        logits = ftr @ p["w"] + p["b"]  # (N, classes)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, ytr).mean()
        return ce + weight_decay * jnp.sum(p["w"] ** 2) / 2

    def step(carry, _):
        p, state = carry
        updates, state = optimizer.update(jax.grad(loss)(p), state)
        return (optax.apply_updates(p, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), None, length=steps)

    def acc(f, y):
        return jnp.mean(jnp.argmax(f @ params["w"] + params["b"], axis=1) == y)

    return acc(ftr, ytr), acc(fte, yte)
