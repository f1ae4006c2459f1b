"""Figures the chapters reuse: image grids, training curves, confusion matrices, and an
animation player that works offline.

Introduced in chapter 06, notebooks/06-training.ipynb (`animation_html` in chapter 01).

Every plotting function returns the matplotlib `Figure` it drew, with a title and labelled
axes, so a chapter can adjust it, save it or show it with ``plt.show()``. The one pure
computation here, `confusion_matrix`, returns NumPy integers and needs no figure.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

import numpy as np

from cnnlib._validate import check_positive_int


def confusion_matrix(labels: Any, predictions: Any, num_classes: int) -> np.ndarray:
    """Count how often each true class is predicted as each class.

    ``matrix[i, j]`` is the number of examples whose label is ``i`` and whose prediction is
    ``j``: row sums are the class sizes, the diagonal holds the correct predictions, and
    ``matrix.trace() / matrix.sum()`` is the accuracy.

    Args:
        labels: integer array of shape (N,), values in 0..num_classes - 1.
        predictions: integer array of shape (N,), e.g. ``logits.argmax(-1)``.
        num_classes: number of classes, >= 1.

    Returns:
        An int64 NumPy array of shape (num_classes, num_classes); rows are true classes,
        columns predicted classes.

    Example:
        >>> confusion_matrix([0, 1, 1], [0, 0, 1], num_classes=2)
        array([[1, 0],
               [1, 1]])

    Introduced in chapter 06, notebooks/06-training.ipynb.
    """
    where = "confusion_matrix"
    num_classes = check_positive_int(num_classes, "num_classes", where)
    labels = _class_indices(labels, "labels", num_classes, where)
    predictions = _class_indices(predictions, "predictions", num_classes, where)
    if labels.shape != predictions.shape:
        raise ValueError(
            f"{where}: `labels` and `predictions` must have the same length; got "
            f"{labels.shape[0]} and {predictions.shape[0]}. Predict every labelled example."
        )
    # One bin per (true, predicted) pair: row-major index true * num_classes + predicted.
    flat = np.bincount(labels * num_classes + predictions, minlength=num_classes**2)
    return flat.reshape(num_classes, num_classes)  # (num_classes, num_classes)


def image_grid(
    images: Any,
    labels: Sequence[Any] | None = None,
    *,
    ncols: int = 8,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    cmap: str = "gray",
) -> Any:
    """Show images in a grid, each with an optional label above it.

    Args:
        images: array of shape (N, H, W), (N, H, W, 1) or (N, H, W, 3), uint8 or float
            (greyscale images use `cmap`, scaled from their own minimum to maximum).
        labels: optional sequence of N labels: strings are shown as they are, integers are
            looked up in `class_names` when it is given.
        ncols: images per row, >= 1; the grid has ``ceil(N / ncols)`` rows.
        class_names: optional names for integer labels, e.g. `cnnlib.CLASS_NAMES`.
        title: optional title of the whole figure.
        cmap: colour map for greyscale images.

    Returns:
        The matplotlib `Figure`; its first N axes hold the images, in order, the rest are off.

    Example:
        >>> (x, y), _ = fashion_mnist()
        >>> fig = image_grid(x[:16], y[:16], class_names=CLASS_NAMES, title="Fashion-MNIST")

    Introduced in chapter 06, notebooks/06-training.ipynb.
    """
    import matplotlib.pyplot as plt

    where = "image_grid"
    images = _images(images, where)
    n = images.shape[0]
    ncols = min(check_positive_int(ncols, "ncols", where), n)
    texts = _label_texts(labels, n, class_names, where)
    nrows = math.ceil(n / ncols)
    lines = max((text.count("\n") + 1 for text in texts), default=0) if texts else 0
    # Each row: the image (1.2 in) plus 0.2 in per line of its label; 0.5 in for the title.
    height = nrows * (1.25 + 0.2 * lines) + (0.5 if title is not None else 0.0)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.3 * ncols, height), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i], cmap=cmap if images.ndim == 3 else None)
            if texts is not None:
                ax.set_title(texts[i], fontsize=8)
    if title is not None:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_history(
    history: Mapping[str, Sequence[float]], *, val_label: str = "validation",
    title: str | None = None
) -> Any:
    """Loss and accuracy per epoch, for training and (when present) validation data.

    Args:
        history: the dict `cnnlib.train.fit` returns: lists "loss" and "accuracy", one float
            per epoch, and optionally "val_loss" and "val_accuracy" of the same length.
        val_label: legend name of the validation data.
        title: optional title of the whole figure.

    Returns:
        The matplotlib `Figure`, with two axes: loss (left) and accuracy (right) against the
        epoch 1, 2, ..., each with one line "train" and one line `val_label`.

    Example:
        >>> params, history = fit(model.apply, params, optax.adam(1e-3), train, epochs=3,
        ...                       batch_size=128, key=jax.random.key(0), validation=0.1)
        >>> fig = plot_history(history)

    Introduced in chapter 06, notebooks/06-training.ipynb.
    """
    import matplotlib.pyplot as plt

    where = "plot_history"
    curves = _history(history, where)
    epochs = np.arange(1, len(curves["loss"]) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric, label in ((ax_loss, "loss", "cross-entropy"), (ax_acc, "accuracy", "accuracy")):
        ax.plot(epochs, curves[metric], "o-", label="train")
        if f"val_{metric}" in curves:
            ax.plot(epochs, curves[f"val_{metric}"], "s-", label=val_label)
        ax.set(xlabel="epoch", ylabel=label, title=f"{label.capitalize()} per epoch")
        ax.set_xticks(epochs)
        ax.legend()
    if title is not None:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_confusion(
    matrix: Any, class_names: Sequence[str] | None = None, *, title: str = "Confusion matrix"
) -> Any:
    """Draw a confusion matrix as an image, each cell annotated with its count.

    Args:
        matrix: square array (K, K) of counts, rows true classes, columns predictions, as
            `confusion_matrix` returns.
        class_names: optional K names for the ticks; default 0..K-1.
        title: title of the axes.

    Returns:
        The matplotlib `Figure`; its axes show the counts (colour on a log scale, so that the
        few confusions stay visible beside the large diagonal), true class down, predicted
        class across.

    Example:
        >>> fig = plot_confusion(confusion_matrix(y_test, predictions, 10), CLASS_NAMES)

    Introduced in chapter 06, notebooks/06-training.ipynb.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    where = "plot_confusion"
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.size == 0:
        raise ValueError(
            f"{where}: `matrix` must be a square (K, K) array of counts; got shape "
            f"{matrix.shape}. Compute it with confusion_matrix(labels, predictions, K)."
        )
    if not np.issubdtype(matrix.dtype, np.number) or np.any(matrix < 0):
        raise ValueError(
            f"{where}: `matrix` must hold non-negative counts; got dtype {matrix.dtype} with "
            f"minimum {matrix.min() if np.issubdtype(matrix.dtype, np.number) else '?'}. "
            f"Compute it with confusion_matrix(labels, predictions, K)."
        )
    k = matrix.shape[0]
    names = [str(i) for i in range(k)] if class_names is None else list(class_names)
    if len(names) != k:
        raise ValueError(
            f"{where}: `class_names` must have one name per row of `matrix` ({k}); got "
            f"{len(names)}. Pass class_names=CLASS_NAMES[:{k}] or leave it out."
        )
    fig, ax = plt.subplots(figsize=(0.6 * k + 2.5, 0.6 * k + 1.8))
    # Log colour scale; zeros are masked (drawn blank) because log(0) is undefined.
    image = ax.imshow(
        np.ma.masked_equal(matrix, 0), cmap="Blues", norm=LogNorm(vmin=1, vmax=max(matrix.max(), 2))
    )
    big = np.sqrt(max(matrix.max(), 1))  # white text on the dark (upper half, log scale) cells
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{matrix[i, j]:g}", ha="center", va="center", fontsize=7,
                    color="white" if matrix[i, j] > big else "black")
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    fig.colorbar(image, ax=ax, label="examples (log scale)", fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def _class_indices(values, name, num_classes, where):
    array = np.asarray(values)
    if array.ndim != 1 or not (np.issubdtype(array.dtype, np.integer) or array.size == 0):
        raise TypeError(
            f"{where}: `{name}` must be a 1-D array of integer class indices; got dtype "
            f"{array.dtype} and shape {array.shape}. Use logits.argmax(-1) for predictions "
            f"and integer labels, not one-hot."
        )
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        raise ValueError(
            f"{where}: `{name}` must lie in 0..{num_classes - 1} (num_classes={num_classes}); "
            f"got values from {array.min()} to {array.max()}. Pass the right num_classes."
        )
    return array.astype(np.int64)


def _images(images, where):
    array = np.asarray(images)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]  # (N, H, W, 1) -> (N, H, W)
    if not (array.ndim == 3 or (array.ndim == 4 and array.shape[-1] == 3)):
        raise ValueError(
            f"{where}: `images` must have shape (N, H, W), (N, H, W, 1) or (N, H, W, 3); got "
            f"{np.shape(images)}. For one image use images[None]."
        )
    if array.shape[0] == 0:
        raise ValueError(f"{where}: `images` must hold at least one image; got shape {array.shape}.")
    if not (np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_):
        raise TypeError(
            f"{where}: `images` must be numbers (uint8 or float); got {array.dtype}. "
            f"Convert with images.astype(np.float32)."
        )
    return array


