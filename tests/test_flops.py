"""cnnlib.flops: FLOP counts against XLA's own cost analysis, brute-force counting of the
reference loops' multiply-adds and closed forms; the timer against a fake clock."""

from __future__ import annotations

import doctest
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import cnnlib
from cnnlib import flops, reference
from cnnlib.flops import benchmark, conv2d_flops, fft_conv2d_flops, matmul_flops, xla_flops


@st.composite
def conv_configs(draw):
    groups = draw(st.integers(1, 3))
    c, o = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = draw(st.sampled_from(["VALID", "SAME", "FULL", 0, 1, (2, 1)]))
    extent = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    h, w = draw(st.integers(extent[0], extent[0] + 8)), draw(st.integers(extent[1], extent[1] + 8))
    x_shape, w_shape = (draw(st.integers(1, 3)), h, w, c), (kh, kw, c // groups, o)
    return x_shape, w_shape, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


@given(conv_configs())
def test_conv2d_flops_equals_multiply_adds_of_the_loops(config):
    # Brute force: the reference loops do one multiply-add per (output, tap, input channel).
    x_shape, w_shape, kw = config
    out = reference.conv2d(np.zeros(x_shape), np.zeros(w_shape), **kw)  # its (N, H', W', C_out)
    taps = w_shape[0] * w_shape[1] * w_shape[2]
    multiply_adds = sum(taps for _ in np.ndindex(out.shape))
    assert conv2d_flops(x_shape, w_shape, **kw) == 2 * multiply_adds


@pytest.mark.parametrize(
    "x_shape, w_shape, kw",
    [
        ((8, 32, 32, 16), (3, 3, 16, 16), {}),
        ((4, 28, 28, 1), (5, 5, 1, 6), {}),
        ((2, 17, 15, 6), (3, 5, 2, 9), {"stride": 2, "groups": 3}),
        ((2, 20, 20, 4), (3, 3, 4, 4), {"dilation": 2}),
    ],
)
def test_conv2d_flops_equals_xla_cost_analysis(x_shape, w_shape, kw):
    # Without padding: XLA's count leaves out the taps that fall on padded zeros.
    x, w = jnp.zeros(x_shape), jnp.zeros(w_shape)
    compiled = jax.jit(lambda x, w: cnnlib.conv2d(x, w, **kw)).lower(x, w).compile()
    assert conv2d_flops(x_shape, w_shape, **kw) == xla_flops(compiled)


def test_conv2d_flops_with_padding_is_at_least_xlas_count():
    x, w = jnp.zeros((4, 28, 28, 1)), jnp.zeros((5, 5, 1, 6))
    compiled = jax.jit(lambda x, w: cnnlib.conv2d(x, w, padding="SAME")).lower(x, w).compile()
    # Ours counts every tap: 4 * 28 * 28 * 6 outputs of 25 taps; XLA only the taps inside x.
    assert conv2d_flops(x.shape, w.shape, padding="SAME") == 2 * 4 * 28 * 28 * 6 * 25
    inside = 4 * 6 * sum(min(i + 3, 28) - max(i - 2, 0) for i in range(28)) ** 2
    assert xla_flops(compiled) == 2 * inside


def test_conv2d_flops_equals_the_im2col_gemm():
    # groups = 1: one (N * H' * W', kh * kw * C) by (kh * kw * C, C_out) product.
    x_shape, w_shape = (3, 19, 23, 5), (4, 6, 5, 7)
    cols = reference.im2col(np.zeros(x_shape), (4, 6), padding=2)
    assert conv2d_flops(x_shape, w_shape, padding=2) == matmul_flops(*cols.shape, 7)


def test_matmul_flops_against_xla():
    a, b = jnp.zeros((30, 40)), jnp.zeros((40, 50))
    compiled = jax.jit(jnp.dot).lower(a, b).compile()
    assert matmul_flops(30, 40, 50) == xla_flops(compiled) == 120000


def test_xla_flops_reads_a_dict_or_the_list_of_older_jax():
    class Fake:
        def __init__(self, analysis):
            self.analysis = analysis

        def cost_analysis(self):
            return self.analysis

    assert xla_flops(Fake({"flops": 12.0})) == xla_flops(Fake([{"flops": 12.0}])) == 12.0
    with pytest.raises(ValueError, match=r"xla_flops: the compiled program reports no FLOP"):
        xla_flops(Fake([]))


@pytest.mark.parametrize(
    "x_shape, w_shape, padding, size",
    [((1, 8, 8, 1), (1, 1, 1, 1), "VALID", (8, 8)), ((2, 10, 12, 3), (3, 5, 3, 4), 1, (14, 18)),
     ((1, 6, 6, 2), (3, 3, 2, 2), "SAME", (10, 10))],
)
def test_fft_conv2d_flops_closed_form(x_shape, w_shape, padding, size):
    n, _, _, c = x_shape
    o = w_shape[3]
    fh, fw = size  # padded input + kernel - 1, worked out by hand
    rfft = 2.5 * fh * fw * math.log2(fh * fw)
    want = (n * c + c * o + n * o) * rfft + 8 * n * c * o * fh * (fw // 2 + 1)
    assert fft_conv2d_flops(x_shape, w_shape, padding=padding) == round(want)


def test_fft_flops_grow_slower_than_direct_with_kernel_size():
    x_shape = (8, 32, 32, 16)
    direct = [conv2d_flops(x_shape, (k, k, 16, 16), padding="SAME") for k in (3, 11)]
    fft = [fft_conv2d_flops(x_shape, (k, k, 16, 16), padding="SAME") for k in (3, 11)]
    assert direct[1] / direct[0] == pytest.approx(121 / 9)
    assert fft[1] / fft[0] < 3 and fft[1] < direct[1] / 8


def test_benchmark_returns_the_median_of_the_timed_calls():
    ticks = iter([0.0, 3.0, 10.0, 11.0, 20.0, 25.0])  # calls take 3, 1 and 5 s
    calls = []
    result = benchmark(lambda a: calls.append(a) or jnp.ones(2) * a, 2.0, repeats=3, warmup=2,
                       clock=lambda: next(ticks))
    assert result == 3.0
    assert calls == [2.0] * 5  # 2 untimed, 3 timed


def test_benchmark_waits_for_the_result():
    class Result:  # records whether block_until_ready was called on it
        waited = False

        def block_until_ready(self):
            Result.waited = True
            return self

    assert benchmark(Result, repeats=1, warmup=0) >= 0.0
    assert Result.waited


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: conv2d_flops((28, 28), (3, 3, 1, 1)), ValueError, r"x_shape.*4 positive ints"),
        (lambda: conv2d_flops(np.ones((1, 8, 8, 1)), (3, 3, 1, 1)), TypeError,
         r"`x_shape` must be a tuple of ints.*Pass the array's \.shape"),
        (lambda: conv2d_flops((1, 8, 8, 2), (3, 3, 3, 1)), ValueError, r"w_shape\[2\] == 2 // 1"),
        (lambda: conv2d_flops((1, 8, 8, 4), (3, 3, 2, 3), groups=2), ValueError,
         "out_channels divisible by groups"),
        (lambda: conv2d_flops((1, 2, 8, 1), (3, 3, 1, 1)), ValueError, "must fit in the padded"),
        (lambda: conv2d_flops((1, 8, 8, 1), (3, 3, 1, 1), padding="CIRCULAR"), ValueError,
         "`padding` must be one of"),
        (lambda: conv2d_flops((1, 8, 8, 1), (3, 3, 1, 1), stride=0), ValueError,
         "`stride` must be positive"),
        (lambda: fft_conv2d_flops((1, 8, 8, 1), (9, 9, 1, 1)), ValueError, "must fit"),
        (lambda: matmul_flops(2, 0, 3), ValueError, "`k` must be a positive int"),
        (lambda: benchmark(3.0), TypeError, r"`fn` must be callable.*not its result"),
        (lambda: benchmark(jnp.ones, 3, repeats=0), ValueError, "`repeats` must be a positive"),
        (lambda: benchmark(jnp.ones, 3, warmup=-1), ValueError, "`warmup` must be an int >= 0"),
        (lambda: benchmark(jnp.ones, 3, warmup=0.5), TypeError, "`warmup` must be an int >= 0"),
    ],
)
def test_errors_name_the_function_and_the_fix(call, error, match):
    with pytest.raises(error, match=r"^(conv2d_flops|fft_conv2d_flops|matmul_flops|benchmark): "
                       f".*{match}"):
        call()


