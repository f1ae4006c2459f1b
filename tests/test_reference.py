"""cnnlib.reference checked on its own: each loop against NumPy's 1-D routines or against the
definition of the feature it adds (channels, groups, stride, dilation, padding), so the
oracle the other tests trust is itself tested; then its errors."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from cnnlib import reference


def normal(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape)


def test_cross_correlate2d_rows_are_np_correlate():
    x, w = normal((1, 9)), normal((1, 3), 1)
    np.testing.assert_allclose(reference.cross_correlate2d(x, w)[0], np.correlate(x[0], w[0]))
    # Columns too: the 2-D loop is not a row-only special case.
    np.testing.assert_allclose(
        reference.cross_correlate2d(x.T, w.T)[:, 0], np.correlate(x[0], w[0])
    )


def test_cross_correlate2d_2d_is_sum_of_row_correlations():
    x, w = normal((6, 7)), normal((3, 2), 1)
    expected = sum(
        np.stack([np.correlate(x[i + a], w[a]) for i in range(4)]) for a in range(3)
    )
    np.testing.assert_allclose(reference.cross_correlate2d(x, w), expected)


def test_conv2d_sums_cross_correlations_over_input_channels():
    x, w, b = normal((2, 6, 5, 3)), normal((3, 2, 3, 4), 1), normal((4,), 2)
    y = reference.conv2d(x, w, b)
    for n in range(2):
        for o in range(4):
            expected = sum(reference.cross_correlate2d(x[n, :, :, c], w[:, :, c, o]) for c in range(3))
            np.testing.assert_allclose(y[n, :, :, o], expected + b[o])


def test_groups_equal_a_block_diagonal_kernel():
    # groups=2 is a full convolution whose kernel is zero between different groups.
    x, w = normal((1, 5, 5, 4)), normal((2, 2, 2, 6), 1)
    dense = np.zeros((2, 2, 4, 6))
    dense[:, :, :2, :3] = w[:, :, :, :3]
    dense[:, :, 2:, 3:] = w[:, :, :, 3:]
    np.testing.assert_allclose(reference.conv2d(x, w, groups=2), reference.conv2d(x, dense))


def test_stride_dilation_padding_from_their_definitions():
    x, w = normal((1, 9, 8, 2)), normal((2, 3, 2, 3), 1)
    full = reference.conv2d(x, w)
    # Stride s keeps every s-th output of the stride-1 convolution.
    np.testing.assert_allclose(reference.conv2d(x, w, stride=(2, 3)), full[:, ::2, ::3])
    # Dilation d is a kernel with d - 1 zeros inserted between its taps.
    spread = np.zeros((3, 7, 2, 3))
    spread[::2, ::3] = w
    np.testing.assert_allclose(reference.conv2d(x, w, dilation=(2, 3)), reference.conv2d(x, spread))
    # Padding is zeros around the image.
    padded = np.pad(x, ((0, 0), (1, 2), (0, 3), (0, 0)))
    np.testing.assert_allclose(
        reference.conv2d(x, w, padding=((1, 2), (0, 3))), reference.conv2d(padded, w)
    )
    np.testing.assert_allclose(reference.conv2d(x, w, padding="FULL"), reference.conv2d(
        np.pad(x, ((0, 0), (1, 1), (2, 2), (0, 0))), w
    ))


def test_pools_from_their_definitions():
    x = normal((2, 6, 7, 3))
    np.testing.assert_array_equal(reference.max_pool(x, 1), x)
    whole = reference.max_pool(x, (6, 7))
    np.testing.assert_array_equal(whole[:, 0, 0], x.max(axis=(1, 2)))
    np.testing.assert_allclose(reference.avg_pool(x, (6, 7))[:, 0, 0], x.mean(axis=(1, 2)))
    # Average pooling is a depthwise convolution with a constant kernel 1 / (kh * kw).
    box = np.full((2, 3, 1, 3), 1 / 6)
    np.testing.assert_allclose(
        reference.avg_pool(x, (2, 3), (1, 2), 1), reference.conv2d(x, box, stride=(1, 2), padding=1, groups=3)
    )


def test_patches_and_im2col_layout():
    x = normal((2, 5, 6, 3))
    p = reference.patches(x, (2, 3), stride=(1, 2), padding=1, dilation=(2, 1))
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    assert p.shape == (2, 5, 3, 2, 3, 3)
    np.testing.assert_array_equal(p[1, 2, 1, 1, 2], xp[1, 2 + 1 * 2, 1 * 2 + 2])
    cols = reference.im2col(x, 3)
    assert cols.shape == (2 * 3 * 4, 3 * 3 * 3)
    np.testing.assert_array_equal(cols[1 * 12 + 2 * 4 + 3], x[1, 2:5, 3:6].ravel())  # (n, i, j)


def test_conv_as_matrix_structure():
    w = normal((3, 3, 1, 1))
    m = reference.conv_as_matrix(w, (5, 5, 1))
    assert m.shape == (9, 25)
    assert np.count_nonzero(m) == 9 * 9  # every row: the 9 weights, nothing else
    np.testing.assert_array_equal(m[0].reshape(5, 5)[:3, :3], w[:, :, 0, 0])
    # Weight sharing: the next output pixel's row is the same row moved one pixel right.
    np.testing.assert_array_equal(m[1].reshape(5, 5)[:, 1:], m[0].reshape(5, 5)[:, :-1])
    # With padding, the rows of border pixels lose the taps that fall in the padding.
    padded = reference.conv_as_matrix(w, (5, 5, 1), padding=1)
    assert padded.shape == (25, 25) and np.count_nonzero(padded[0]) == 4


def test_fft_handles_every_size_without_wraparound():
    x, w = normal((1, 4, 9, 2)), normal((4, 2, 2, 1), 1)
    np.testing.assert_allclose(reference.conv2d_fft(x, w), reference.conv2d(x, w), atol=1e-12)


def test_docstring_examples():
    failures, tried = doctest.testmod(reference, extraglobs={"np": np}, report=False)[:2]
    assert tried >= 10 and failures == 0


# ---------------------------------------------------------------- errors


X, W = np.zeros((1, 5, 5, 2)), np.zeros((3, 3, 2, 4))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: reference.cross_correlate2d(np.zeros((1, 5, 5, 1)), np.zeros((3, 3))), ValueError,
         r"^reference\.cross_correlate2d: `x` must be a 2-D array \(one channel of one image\); got shape \(1, 5, 5, 1\)\. Take one with x\[0, :, :, 0\]"),
        (lambda: reference.convolve2d(np.zeros((5, 5)), [[1.0]]), ValueError,
         r"^reference\.convolve2d: `w` must be a 2-D array .*got shape list"),
        (lambda: reference.convolve2d(np.zeros((5, 5), int), np.zeros((2, 2))), TypeError,
         r"^reference\.convolve2d: `x` must have a floating dtype; got int64"),
        (lambda: reference.cross_correlate2d(np.zeros((2, 5)), np.zeros((3, 3))), ValueError,
         r"^reference\.cross_correlate2d: `w` must be no larger than `x` \(2, 5\); got \(3, 3\)\. Pad x first"),
        (lambda: reference.conv2d(np.zeros((5, 5)), W), ValueError,
         r"^reference\.conv2d: `x` must have shape \(N, H, W, C\); got \(5, 5\)\. Add axes"),
        (lambda: reference.conv2d(X, np.zeros((4, 2, 3, 3))), ValueError,
         r"^reference\.conv2d: `w` must have shape .*PyTorch OIHW kernel: use w\.transpose\(2, 3, 1, 0\)"),
        (lambda: reference.conv2d(X, W, groups=2), ValueError,
         r"^reference\.conv2d: `w` must have shape .*groups = 2; got \(3, 3, 2, 4\)"),
        (lambda: reference.conv2d(X, W, padding="CIRCULAR"), ValueError,
         r"^reference\.conv2d: `padding` must be one of \('VALID', 'SAME', 'FULL'\)"),
        (lambda: reference.conv2d(X, W, dilation=3), ValueError,
         r"^reference\.conv2d: `w` must fit in the padded input; got kernel extent \(7, 7\)"),
        (lambda: reference.conv2d(X, W, np.zeros(3)), ValueError,
         r"^reference\.conv2d: `b` must have shape \(out_channels,\) = \(4,\); got \(3,\)"),
        (lambda: reference.max_pool(X, 2, padding=2), ValueError,
         r"^reference\.max_pool: `padding` must be smaller than `window` \(2, 2\)"),
        (lambda: reference.avg_pool(X, 0), ValueError, r"^reference\.avg_pool: `window` must be positive; got 0"),
        (lambda: reference.patches(X, (2, 2, 2)), ValueError,
         r"^reference\.patches: `kernel_size` must be an int or a pair \(h, w\); got \(2, 2, 2\)"),
        (lambda: reference.conv2d_fft(X, W, padding=-1), ValueError,
         r"^reference\.conv2d_fft: `padding` must be non-negative; got -1"),
        (lambda: reference.conv_as_matrix(W, (1, 5, 5, 2)), ValueError,
         r"^reference\.conv_as_matrix: `in_shape` must be \(H, W, in_channels\) of one image; got \(1, 5, 5, 2\)\. Pass x\.shape\[1:\]"),
        (lambda: reference.conv_as_matrix(W, (5, 0, 2)), ValueError,
         r"^reference\.conv_as_matrix: `in_shape` must be a positive int; got 0"),
        (lambda: reference.conv_as_matrix(W, (5, 5, 3)), ValueError,
         r"^reference\.conv_as_matrix: `w` must have shape .*in_channels = 3"),
    ],
)
def test_reference_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
