"""cnnlib.conv against the NumPy loops in cnnlib.reference, lax's own padding rule, and the
exact facts chapter 01 states (translation equivariance, shapes, gradients, errors)."""

from __future__ import annotations

import doctest
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax import lax
from jax.test_util import check_grads

from cnnlib import conv2d, conv_output_size, reference
from cnnlib._validate import padding_pairs


def normal(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


# conv2d under one jit, its non-array arguments static: each distinct (shapes, arguments)
# compiles one XLA program, and examples that repeat them reuse it. Called eagerly, every
# primitive (pad, conv, bias add) would compile on its own for every new shape.
CONV2D = jax.jit(conv2d, static_argnames=("stride", "padding", "dilation", "groups"))


# ---------------------------------------------------------------- random conv configurations


@st.composite
def conv_cases(draw):
    """(x, w, b, kwargs) with small shapes; the kernel always fits. The batch is always 2 and
    sizes come from a short list, so compiled programs repeat; values, kernels, strides,
    padding, dilation and groups vary freely."""
    groups = draw(st.integers(1, 3))
    in_channels = groups * draw(st.integers(1, 2))
    out_channels = groups * draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    extent = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    form = draw(st.sampled_from(["VALID", "same", "FULL", "CIRCULAR", "int", "pair", "pairs"]))
    if form == "int":
        p = draw(st.integers(0, 2))
        padding, pads = p, ((p, p), (p, p))
    elif form == "pair":
        ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
        padding, pads = (ph, pw), ((ph, ph), (pw, pw))
    elif form == "pairs":
        pads = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(2))
        padding = pads
    else:
        padding, pads = form, None
    # Smallest input the kernel fits in: SAME, FULL and CIRCULAR always fit.
    low = [1, 1] if form in ("same", "FULL", "CIRCULAR") else list(extent)
    if pads is not None:
        low = [max(1, e - sum(p)) for e, p in zip(extent, pads)]
    h, w = (lo + draw(st.sampled_from([0, 1, 2, 5])) for lo in low)
    n = 2
    seed = draw(st.integers(0, 2**16))
    x = normal((n, h, w, in_channels), seed)
    k = normal((kh, kw, in_channels // groups, out_channels), seed + 1)
    b = normal((out_channels,), seed + 2) if draw(st.booleans()) else None
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return x, k, b, kwargs


def reference_conv(x, w, b, stride, padding, dilation, groups):
    """The loop reference; CIRCULAR becomes np.pad(mode="wrap") with lax's SAME amounts."""
    if isinstance(padding, str) and padding.upper() == "CIRCULAR":
        extent = [d * (k - 1) + 1 for k, d in zip(w.shape[:2], dilation)]
        pads = lax.padtype_to_pads(x.shape[1:3], extent, stride, "SAME")
        x = np.pad(x, ((0, 0), *pads, (0, 0)), mode="wrap")
        padding = 0
    return reference.conv2d(
        x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups
    )


@given(conv_cases())
def test_conv2d_equals_loop_reference(case):
    x, w, b, kwargs = case
    y = CONV2D(x, w, b, **kwargs)
    expected = reference_conv(x, w, b, **kwargs)
    assert y.shape == expected.shape
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@given(conv_cases())
def test_conv_output_size_agrees_with_conv2d_shapes(case):
    x, w, _, kwargs = case
    # Shapes only: tracing gives the exact shape conv2d returns, with nothing to compile.
    y = jax.eval_shape(functools.partial(conv2d, **kwargs), x, w)
    padding = kwargs["padding"]
    for axis in range(2):
        # A string or int means the same for both axes; (ph, pw) and ((t, b), (l, r)) split.
        axis_padding = padding if isinstance(padding, (str, int)) else padding[axis]
        expected = conv_output_size(
            x.shape[1 + axis],
            w.shape[axis],
            kwargs["stride"][axis],
            axis_padding,
            kwargs["dilation"][axis],
        )
        assert y.shape[1 + axis] == expected


@given(
    n=st.integers(1, 40),
    k=st.integers(1, 7),
    s=st.integers(1, 5),
    d=st.integers(1, 3),
)
def test_same_padding_matches_lax(n, k, s, d):
    extent = d * (k - 1) + 1
    ours = padding_pairs("SAME", (n, n), (extent, extent), (s, s), "test")
    assert list(ours) == [tuple(p) for p in lax.padtype_to_pads((n, n), (extent,) * 2, (s,) * 2, "SAME")]
    assert conv_output_size(n, k, s, "SAME", d) == -(-n // s)  # ceil(n / s)
    assert conv_output_size(n, k, s, "CIRCULAR", d) == -(-n // s)


@pytest.mark.parametrize(
    "args, expected",
    [
        ((28, 5), 24),  # LeNet C1
        ((32, 3, 1, 1), 32),  # "same" 3x3
        ((7, 3, 2, "SAME"), 4),
        ((5, 3, 1, "FULL"), 7),
        ((5, 3, 2, "full"), 4),
        ((7, 3, 1, 0, 2), 3),  # dilated 3x3 spans 5
        ((6, 3, 2, (0, 1)), 3),
        ((224, 7, 2, 3), 112),  # ResNet stem
        ((1, 1), 1),
    ],
)
def test_conv_output_size_table(args, expected):
    assert conv_output_size(*args) == expected


# ---------------------------------------------------------------- exact facts


def test_circular_padding_commutes_with_roll_exactly():
    # Each output pixel is the same products summed in the same order, only the window
    # contents move; XLA on CPU accumulates in a position-independent order, so the two sides
    # agree bit for bit. Other backends may tile differently: there we allow 1e-6.
    x, w = jnp.asarray(normal((2, 12, 10, 3))), jnp.asarray(normal((3, 5, 3, 4), 1))
    for stride in (1, 2):
        f = functools.partial(conv2d, w=w, padding="CIRCULAR", stride=stride)
        for dy, dx in [(1, 0), (3, -2), (-4, 5)]:
            shifted = f(jnp.roll(x, (dy * stride, dx * stride), axis=(1, 2)))
            expected = jnp.roll(f(x), (dy, dx), axis=(1, 2))
            if jax.default_backend() == "cpu":
                np.testing.assert_array_equal(shifted, expected)
            else:
                np.testing.assert_allclose(shifted, expected, atol=1e-6)


def test_circular_padding_is_not_zero_padding():
    # The test above must be able to fail: with zero padding the border breaks equivariance.
    x, w = jnp.asarray(normal((1, 8, 8, 1))), jnp.asarray(normal((3, 3, 1, 1), 1))
    shifted = conv2d(jnp.roll(x, 2, axis=1), w, padding="SAME")
    assert not np.allclose(shifted, jnp.roll(conv2d(x, w, padding="SAME"), 2, axis=1))


@pytest.mark.parametrize("dy, dx", [(2, 0), (0, -3), (1, 2), (-2, -1)])
def test_zero_padding_commutes_with_roll_away_from_the_border(dy, dx):
    x, w = jnp.asarray(normal((2, 14, 13, 2))), jnp.asarray(normal((3, 3, 2, 3), 1))
    r = 1  # kernel radius
    shifted = conv2d(jnp.roll(x, (dy, dx), axis=(1, 2)), w, padding="SAME")
    expected = jnp.roll(conv2d(x, w, padding="SAME"), (dy, dx), axis=(1, 2))
    # Rows whose window touches neither the padding nor wrapped-around pixels on either side.
    rows = slice(max(dy, 0) + r, 14 - r + min(dy, 0))
    cols = slice(max(dx, 0) + r, 13 - r + min(dx, 0))
    np.testing.assert_allclose(shifted[:, rows, cols], expected[:, rows, cols], atol=1e-6)
    assert not np.allclose(shifted, expected, atol=1e-3)  # ... and only there


@pytest.mark.parametrize(
    "in_shape, kernel, kwargs",
    [
        ((5, 6, 2), (3, 3, 2, 4), {}),
        ((7, 7, 3), (3, 2, 3, 2), dict(stride=2, padding=1)),
        ((6, 8, 1), (2, 3, 1, 3), dict(padding=((0, 2), (1, 0)), dilation=(2, 1))),
        ((9, 5, 2), (3, 3, 2, 2), dict(stride=(2, 1), padding="SAME", dilation=2)),
    ],
)
def test_conv_as_matrix_times_ravelled_input_is_conv2d(in_shape, kernel, kwargs):
    x, w = normal((1, *in_shape)), normal(kernel, 1)
    m = reference.conv_as_matrix(w, in_shape, **kwargs)
    y = conv2d(jnp.asarray(x), jnp.asarray(w), **kwargs)
    assert m.shape == (y.size, x.size)
    np.testing.assert_allclose(m @ x[0].ravel(), np.ravel(y[0]), rtol=1e-5, atol=1e-5)
    # Weight sharing: every weight appears once per output pixel it is not cut off from.
    assert set(np.unique(m)) <= set(np.unique(w)) | {0.0}


@pytest.mark.parametrize(
    "kwargs", [{}, dict(padding=1), dict(padding=((2, 0), (1, 3))), dict(padding="FULL")]
)
def test_fft_and_im2col_equal_loops(kwargs):
    x, w, b = normal((2, 7, 6, 3)), normal((3, 2, 3, 4), 1), normal((4,), 2)
    loops = reference.conv2d(x, w, b, **kwargs)
    np.testing.assert_allclose(reference.conv2d_fft(x, w, b, **kwargs), loops, atol=1e-10)
    np.testing.assert_allclose(reference.conv2d_im2col(x, w, b, **kwargs), loops, atol=1e-12)
    strided = dict(kwargs, stride=2, dilation=(1, 2))
    np.testing.assert_allclose(
        reference.conv2d_im2col(x, w, b, **strided),
        reference.conv2d(x, w, b, **strided),
        atol=1e-12,
    )


def test_convolve2d_is_cross_correlation_with_flipped_kernel():
    x, w = normal((6, 7), dtype=np.float64), normal((3, 2), 1, np.float64)
    np.testing.assert_allclose(
        reference.convolve2d(x, w), reference.cross_correlate2d(x, w[::-1, ::-1]), atol=1e-12
    )
    # Independent: one row is NumPy's 1-D convolution; cross-correlation is not (w asymmetric).
    row, k = x[:1], w[:1]
    np.testing.assert_allclose(reference.convolve2d(row, k)[0], np.convolve(row[0], k[0], "valid"))
    assert not np.allclose(reference.cross_correlate2d(row, k)[0], np.convolve(row[0], k[0], "valid"))


def test_reference_conv2d_is_cross_correlate2d_per_channel():
    x, w = normal((1, 6, 5, 1)), normal((3, 2, 1, 1), 1)
    np.testing.assert_allclose(
        reference.conv2d(x, w)[0, :, :, 0], reference.cross_correlate2d(x[0, :, :, 0], w[:, :, 0, 0])
    )


# ---------------------------------------------------------------- transformations


CASES = [
    dict(),
    dict(stride=2, padding="SAME"),
    dict(padding="CIRCULAR", dilation=2),
    dict(padding=((1, 0), (0, 2)), stride=(1, 2), groups=2),
]


@pytest.mark.parametrize("kwargs", CASES)
def test_gradients_match_finite_differences(kwargs, x64):
    x = jnp.asarray(normal((2, 6, 7, 4), dtype=np.float64))
    w = jnp.asarray(normal((3, 3, 4 // kwargs.get("groups", 1), 2), 1, np.float64))
    b = jnp.asarray(normal((2,), 2, np.float64))
    check_grads(lambda x, w, b: conv2d(x, w, b, **kwargs), (x, w, b), order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("kwargs", CASES)
def test_jit_vmap_grad_and_dtype(kwargs, dtype):
    x = jnp.asarray(normal((3, 2, 6, 7, 4)), dtype)  # a leading extra axis to vmap over
    w = jnp.asarray(normal((3, 3, 4 // kwargs.get("groups", 1), 2), 1), dtype)
    f = functools.partial(conv2d, **kwargs)
    eager = jnp.stack([f(xi, w) for xi in x])
    assert eager.dtype == dtype
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == jnp.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(jax.jit(f)(x[0], w), eager[0], **tol)
    np.testing.assert_allclose(jax.vmap(f, in_axes=(0, None))(x, w), eager, **tol)
    # The gradient of sum(conv) w.r.t. w is the sum of each tap's input window: via the loops.
    g = jax.jit(jax.grad(lambda w: f(x[0], w).sum()))(w)
    assert g.dtype == dtype
    reference_grad = np.zeros(w.shape)
    for idx in np.ndindex(*w.shape):
        basis = np.zeros(w.shape)
        basis[idx] = 1.0  # conv is linear in w: d sum / d w[idx] = sum(conv(x, basis))
        reference_grad[idx] = reference_conv(
            np.asarray(x[0], np.float64), basis, None, **_full_kwargs(kwargs)
        ).sum()
    grad_tol = tol if dtype == jnp.float64 else dict(rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(g, reference_grad, **grad_tol)


def _full_kwargs(kwargs):
    defaults = dict(stride=1, padding="VALID", dilation=1, groups=1)
    out = {**defaults, **kwargs}
    out["stride"] = out["stride"] if isinstance(out["stride"], tuple) else (out["stride"],) * 2
    out["dilation"] = (
        out["dilation"] if isinstance(out["dilation"], tuple) else (out["dilation"],) * 2
    )
    return out


# ---------------------------------------------------------------- errors


X = jnp.zeros((2, 8, 8, 4))
W = jnp.zeros((3, 3, 4, 6))


@pytest.mark.parametrize(
    "x, w, kwargs, error, match",
    [
        (jnp.zeros((8, 8)), W, {}, ValueError, r"`x` must have shape \(N, H, W, C\); got \(8, 8\)\. Add axes with x\[None, \.\.\., None\]"),
        (jnp.zeros((8, 8, 4)), W, {}, ValueError, r"`x` must have shape \(N, H, W, C\); got \(8, 8, 4\)\. Add axes with x\[None\] for one"),
        (jnp.zeros((3, 9, 9)), W, {}, ValueError, r"`x` must have shape \(N, H, W, C\); got \(3, 9, 9\)\. .*it looks channels-first \(C, H, W\): use x\.transpose\(1, 2, 0\)\[None\]"),
        ([[1.0]], W, {}, TypeError, r"`x` must be an array"),
        (jnp.zeros((2, 8, 8, 4), jnp.int32), W, {}, TypeError, r"`x` must have a floating dtype; got int32"),
        (X, jnp.zeros((3, 3, 4)), {}, ValueError, r"`w` must be a 4-D HWIO kernel .* got shape \(3, 3, 4\)"),
        (X, "w", {}, TypeError, r"`w` must be an array of shape \(kh, kw"),
        (X, jnp.zeros((3, 3, 4, 6), jnp.int32), {}, TypeError, r"`w` must have a floating dtype"),
        (X, jnp.zeros((3, 3, 0, 6)), {}, ValueError, r"`w` must have no empty axis"),
        (X, jnp.zeros((6, 4, 3, 3)), {}, ValueError, r"`w` must have shape \(kh, kw, in_channels // groups, out_channels\).*PyTorch OIHW kernel: use w\.transpose\(2, 3, 1, 0\)"),
        (X, jnp.zeros((3, 3, 3, 6)), {}, ValueError, r"`w` must have shape .*in_channels = 4 .* got \(3, 3, 3, 6\)\. Make w\.shape\[2\] =="),
        (X, jnp.zeros((3, 3, 2, 6)), dict(groups=3), ValueError, r"`groups` must divide in_channels = x\.shape\[3\] = 4; got groups=3"),
        (X, jnp.zeros((3, 3, 2, 5)), dict(groups=2), ValueError, r"`groups` must divide out_channels = w\.shape\[3\] = 5; got groups=2"),
        (X, W, dict(groups=0), ValueError, r"`groups` must be a positive int; got 0"),
        (X, W, dict(groups=1.0), TypeError, r"`groups` must be a positive int; got 1\.0"),
        (X, W, dict(stride=0), ValueError, r"`stride` must be positive; got 0\. Use stride=1"),
        (X, W, dict(stride=(1, 2, 3)), ValueError, r"`stride` must be an int or a pair \(h, w\); got \(1, 2, 3\) of length 3"),
        (X, W, dict(dilation=-1), ValueError, r"`dilation` must be positive; got -1"),
        (X, W, dict(dilation=1.5), TypeError, r"`dilation` must be an int or a pair of ints"),
        (X, W, dict(padding="HALF"), ValueError, r"`padding` must be one of \('VALID', 'SAME', 'FULL', 'CIRCULAR'\) .*got 'HALF'"),
        (X, W, dict(padding=-1), ValueError, r"`padding` must be non-negative; got -1"),
        (X, W, dict(padding=((0, -1), (0, 0))), ValueError, r"`padding` must be non-negative"),
        (X, W, dict(padding=(1, 2, 3)), ValueError, r"`padding` must be an int, \(ph, pw\).* of length 3"),
        (X, W, dict(padding=((1, 2, 3), (0, 0))), ValueError, r"`padding` must be an int or a pair \(h, w\); got \(1, 2, 3\)"),
        (X, W, dict(padding=(1, (0, 0))), TypeError, r"`padding` mixes ints and pairs"),
        (X, W, dict(padding=1.0), TypeError, r"`padding` must be an int or a pair of ints"),
        (X, W, dict(padding=None), TypeError, r"`padding` must be an int or a pair of ints"),
        (jnp.zeros((1, 2, 8, 4)), W, {}, ValueError, r"`w` must fit in the padded input \(2, 8\)"),
        (X, W, dict(dilation=4), ValueError, r"`w` must fit in the padded input \(8, 8\) .*extent \(9, 9\)"),
        (X, W.astype(jnp.bfloat16), {}, TypeError, r"`w` must have the dtype of `x` \(float32\); got bfloat16"),
    ],
)
def test_conv2d_errors(x, w, kwargs, error, match):
    with pytest.raises(error, match=r"^conv2d: " + match):
        conv2d(x, w, **kwargs)


def test_conv2d_dtype_and_bias_errors(x64):
    with pytest.raises(TypeError, match=r"^conv2d: `w` must have the dtype of `x` \(float32\); got float64\. Cast the params with cast_params\(params, x\.dtype\) or x with x\.astype\(w\.dtype\)"):
        conv2d(X, W.astype(jnp.float64))
    with pytest.raises(TypeError, match=r"^conv2d: `b` must have the dtype of `x` \(float32\); got float64"):
        conv2d(X, W, jnp.zeros(6, jnp.float64))
    with pytest.raises(ValueError, match=r"^conv2d: `b` must have shape \(out_channels,\) = \(6,\); got \(6, 1\)"):
        conv2d(X, W, jnp.zeros((6, 1)))
    with pytest.raises(TypeError, match=r"^conv2d: `b` must be an array of shape \(out_channels,\) = \(6,\) or None; got list"):
        conv2d(X, W, [0.0] * 6)


def test_errors_are_raised_at_trace_time_under_jit():
    with pytest.raises(ValueError, match=r"^conv2d: `x` must have shape \(N, H, W, C\)"):
        jax.jit(conv2d)(jnp.zeros((8, 8)), W)


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((0, 3), ValueError, r"`n` must be a positive int; got 0"),
        ((5.0, 3), TypeError, r"`n` must be a positive int; got 5\.0"),
        ((5, 0), ValueError, r"`kernel_size` must be a positive int; got 0"),
        ((5, 3, 0), ValueError, r"`stride` must be a positive int; got 0"),
        ((5, 3, 1, 0, 0), ValueError, r"`dilation` must be a positive int; got 0"),
        ((5, 3, 1, -1), ValueError, r"`padding` must be non-negative; got -1"),
        ((5, 3, 1, "same-ish"), ValueError, r"`padding` must be one of .*got 'same-ish'"),
        ((5, 3, 1, (1, 2, 3)), TypeError, r"`padding` for one axis must be an int, \(before, after\)"),
        ((5, 3, 1, 1.5), TypeError, r"`padding` for one axis must be an int"),
        ((2, 5), ValueError, r"`kernel_size` dilated to 5 must fit in the padded input of length 2 \+ 0 \+ 0"),
        ((5, 3, 1, 0, 3), ValueError, r"`kernel_size` dilated to 7 must fit"),
    ],
)
def test_conv_output_size_errors(args, error, match):
    with pytest.raises(error, match=r"^conv_output_size: " + match):
        conv_output_size(*args)


def test_docstring_examples():
    import cnnlib.conv

    failures, tried = doctest.testmod(cnnlib.conv, extraglobs={"jnp": jnp}, report=False)
    assert tried >= 4 and failures == 0