def _label_texts(labels, n, class_names, where):
    if labels is None:
        return None
    labels = list(np.asarray(labels).tolist()) if hasattr(labels, "shape") else list(labels)
    if len(labels) != n:
        raise ValueError(
            f"{where}: `labels` must have one entry per image ({n}); got {len(labels)}. "
            f"Pass labels[:{n}]."
        )
    if class_names is None:
        return [str(label) for label in labels]
    texts = []
    for label in labels:
        if isinstance(label, str):
            texts.append(label)
        elif isinstance(label, int) and 0 <= label < len(class_names):
            texts.append(class_names[label])
        else:
            raise ValueError(
                f"{where}: each integer label must index `class_names` (0..{len(class_names) - 1}"
                f"); got {label!r}. Pass matching class_names or string labels."
            )
    return texts


def _history(history, where):
    if not isinstance(history, Mapping) or not {"loss", "accuracy"} <= set(history):
        got = sorted(history) if isinstance(history, Mapping) else type(history).__name__
        raise ValueError(
            f"{where}: `history` must be the dict fit returns, with lists 'loss' and "
            f"'accuracy'; got {got}. Pass the second value of cnnlib.train.fit(...)."
        )
    keys = [k for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in history]
    lengths = {k: len(history[k]) for k in keys}
    if len(set(lengths.values())) != 1 or lengths["loss"] == 0:
        raise ValueError(
            f"{where}: every list in `history` must have one value per epoch (the same "
            f"length, at least 1); got lengths {lengths}."
        )
    return {k: np.asarray(history[k], dtype=float) for k in keys}