def test_docstring_examples_run():
    failures, tried = doctest.testmod(flops, extraglobs={"jnp": jnp}, report=False)
    assert failures == 0 and tried >= 3


def test_model_flops_adds_the_layers_with_weights():
    from cnnlib import flops as flops_module
    from cnnlib.layers import Conv, Dense, Flatten, MaxPool, Relu, Residual, serial

    net = serial(Conv(8, 3, padding="SAME"), Relu(), MaxPool(2),
                 Residual(serial(Conv(8, 3, padding="SAME"), Relu(), Conv(8, 3, padding="SAME"))),
                 Flatten(), Dense(10))
    want = (flops_module.conv2d_flops((1, 16, 16, 1), (3, 3, 1, 8), padding="SAME")
            + 2 * flops_module.conv2d_flops((1, 8, 8, 8), (3, 3, 8, 8), padding="SAME")
            + flops_module.matmul_flops(1, 8 * 8 * 8, 10))
    assert flops_module.model_flops(net, (-1, 16, 16, 1)) == want
    assert flops_module.model_flops(net, (32, 16, 16, 1)) == want  # per example
    with pytest.raises(TypeError, match=r"model_flops: `model` must be a Layer; got str"):
        flops_module.model_flops("vgg", (-1, 16, 16, 1))
