"""cnnlib.plot: the confusion matrix against a NumPy loop, what each figure draws, and the
offline animation player against matplotlib's own to_jshtml."""

from __future__ import annotations

import doctest
import math
import re

import matplotlib

matplotlib.use("Agg")  # no display in tests

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.animation import FuncAnimation
from hypothesis import given
from hypothesis import strategies as st

from cnnlib.data import CLASS_NAMES
from cnnlib.plot import (
    ANIMATION_ICONS,
    animation_html,
    confusion_matrix,
    image_grid,
    plot_confusion,
    plot_history,
)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


# confusion_matrix ------------------------------------------------------------------------


def confusion_loop(labels, predictions, num_classes):
    """The definition, one example at a time."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for true, predicted in zip(labels, predictions):
        matrix[true, predicted] += 1
    return matrix


@given(
    num_classes=st.integers(1, 12),
    data=st.data(),
)
def test_confusion_matches_loop(num_classes, data):
    n = data.draw(st.integers(0, 60))
    labels = data.draw(st.lists(st.integers(0, num_classes - 1), min_size=n, max_size=n))
    predictions = data.draw(st.lists(st.integers(0, num_classes - 1), min_size=n, max_size=n))
    got = confusion_matrix(np.array(labels, dtype=np.int32), np.array(predictions), num_classes)
    want = confusion_loop(labels, predictions, num_classes)
    assert got.shape == (num_classes, num_classes)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)


def test_confusion_rows_diagonal_and_jax_input():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 500)
    predictions = np.where(rng.random(500) < 0.7, labels, rng.integers(0, 10, 500))
    matrix = confusion_matrix(jnp.asarray(labels), jnp.asarray(predictions), 10)
    np.testing.assert_array_equal(matrix.sum(axis=1), np.bincount(labels, minlength=10))
    np.testing.assert_array_equal(matrix.sum(axis=0), np.bincount(predictions, minlength=10))
    assert matrix.trace() == (labels == predictions).sum()


def test_confusion_errors():
    with pytest.raises(ValueError, match=r"confusion_matrix: `labels` and `predictions` must have the same length; got 3 and 2"):
        confusion_matrix([0, 1, 1], [0, 1], 2)
    with pytest.raises(ValueError, match=r"confusion_matrix: `predictions` must lie in 0\.\.1 \(num_classes=2\); got values from 0 to 2"):
        confusion_matrix([0, 1, 1], [0, 1, 2], 2)
    with pytest.raises(ValueError, match=r"`labels` must lie in 0\.\.2 .* from -1 to 1"):
        confusion_matrix([0, -1, 1], [0, 1, 2], 3)
    with pytest.raises(TypeError, match=r"confusion_matrix: `labels` must be a 1-D array of integer class indices; got dtype float64 and shape \(2, 3\)"):
        confusion_matrix(np.zeros((2, 3)), [0, 1], 3)
    with pytest.raises(TypeError, match=r"`predictions` must be a 1-D array of integer .* got dtype float64"):
        confusion_matrix([0, 1], [0.0, 1.0], 3)
    with pytest.raises(ValueError, match=r"confusion_matrix: `num_classes` must be a positive int; got 0"):
        confusion_matrix([0], [0], 0)
    with pytest.raises(TypeError, match=r"`num_classes` must be a positive int; got 2\.0"):
        confusion_matrix([0], [0], 2.0)


# image_grid ------------------------------------------------------------------------------


def image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


@pytest.mark.parametrize("n, ncols", [(1, 8), (7, 3), (16, 8), (5, 5)])
def test_image_grid_layout_and_pixels(n, ncols):
    images = np.random.default_rng(n).integers(0, 256, (n, 6, 5, 1), dtype=np.uint8)
    fig = image_grid(images, ncols=ncols, title="grid")
    shown = image_axes(fig)
    assert len(shown) == n
    assert len(fig.axes) == math.ceil(n / min(ncols, n)) * min(ncols, n)
    for ax, image in zip(shown, images):  # in order, pixels unchanged
        np.testing.assert_array_equal(ax.images[0].get_array(), image[..., 0])
    assert fig._suptitle.get_text() == "grid"


def test_image_grid_labels_names_and_strings():
    images = np.zeros((3, 4, 4), dtype=np.float32)
    fig = image_grid(images, np.array([0, 9, 6]), class_names=CLASS_NAMES)
    assert [ax.get_title() for ax in image_axes(fig)] == ["T-shirt/top", "Ankle boot", "Shirt"]
    fig = image_grid(images, ["a", "b", "c"])
    assert [ax.get_title() for ax in image_axes(fig)] == ["a", "b", "c"]
    fig = image_grid(images, [3, 1, 2])  # integers without names: shown as numbers
    assert [ax.get_title() for ax in image_axes(fig)] == ["3", "1", "2"]


def test_image_grid_makes_room_for_label_lines():
    images = np.zeros((4, 4, 4))
    one = image_grid(images, ["a"] * 4, ncols=2).get_size_inches()[1]
    two = image_grid(images, ["a\nb"] * 4, ncols=2).get_size_inches()[1]
    assert two > one > image_grid(images, ncols=2).get_size_inches()[1]


def test_image_grid_colour_images():
    images = np.random.default_rng(0).random((2, 4, 4, 3))
    fig = image_grid(images)
    np.testing.assert_array_equal(image_axes(fig)[1].images[0].get_array(), images[1])


def test_image_grid_errors():
    with pytest.raises(ValueError, match=r"image_grid: `images` must have shape \(N, H, W\), \(N, H, W, 1\) or \(N, H, W, 3\); got \(28, 28\)\. For one image use images\[None\]"):
        image_grid(np.zeros((28, 28)))
    with pytest.raises(ValueError, match=r"got \(2, 4, 4, 2\)"):
        image_grid(np.zeros((2, 4, 4, 2)))
    with pytest.raises(ValueError, match=r"image_grid: `images` must hold at least one image"):
        image_grid(np.zeros((0, 4, 4)))
    with pytest.raises(TypeError, match=r"image_grid: `images` must be numbers .* got bool"):
        image_grid(np.zeros((2, 4, 4), dtype=bool))
    with pytest.raises(ValueError, match=r"image_grid: `labels` must have one entry per image \(2\); got 3"):
        image_grid(np.zeros((2, 4, 4)), [0, 1, 2])
    with pytest.raises(ValueError, match=r"image_grid: each integer label must index `class_names` \(0\.\.9\); got 10"):
        image_grid(np.zeros((2, 4, 4)), [0, 10], class_names=CLASS_NAMES)
    with pytest.raises(ValueError, match=r"image_grid: `ncols` must be a positive int; got 0"):
        image_grid(np.zeros((2, 4, 4)), ncols=0)


# plot_history ----------------------------------------------------------------------------

HISTORY = {
    "loss": [0.9, 0.5, 0.4],
    "accuracy": [0.6, 0.8, 0.85],
    "val_loss": [0.7, 0.55, 0.5],
    "val_accuracy": [0.7, 0.79, 0.82],
}


def test_plot_history_draws_every_curve():
    fig = plot_history(HISTORY, val_label="test", title="run")
    ax_loss, ax_acc = fig.axes
    for ax, metric in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert set(lines) == {"train", "test"}
        np.testing.assert_array_equal(lines["train"].get_xdata(), [1, 2, 3])
        np.testing.assert_allclose(lines["train"].get_ydata(), HISTORY[metric])
        np.testing.assert_allclose(lines["test"].get_ydata(), HISTORY[f"val_{metric}"])
        assert ax.get_xlabel() == "epoch" and ax.get_ylabel() and ax.get_title()
    assert fig._suptitle.get_text() == "run"


def test_plot_history_without_eval():
    fig = plot_history({"loss": [1.0], "accuracy": [0.5]})
    assert [[line.get_label() for line in ax.get_lines()] for ax in fig.axes] == [["train"]] * 2


def test_plot_history_errors():
    with pytest.raises(ValueError, match=r"plot_history: `history` must be the dict fit returns, with lists 'loss' and 'accuracy'; got \['loss'\]"):
        plot_history({"loss": [1.0]})
    with pytest.raises(ValueError, match=r"got list\."):
        plot_history([1.0, 2.0])
    with pytest.raises(ValueError, match=r"plot_history: every list in `history` must have one value per epoch .* got lengths \{'loss': 3, 'accuracy': 3, 'val_loss': 2, 'val_accuracy': 3\}"):
        plot_history({**HISTORY, "val_loss": [0.7, 0.5]})
    with pytest.raises(ValueError, match=r"got lengths \{'loss': 0, 'accuracy': 0\}"):
        plot_history({"loss": [], "accuracy": []})


# plot_confusion --------------------------------------------------------------------------


def test_plot_confusion_shows_counts_and_names():
    matrix = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0], 3)
    fig = plot_confusion(matrix, ["a", "b", "c"], title="three classes")
    ax = fig.axes[0]
    texts = np.array([float(t.get_text()) for t in ax.texts]).reshape(3, 3)
    np.testing.assert_array_equal(texts, matrix)  # one annotation per cell, row by row
    np.testing.assert_array_equal(np.ma.filled(ax.images[0].get_array(), 0), matrix)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    assert ax.get_title() == "three classes"


def test_plot_confusion_default_names():
    fig = plot_confusion(np.eye(2, dtype=int))
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0", "1"]


def test_plot_confusion_errors():
    with pytest.raises(ValueError, match=r"plot_confusion: `matrix` must be a square \(K, K\) array of counts; got shape \(2, 3\)"):
        plot_confusion(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"plot_confusion: `matrix` must hold non-negative counts; got dtype int64 with minimum -1"):
        plot_confusion(np.array([[1, -1], [0, 2]]))
    with pytest.raises(ValueError, match=r"plot_confusion: `class_names` must have one name per row of `matrix` \(2\); got 3"):
        plot_confusion(np.eye(2, dtype=int), ["a", "b", "c"])


# --- animation_html ---

FRAME = re.compile(r'"data:image/png;base64,([^"]+)"')


@pytest.fixture
def anim():
    fig, ax = plt.subplots(figsize=(1, 1), dpi=20)
    line = ax.plot([0, 1], [0, 0])[0]
    yield FuncAnimation(fig, lambda t: line.set_ydata([0, t]), frames=4)
    plt.close(fig)


def test_no_off_site_url_and_no_font_awesome(anim):
    html = animation_html(anim)
    assert "maxcdn" in anim.to_jshtml()  # what there is to remove, in this matplotlib
    assert not re.search(r"https?://", html)
    assert "font-awesome" not in html and '<i class="fa' not in html


def test_every_button_gets_its_symbol(anim):
    html = animation_html(anim)
    buttons = re.findall(r'<button title="([^"]+)"[^>]*>\s*([^<]*?)</button>', html)
    assert len(buttons) == len(ANIMATION_ICONS) == 9
    assert all(symbol.strip() for _, symbol in buttons)
    assert dict(buttons)["Play"] == ANIMATION_ICONS["fa fa-play"]
    assert dict(buttons)["Pause"] == ANIMATION_ICONS["fa fa-pause"]


def test_frames_and_slider_are_matplotlibs(anim):
    html = animation_html(anim)
    plain = anim.to_jshtml()
    assert FRAME.findall(html) == FRAME.findall(plain)
    assert len(FRAME.findall(html)) == 4
    assert 'type="range"' in html and "set_frame" in html


@pytest.mark.parametrize("mode", ["once", "loop", "reflect"])
def test_default_mode_is_checked(anim, mode):
    html = animation_html(anim, default_mode=mode)
    checked = re.findall(r'value="(\w+)" id="_anim_radio\d_\w+"\s*checked', html)
    assert checked == [mode]


def test_rejects_what_is_not_an_animation():
    with pytest.raises(TypeError, match=r"animation_html: `anim` must be a matplotlib.*got str"):
        animation_html("<html>")


def test_rejects_unknown_mode(anim):
    with pytest.raises(ValueError, match=r"animation_html: `default_mode` must be one of .*'bounce'"):
        animation_html(anim, default_mode="bounce")
    assert "set_frame" in animation_html(anim, default_mode="loop")  # rendered; nothing broken


def test_animation_docstring_example_runs():
    globs = {"plt": plt, "FuncAnimation": FuncAnimation, "animation_html": animation_html}
    runner = doctest.DocTestRunner()
    for test in doctest.DocTestFinder().find(animation_html, "animation_html", globs=globs):
        runner.run(test)
    assert runner.tries > 0 and runner.failures == 0
