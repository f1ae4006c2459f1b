"""cnnlib.pool against the NumPy loops in cnnlib.reference and raw lax.reduce_window: values,
the reshape fast path (values and gradients), the tie rule of max_pool's gradient, blur_pool,
errors."""

from __future__ import annotations

import doctest
import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax import lax
from jax.test_util import check_grads

from cnnlib import (
    avg_pool,
    binomial_filter,
    blur_pool,
    global_avg_pool,
    global_max_pool,
    max_pool,
    reference,
)
from cnnlib._validate import padding_pairs


def normal(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


# Each op under one jit, its non-array arguments static: each distinct (shape, arguments)
# compiles one XLA program, reused by the examples that repeat them. Called eagerly, every
# primitive inside (pad, slices, products, sums) would compile on its own for every new shape.
MAX_POOL = jax.jit(max_pool, static_argnames=("window", "stride", "padding"))
AVG_POOL = jax.jit(avg_pool, static_argnames=("window", "stride", "padding", "count_include_pad"))
BLUR_POOL = jax.jit(blur_pool, static_argnames=("stride", "size"))


def pool_settings():
    """(window, stride, padding, (H, W)) for the reference tests: each window from 1x1 to 4x4
    with each padding form, strides cycling through None and every (sh, sw) in 1..3 (each
    form meets all ten, each window five), padding amounts and sizes picked at random (fixed
    seed) among those allowed, every amount smaller than the window; and each window once on
    an input it tiles. 96 settings, so the 500 examples reuse each compiled program several
    times with new values: compiling, not the values, is what costs."""
    rng = np.random.default_rng(0)
    strides = [None, *itertools.product(range(1, 4), repeat=2)]
    forms = ["VALID", "same", "int", "pair", "pairs"]
    settings = []
    for j, window in enumerate(itertools.product(range(1, 5), repeat=2)):
        for f, form in enumerate(forms):
            stride = strides[(j + 3 * f) % len(strides)]
            amount = [int(rng.integers(0, k)) for k in window]  # < k on each axis
            if form == "int":
                padding = min(amount)
                pads = ((padding,) * 2,) * 2
            elif form == "pair":
                padding = tuple(amount)
                pads = tuple((p, p) for p in padding)
            elif form == "pairs":
                padding = tuple((p, int(rng.integers(0, k))) for p, k in zip(amount, window))
                pads = padding
            else:
                padding, pads = form, ((0, 0), (0, 0))
            low = [max(1, k - sum(p)) for k, p in zip(window, pads)]
            hw = tuple(int(lo + rng.choice([0, 1, 2, 5])) for lo in low)
            settings.append((window, stride, padding, hw))
        # Windows that tile x exactly take the reshape fast path: once per window as well.
        tiling = (None, "VALID") if j % 2 else (window, 0)
        settings.append((window, *tiling, (2 * window[0], 3 * window[1])))
    return settings


@st.composite
def pool_cases(draw):
    """(x, window, stride, padding): one of pool_settings(), x of shape (2, H, W, 2) drawn anew."""
    window, stride, padding, (h, w) = draw(st.sampled_from(pool_settings()))
    x = normal((2, h, w, 2), draw(st.integers(0, 2**16)))
    return x, window, stride, padding


@given(pool_cases())
def test_max_pool_equals_loop_reference(case):
    x, window, stride, padding = case
    y = MAX_POOL(x, window=window, stride=stride, padding=padding)
    expected = reference.max_pool(x, window, stride, padding)
    assert y.shape == expected.shape
    np.testing.assert_array_equal(y, expected.astype(np.float32))  # max only selects: exact


@given(pool_cases(), st.booleans())
def test_avg_pool_equals_loop_reference(case, count_include_pad):
    x, window, stride, padding = case
    y = AVG_POOL(
        x, window=window, stride=stride, padding=padding, count_include_pad=count_include_pad
    )
    expected = reference.avg_pool(x, window, stride, padding, count_include_pad)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_padding_semantics():
    x = jnp.full((1, 3, 3, 1), -5.0)
    # -inf padding: a padded position never wins, even against negative values.
    assert np.all(max_pool(x, 2, 1, ((1, 0), (1, 0))) == -5.0)
    # count_include_pad=True divides by kh * kw, so the zero padding dilutes the border.
    corner = avg_pool(x, 2, 1, ((1, 0), (1, 0)))[0, 0, 0, 0]
    assert corner == -5.0 / 4
    assert np.all(avg_pool(x, 2, 1, ((1, 0), (1, 0)), count_include_pad=False) == -5.0)


# ---------------------------------------------------------------- the reshape fast path


def raw_max_pool(x, k):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, k, k, 1), (1, k, k, 1), "VALID")


