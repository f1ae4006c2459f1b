"""cnnlib.synthetic.parts: the same images for a seed, and labels that say what the image shows
(the ring's place relative to the plus, or which primitive), found again by template search."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlib.synthetic import PRIMITIVES, RELATIONS, parts


def find(image, pattern):
    """Top-left corners where the 3x3 pattern's ones are all lit in a noise-free image."""
    hits = []
    for i in range(image.shape[0] - 2):
        for j in range(image.shape[1] - 2):
            window = image[i : i + 3, j : j + 3]
            if np.all(window[pattern == 1] == 1):
                hits.append((i, j))
    return hits


def test_same_seed_same_images_and_balanced_classes():
    a, b = parts(200, seed=3), parts(200, seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(parts(200, seed=4)[0], a[0])
    assert a[0].shape == (200, 20, 20, 1) and a[0].dtype == np.float32
    assert np.bincount(parts(2000, seed=0)[1]).min() > 400


def test_arrangement_labels_say_where_the_ring_is():
    x, y = parts(300, "arrangement", seed=1, distractors=0, noise=0.0)
    for image, label in zip(x[..., 0], y):
        plus, ring = find(image, PRIMITIVES["plus"]), find(image, PRIMITIVES["ring"])
        assert len(ring) == 1 and len(plus) == 1  # each part appears once
        (pi, pj), (ri, rj) = plus[0], ring[0]
        dy, dx = ri - pi, rj - pj
        relation = ("right" if dx >= 3 and abs(dy) <= 2 else "left" if dx <= -3 and abs(dy) <= 2
                    else "below" if dy >= 3 and abs(dx) <= 2 else "above")
        assert relation == RELATIONS[label]
        assert 3 <= max(abs(dy), abs(dx)) <= 11


def test_single_labels_name_the_primitive():
    x, y = parts(200, "single", seed=2, distractors=0, noise=0.0)
    names = list(PRIMITIVES)
    for image, label in zip(x[..., 0], y):
        assert image.sum() == PRIMITIVES[names[label]].sum()  # one primitive, nothing else
        assert find(image, PRIMITIVES[names[label]])


def test_errors():
    with pytest.raises(ValueError, match=r"parts: `task` must be one of \('arrangement', "
                       r"'single'\); got 'pairs'"):
        parts(4, "pairs")
    with pytest.raises(ValueError, match=r"parts: `distance` must be \(low, high\) with 1 <= low "
                       r"<= high, and `size` at least 3 \+ high \+ jitter = 16"):
        parts(4, size=12)
    with pytest.raises(ValueError, match=r"parts: `n` must be a positive int; got 0"):
        parts(0)
