"""cnnlib.conv_algorithms (im2col + GEMM, FFT) against the NumPy loops in cnnlib.reference."""

from __future__ import annotations

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnnlib import conv_algorithms, reference
from cnnlib._validate import padding_pairs
from cnnlib.conv_algorithms import conv2d_fft, conv2d_im2col

ALGORITHMS = [conv2d_im2col, conv2d_fft]
# One jitted function each: examples with equal shapes and padding reuse the compiled program.
JITTED = {f: jax.jit(f, static_argnames="padding") for f in ALGORITHMS}


def normal(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


@st.composite
def cases(draw):
    """(x, w, padding): small shapes, any zero padding form, the kernel always fits."""
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    padding = draw(st.sampled_from(["VALID", "same", "FULL", 1, (2, 0), ((0, 1), (2, 1))]))
    low = (kh, kw) if padding == "VALID" else (1, 1)  # loose: padded forms are checked below
    if not isinstance(padding, str):
        pads = padding_pairs(padding, (9, 9), (kh, kw), (1, 1), "test")  # size-free forms
        low = tuple(max(1, k - sum(p)) for k, p in zip((kh, kw), pads))
    h, w = draw(st.integers(low[0], low[0] + 6)), draw(st.integers(low[1], low[1] + 6))
    n, c, o = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**16))
    return normal((n, h, w, c), seed), normal((kh, kw, c, o), seed + 1), padding


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda f: f.__name__)
@given(case=cases())
def test_equals_reference_loops(algorithm, case):
    x, w, padding = case
    want = reference.conv2d(x, w, padding=padding)
    got = JITTED[algorithm](x, w, padding=padding)  # programs shared by equal shapes
    assert got.shape == want.shape and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda f: f.__name__)
def test_float64_agrees_to_rounding(algorithm, x64):
    x, w = normal((2, 12, 10, 3), 1, np.float64), normal((5, 3, 3, 4), 2, np.float64)
    got = algorithm(x, w, padding="SAME")
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(got, reference.conv2d(x, w, padding="SAME"), rtol=1e-10,
                               atol=1e-10)


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda f: f.__name__)
def test_jits_and_matches_numpy_versions(algorithm):
    x, w = normal((2, 16, 16, 4)), normal((7, 7, 4, 5), 3)
    numpy_version = getattr(reference, algorithm.__name__)  # the chapter 01 definitions
    want = numpy_version(x, w, padding=2)
    got = jax.jit(lambda x, w: algorithm(x, w, padding=2))(x, w)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    "x, w, kwargs, error, match",
    [
        (np.ones((8, 8)), np.ones((3, 3, 1, 1)), {}, ValueError, r"`x` must have shape \(N, H, W"),
        (np.ones((1, 8, 8, 2), np.int32), np.ones((3, 3, 2, 1)), {}, TypeError, "floating dtype"),
        (np.ones((1, 8, 8, 2), np.float32), np.ones((3, 3, 3, 1), np.float32), {}, ValueError,
         "in_channels = 2"),
        (np.ones((1, 8, 8, 2), np.float32), np.ones((3, 3, 2, 1), np.float64), {}, TypeError,
         r"`w` must have the dtype of `x` \(float32\); got float64"),
        (np.ones((1, 2, 8, 1), np.float32), np.ones((3, 3, 1, 1), np.float32), {}, ValueError,
         "must fit in the padded input"),
        (np.ones((1, 8, 8, 1), np.float32), np.ones((3, 3, 1, 1), np.float32),
         {"padding": "CIRCULAR"}, ValueError, "`padding` must be one of"),
        (np.ones((1, 8, 8, 1), np.float32), np.ones((3, 3, 1, 1), np.float32),
         {"padding": -1}, ValueError, "must be non-negative"),
    ],
)
def test_errors_name_the_function_and_the_fix(algorithm, x, w, kwargs, error, match):
    with pytest.raises(error, match=f"^{algorithm.__name__}: .*{match}"):
        algorithm(x, w, **kwargs)


def test_docstring_examples_run():
    failures, tried = doctest.testmod(conv_algorithms, extraglobs={"jnp": jnp}, report=False)
    assert failures == 0 and tried >= 2