def raw_avg_pool(x, k):
    return lax.reduce_window(x, 0.0, lax.add, (1, k, k, 1), (1, k, k, 1), "VALID") / k**2


@functools.partial(jax.jit, static_argnums=(0, 1, 5))
def values_grads_tangents(ours, raw, x, cotangent, tangent, k):
    """(value, gradient of <value, cotangent>, jvp along tangent) for ours and for raw."""
    out = []
    for f in (functools.partial(ours, window=k), lambda x: raw(x, k)):
        y, vjp = jax.vjp(f, x)
        out.append((y, vjp(cotangent)[0], jax.jvp(f, (x,), (tangent,))[1]))
    return out


@given(
    k=st.integers(1, 3),
    blocks=st.sampled_from([(1, 1), (2, 3)]),  # few shapes: each one compiles
    c=st.sampled_from([1, 2]),
    seed=st.integers(0, 2**16),
)
def test_fast_path_equals_reduce_window_without_ties(k, blocks, c, seed):
    # Distinct integers: no ties (those follow the rule tested below, whatever a given JAX
    # version's reduce_window does with them), and every window sum is exact in float32.
    rng = np.random.default_rng(seed)
    shape = (2, blocks[0] * k, blocks[1] * k, c)
    x = jnp.asarray(rng.permutation(math.prod(shape)).reshape(shape), jnp.float32)
    cotangent = jnp.asarray(rng.normal(size=(2, *blocks, c)), jnp.float32)
    tangent = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    for ours, raw in [(max_pool, raw_max_pool), (avg_pool, raw_avg_pool)]:
        (y, g, t), (y_raw, g_raw, t_raw) = values_grads_tangents(ours, raw, x, cotangent, tangent, k)
        np.testing.assert_array_equal(y, y_raw)
        np.testing.assert_array_equal(g, g_raw)
        if ours is max_pool:  # selects one tangent per window: exact
            np.testing.assert_array_equal(t, t_raw)
        else:  # a sum of k * k tangents, in an order XLA does not fix
            np.testing.assert_allclose(t, t_raw, rtol=1e-6, atol=1e-7)


def first_maximum_derivatives(x, cotangent, tangent, window, stride, padding):
    """NumPy loops for max_pool's tie rule: each window's cotangent goes to (and its tangent
    comes from) the window's first maximum in row-major order; np.argmax returns the first."""
    pads = padding_pairs(padding, x.shape[1:3], window, stride, "test", ("VALID", "SAME"))
    xp = np.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-np.inf)  # padding never wins
    tp = np.pad(tangent, ((0, 0), *pads, (0, 0)))
    (kh, kw), (sh, sw) = window, stride
    grad, jvp = np.zeros(xp.shape), np.zeros(cotangent.shape)
    for n, i, j, c in itertools.product(*map(range, cotangent.shape)):
        first = np.argmax(xp[n, i * sh : i * sh + kh, j * sw : j * sw + kw, c])
        u, v = i * sh + first // kw, j * sw + first % kw
        grad[n, u, v, c] += cotangent[n, i, j, c]
        jvp[n, i, j, c] = tp[n, u, v, c]
    (top, _), (left, _) = pads
    return grad[:, top : top + x.shape[1], left : left + x.shape[2]], jvp


# (window, stride, padding, (H, W)): three that tile x (the reshape path), two with stride 1
# and no padding (the shifted-views path), four that overlap or pad (the reduce_window path).
TIE_SETTINGS = [
    ((2, 2), (2, 2), "VALID", (4, 6)),
    ((3, 3), (3, 3), "VALID", (6, 9)),
    ((2, 3), (2, 3), 0, (2, 6)),
    ((2, 2), (1, 1), "VALID", (4, 5)),
    ((3, 3), (1, 1), 0, (5, 5)),
    ((2, 2), (1, 1), "SAME", (5, 6)),
    ((3, 3), (2, 2), 1, (7, 7)),
    ((2, 3), (1, 2), "VALID", (4, 7)),
    ((3, 2), (1, 1), ((1, 2), (0, 1)), (5, 4)),
]


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def max_pool_derivatives(x, cotangent, tangent, window, stride, padding):
    f = functools.partial(max_pool, window=window, stride=stride, padding=padding)
    y, vjp = jax.vjp(f, x)
    return y, vjp(cotangent)[0], jax.jvp(f, (x,), (tangent,))[1]