# --- Animation (chapter 01) ------------------------------------------------------------------
# Matplotlib's ``to_jshtml`` embeds every frame as a PNG and adds a slider and playback buttons,
# but styles the buttons with Font Awesome loaded from a CDN: offline (and on a site that refuses
# off-site requests, as the book's browser test does) the buttons are empty. `animation_html`
# removes that stylesheet and draws the buttons with Unicode symbols instead.

ANIMATION_MODES = ("once", "loop", "reflect")

# Font Awesome 4 icons in matplotlib's template -> the Unicode symbols of a media player.
# U+FE0E asks for the text (not emoji) form of the triangles.
ANIMATION_ICONS = {
    "fa fa-minus": "\u2212",  # slower
    "fa fa-fast-backward": "|\u25c0\ufe0e\u25c0\ufe0e",  # first frame
    "fa fa-step-backward": "|\u25c0\ufe0e",  # previous frame
    "fa fa-play fa-flip-horizontal": "\u25c0\ufe0e",  # play backwards
    "fa fa-pause": "\u275a\u275a",  # pause
    "fa fa-play": "\u25b6\ufe0e",  # play
    "fa fa-step-forward": "\u25b6\ufe0e|",  # next frame
    "fa fa-fast-forward": "\u25b6\ufe0e\u25b6\ufe0e|",  # last frame
    "fa fa-plus": "+",  # faster
}
_ICON_TAG = re.compile(r'<i class="(fa [^"]*)"></i>')
_STYLESHEET = re.compile(r"<link[^>]*font-awesome[^>]*>\s*")


def animation_html(anim: Any, default_mode: str = "once") -> str:
    """A matplotlib animation as one HTML string: frames, slider and buttons, no off-site request.

    Equal to ``anim.to_jshtml(default_mode=default_mode)`` except that the Font Awesome
    stylesheet link is removed and each button's icon is replaced by a Unicode symbol (see
    `ANIMATION_ICONS`), so the player works in a notebook, on a static site and offline alike. Display it
    with ``IPython.display.HTML(animation_html(anim))``.

    Args:
        anim: a `matplotlib.animation.Animation` (e.g. a `FuncAnimation`) with a finite number
            of frames.
        default_mode: what the player does at the last frame: "once" (stop), "loop" or
            "reflect" (play backwards).

    Returns:
        str: HTML with the frames embedded as base64 PNGs and no URL outside the page.

    Raises:
        TypeError: `anim` is not a matplotlib Animation.
        ValueError: `default_mode` is not one of "once", "loop", "reflect".

    Example:
        >>> fig, ax = plt.subplots()
        >>> anim = FuncAnimation(fig, lambda t: ax.set_title(str(t)), frames=3)
        >>> "https://" in animation_html(anim)
        False

    Introduced in chapter 01, notebooks/01-convolution.ipynb.
    """
    from matplotlib.animation import Animation

    where = "animation_html"
    if not isinstance(anim, Animation):
        raise TypeError(
            f"{where}: `anim` must be a matplotlib.animation.Animation; got "
            f"{type(anim).__name__}. Build one with FuncAnimation(fig, update, frames=n)."
        )
    if default_mode not in ANIMATION_MODES:
        raise ValueError(
            f"{where}: `default_mode` must be one of {ANIMATION_MODES}; got {default_mode!r}. "
            f"Use \"once\" to stop at the last frame."
        )
    html = anim.to_jshtml(default_mode=default_mode)  # (frames as base64 PNGs, player JS)
    html = _STYLESHEET.sub("", html)
    # An icon this version of matplotlib adds and ANIMATION_ICONS lacks keeps its (now empty) tag.
    return _ICON_TAG.sub(lambda m: ANIMATION_ICONS.get(m.group(1), m.group(0)), html)