@given(st.sampled_from(TIE_SETTINGS), st.integers(1, 3), st.integers(0, 2**16))
def test_max_pool_tie_rule_equals_loop_reference(setting, levels, seed):
    # Few distinct values (levels=1: every window is one tie), so most windows have ties.
    window, stride, padding, hw = setting
    rng = np.random.default_rng(seed)
    x = rng.integers(0, levels, (2, *hw, 2)).astype(np.float32)
    expected = reference.max_pool(x, window, stride, padding)
    cotangent = rng.normal(size=expected.shape).astype(np.float32)
    tangent = rng.normal(size=x.shape).astype(np.float32)
    y, g, t = max_pool_derivatives(x, cotangent, tangent, window, stride, padding)
    g_ref, t_ref = first_maximum_derivatives(x, cotangent, tangent, window, stride, padding)
    np.testing.assert_array_equal(y, expected)
    # Overlapping windows add cotangents in an unspecified order; a misrouted one is O(1) off.
    np.testing.assert_allclose(g, g_ref, rtol=1e-6, atol=1e-6)
    ours = window == stride or (stride == (1, 1) and padding in ("VALID", 0))
    if ours:  # the fast paths' jvp is ours; reduce_window's at ties is JAX's
        np.testing.assert_array_equal(t, t_ref)


def test_fast_path_tie_rule_would_be_caught():
    # jnp.max's derivative splits a tie's gradient; the rule gives it all to the first maximum.
    x = jnp.zeros((1, 2, 2, 1))
    g = jax.grad(lambda x: max_pool(x, 2).sum())(x)
    np.testing.assert_array_equal(g[0, :, :, 0], [[1.0, 0.0], [0.0, 0.0]])


# ---------------------------------------------------------------- global pools, blur_pool


def test_global_pools_equal_numpy():
    x = normal((3, 5, 4, 6))
    np.testing.assert_allclose(global_avg_pool(jnp.asarray(x)), x.mean(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_array_equal(global_max_pool(jnp.asarray(x)), x.max(axis=(1, 2)))
    assert global_avg_pool(jnp.asarray(x)).shape == (3, 6)


def pascal_row(size):
    """Binomial coefficients by repeated convolution with [1, 1]: independent of math.comb."""
    row = np.ones(1)
    for _ in range(size - 1):
        row = np.convolve(row, [1.0, 1.0])
    return row


@pytest.mark.parametrize("size", range(1, 8))
def test_binomial_filter(size):
    expected = np.outer(pascal_row(size), pascal_row(size))
    np.testing.assert_allclose(binomial_filter(size), expected / expected.sum(), rtol=1e-6)
    if size == 3:
        np.testing.assert_array_equal(binomial_filter(3) * 16, [[1, 2, 1], [2, 4, 2], [1, 2, 1]])


@given(
    size=st.integers(1, 7),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    # Three shapes, so programs repeat (each one compiles). H and W each take an even and an
    # odd size, all residues modulo 3, and 4, the least that reflect padding by 3 allows.
    hw=st.sampled_from([(4, 5), (9, 4), (8, 6)]),
    seed=st.integers(0, 2**16),
)
def test_blur_pool_is_reflect_pad_then_depthwise_binomial(size, stride, hw, seed):
    (h, w), c = hw, 2
    x = normal((2, h, w, c), seed)
    y = BLUR_POOL(x, stride=stride, size=size)
    # Zhang (2019)'s code: ReflectionPad2d([(size-1)//2, ceil((size-1)/2)] per axis), then
    # conv2d(stride=stride, groups=C) with the normalised binomial filter on every channel.
    pad = ((size - 1) // 2, math.ceil((size - 1) / 2))
    xp = np.pad(x, ((0, 0), pad, pad, (0, 0)), mode="reflect")
    f = np.outer(pascal_row(size), pascal_row(size))
    w_depthwise = np.tile((f / f.sum())[:, :, None, None], (1, 1, 1, c))
    expected = reference.conv2d(xp, w_depthwise, stride=stride, groups=c)
    assert y.shape == (2, -(-h // stride[0]), -(-w // stride[1]), c) == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_blur_pool_facts():
    x = jnp.asarray(normal((2, 8, 8, 3)))
    np.testing.assert_allclose(blur_pool(jnp.full((1, 6, 6, 2), 3.0)), 3.0, rtol=1e-6)
    np.testing.assert_array_equal(blur_pool(x, size=1), x[:, ::2, ::2])  # no filter
    # Low-pass: a one-pixel-shifted image downsamples to nearly the same thing with the blur,
    # but to very different values without it (aliasing).
    stripes = jnp.tile(jnp.array([1.0, -1.0]), 4)[None, None, :, None] * jnp.ones((1, 8, 8, 1))
    shifted = jnp.roll(stripes, 1, axis=2)
    assert float(jnp.abs(stripes[:, ::2, ::2] - shifted[:, ::2, ::2]).max()) == 2.0
    assert float(jnp.abs(blur_pool(stripes) - blur_pool(shifted)).max()) < 0.6


# ---------------------------------------------------------------- transformations


OPS = [
    functools.partial(max_pool, window=2),  # fast path
    functools.partial(max_pool, window=3, stride=2, padding="SAME"),
    functools.partial(avg_pool, window=2),  # fast path
    functools.partial(avg_pool, window=(3, 2), stride=1, padding=1, count_include_pad=False),
    functools.partial(blur_pool, stride=2, size=4),
    global_avg_pool,
    global_max_pool,
]


@pytest.mark.parametrize("op", OPS)
def test_gradients_match_finite_differences(op, x64):
    x = jnp.asarray(normal((2, 6, 6, 3), dtype=np.float64))  # distinct values: no ties
    check_grads(op, (x,), order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("op", OPS)
def test_jit_vmap_and_dtype(op, dtype):
    x = jnp.asarray(normal((3, 2, 6, 6, 3)), dtype)
    eager = jnp.stack([op(xi) for xi in x])
    assert eager.dtype == dtype
    # Not bitwise: under jit XLA may fuse a * b + c into one rounding (FMA).
    np.testing.assert_allclose(jax.jit(op)(x[0]), eager[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(jax.vmap(op)(x), eager, rtol=1e-6, atol=1e-7)
    g = jax.jit(jax.grad(lambda x: op(x).sum()))(x[0])
    assert g.dtype == dtype and g.shape == x[0].shape


# ---------------------------------------------------------------- errors


X = jnp.zeros((2, 8, 8, 3))


@pytest.mark.parametrize("name, op", [("max_pool", max_pool), ("avg_pool", avg_pool)])
@pytest.mark.parametrize(
    "x, args, error, match",
    [
        (jnp.zeros((8, 8)), (2,), ValueError, r"`x` must have shape \(N, H, W, C\); got \(8, 8\)\. Add axes with x\[None, \.\.\., None\]"),
        (jnp.zeros((2, 8, 8, 3), jnp.uint8), (2,), TypeError, r"`x` must have a floating dtype; got uint8"),
        (X, (0,), ValueError, r"`window` must be positive; got 0"),
        (X, ((2, 2, 2),), ValueError, r"`window` must be an int or a pair \(h, w\); got \(2, 2, 2\) of length 3"),
        (X, (2.0,), TypeError, r"`window` must be an int or a pair of ints"),
        (X, (2, 0), ValueError, r"`stride` must be positive; got 0"),
        (X, (2, 2, "FULL"), ValueError, r"`padding` must be one of \('VALID', 'SAME'\) \(any case\).*got 'FULL'"),
        (X, (2, 2, -1), ValueError, r"`padding` must be non-negative; got -1"),
        (X, (2, 2, 2), ValueError, r"`padding` must be smaller than `window` \(2, 2\) on every side.*got 2 -> \(\(2, 2\), \(2, 2\)\)"),
        (X, (9,), ValueError, r"`window` must fit in the padded input \(H, W\) = \(8, 8\).*got window=\(9, 9\)"),
    ],
)
def test_pool_errors(name, op, x, args, error, match):
    with pytest.raises(error, match=rf"^{name}: " + match):
        op(x, *args)


def test_other_pool_errors():
    with pytest.raises(TypeError, match=r"^avg_pool: `count_include_pad` must be True or False; got 1"):
        avg_pool(X, 2, count_include_pad=1)
    for f in (global_avg_pool, global_max_pool):
        with pytest.raises(ValueError, match=rf"^{f.__name__}: `x` must have shape \(N, H, W, C\); got \(8, 8, 3\)"):
            f(jnp.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match=r"^blur_pool: `x` must have shape \(N, H, W, C\); got \(8, 8\)"):
        blur_pool(jnp.zeros((8, 8)))
    with pytest.raises(ValueError, match=r"^blur_pool: `size` must be between 1 and 7; got 8\. Use size=3"):
        blur_pool(X, size=8)
    with pytest.raises(ValueError, match=r"^blur_pool: `size` must be a positive int; got 0"):
        blur_pool(X, size=0)
    with pytest.raises(ValueError, match=r"^blur_pool: `stride` must be positive; got 0"):
        blur_pool(X, stride=0)
    with pytest.raises(TypeError, match=r"^binomial_filter: `size` must be a positive int; got 3\.0"):
        binomial_filter(3.0)


def test_docstring_examples():
    import cnnlib.pool

    failures, tried = doctest.testmod(cnnlib.pool, extraglobs={"jnp": jnp}, report=False)
    assert tried >= 7 and failures == 0
