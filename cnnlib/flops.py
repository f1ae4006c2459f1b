"""What a computation costs: floating-point operations (FLOPs) counted, and time measured.

Introduced in chapter 08, notebooks/08-performance-and-scaling.ipynb. A multiply-add counts as
2 FLOPs, the convention of hardware peak figures and of XLA's own `cost_analysis()`, which the
tests compare `conv2d_flops` with. Dividing a FLOP count by a measured time gives FLOP/s;
dividing that by what a large matrix product reaches gives the fraction of the machine's peak.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable

import jax

from cnnlib._validate import _is_int, check_positive_int, padding_pairs, positive_pair
from cnnlib.conv import conv_output_size
from cnnlib.layers import Layer, param_shapes
from cnnlib.layers.base import out_shape


def matmul_flops(m: int, k: int, n: int) -> int:
    """FLOPs of an (m, k) by (k, n) matrix product: m * n outputs, k multiply-adds each.

    Example:
        >>> matmul_flops(2, 3, 4)
        48

    Introduced in chapter 08, notebooks/08-performance-and-scaling.ipynb.
    """
    sizes = [check_positive_int(v, name, "matmul_flops") for v, name in ((m, "m"), (k, "k"),
                                                                          (n, "n"))]
    return 2 * math.prod(sizes)


def conv2d_flops(
    x_shape: Any,
    w_shape: Any,
    *,
    stride: Any = 1,
    padding: Any = "VALID",
    dilation: Any = 1,
    groups: int = 1,
) -> int:
    """FLOPs of a direct convolution: 2 * N * H' * W' * C_out * kh * kw * C_in / groups.

    Each of the N * H' * W' * C_out outputs is a dot product of kh * kw * C_in / groups taps.
    Taps that fall on padded zeros are counted, as im2col + GEMM computes them; XLA's
    `cost_analysis()` leaves them out, so with padding its count is smaller (without padding
    the two agree exactly).

    Args:
        x_shape: (N, H, W, in_channels).
        w_shape: (kh, kw, in_channels // groups, out_channels).
        stride, padding, dilation, groups: as in `cnnlib.conv2d` (zero padding strings
            "VALID", "SAME", "FULL", or ints and pairs).

    Returns:
        The FLOP count, a Python int.

    Raises:
        TypeError: a shape is not a tuple of ints, or an argument has the wrong type.
        ValueError: a shape has the wrong length or a non-positive entry, the channels do not
            match, or the kernel does not fit in the padded input.

    Example:
        >>> conv2d_flops((1, 28, 28, 1), (5, 5, 1, 6))  # LeNet's first layer: 24 x 24 x 6 x 25
        172800

    Introduced in chapter 08, notebooks/08-performance-and-scaling.ipynb.
    """
    n, (h_out, w_out), (kh, kw, c_group, c_out) = _conv_geometry(
        x_shape, w_shape, stride, padding, dilation, groups, "conv2d_flops")
    outputs = n * h_out * w_out * c_out  # one dot product each
    taps = kh * kw * c_group  # its length: a window of every input channel of its group
    return 2 * outputs * taps  # a multiply and an add per tap


def _conv_geometry(x_shape, w_shape, stride, padding, dilation, groups, where):
    """Checked (N, (H_out, W_out), w_shape) of a convolution, for the FLOP counts."""
    n, h, w, c = _check_shape(x_shape, "x_shape", "(N, H, W, C)", where)
    kh, kw, c_group, out_channels = _check_shape(
        w_shape, "w_shape", "(kh, kw, in_channels // groups, out_channels)", where
    )
    groups = check_positive_int(groups, "groups", where)
    if c_group * groups != c or out_channels % groups:
        raise ValueError(
            f"{where}: `w_shape` must be (kh, kw, in_channels // groups, out_channels) with "
            f"in_channels = {c} and groups = {groups}, out_channels divisible by groups; got "
            f"{tuple(w_shape)}. Make w_shape[2] == {c} // {groups}."
        )
    stride = positive_pair(stride, "stride", where)
    dilation = positive_pair(dilation, "dilation", where)
    extent = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    pads = padding_pairs(padding, (h, w), extent, stride, where, ("VALID", "SAME", "FULL"))
    out_hw = []
    for size, k, e, s, d, pad in zip((h, w), (kh, kw), extent, stride, dilation, pads):
        if e > size + sum(pad):
            raise ValueError(
                f"{where}: the kernel (extent {extent}) must fit in the padded input "
                f"{(h + sum(pads[0]), w + sum(pads[1]))}; got x_shape {tuple(x_shape)}, "
                f"padding {padding!r}. Use padding=\"SAME\" or a smaller kernel."
            )
        out_hw.append(conv_output_size(size, k, s, pad, d))
    return n, tuple(out_hw), (kh, kw, c_group, out_channels)


def xla_flops(compiled: Any) -> float:
    """The FLOP count XLA reports for a compiled program (``jax.jit(f).lower(...).compile()``).

    `cost_analysis()` returns a dict in recent JAX and a list holding one dict in older
    versions (0.4.x); this reads either.

    Example:
        >>> xla_flops(jax.jit(jnp.dot).lower(jnp.ones((2, 3)), jnp.ones((3, 4))).compile())
        48.0

    Introduced in chapter 08, notebooks/08-performance-and-scaling.ipynb.
    """
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    if not isinstance(analysis, dict) or "flops" not in analysis:
        raise ValueError(
            f"xla_flops: the compiled program reports no FLOP count; got {analysis!r}. Some "
            f"backends do not implement cost_analysis."
        )
    return float(analysis["flops"])


def model_flops(model: Any, in_shape: Any) -> int:
    """FLOPs of one forward pass through the layers with weights of a model, per example.

    Conv, LocallyConnected and Dense layers, wherever they sit (inside `serial`, `parallel`,
    `Residual`), each counted as 2 FLOPs per multiply-add of their outputs' dot products, as
    `conv2d_flops` counts them (taps on padded zeros included). Activations, pooling,
    normalisation and additions are not counted: in a CNN they are a small fraction of the
    arithmetic (but not of the memory traffic). Shapes come from the layers' init, without
    data.

    Args:
        model: a `cnnlib.layers.Layer`.
        in_shape: the input shape with batch axis, e.g. ``(-1, 224, 224, 3)``; the count is
            for one example whatever the batch axis says.

    Returns:
        The FLOP count, a Python int.

    Example:
        >>> from cnnlib.layers import Conv, Flatten, Dense, serial
        >>> model_flops(serial(Conv(6, 5), Flatten(), Dense(10)), (-1, 28, 28, 1))
        241920

    Introduced in chapter 07, notebooks/07-going-deeper.ipynb.
    """
    if not isinstance(model, Layer):
        raise TypeError(f"model_flops: `model` must be a Layer; got {type(model).__name__}.")
    shape = (1, *tuple(in_shape)[1:])  # one example
    param_shapes(model, shape)  # checks the shapes, with the layers' own messages
    return _flops(model, shape)[0]


def _flops(layer, shape):
    """(FLOPs, output shape) of `layer` on an input of `shape`."""
    config, name = layer.config, layer.name
    out = out_shape(layer, shape)
    if name in ("conv", "locally_connected"):
        kh, kw = config["kernel_size"]
        groups = config.get("groups", 1)
        return 2 * math.prod(out) * kh * kw * shape[-1] // groups, out
    if name == "dense":
        return 2 * math.prod(out) * shape[-1], out
    if name == "residual":
        return sum(_flops(config[k], shape)[0] for k in ("inner", "shortcut")), out
    if name == "parallel":
        return sum(_flops(b, s)[0] for b, s in zip(config["branches"], shape)), out
    if "layers" in config:  # serial and other chains
        total = 0
        for child in config["layers"]:
            flops, shape = _flops(child, shape)
            total += flops
        return total, out
    return 0, out


def fft_conv2d_flops(x_shape: Any, w_shape: Any, *, padding: Any = "VALID") -> int:
    """Estimated FLOPs of `cnnlib.conv_algorithms.conv2d_fft`: O(n log n) transforms + products.

    With the transform size ``(fh, fw) = (H_p + kh - 1, W_p + kw - 1)``, ``P = fh * fw`` and
    a real FFT costing the usual estimate 2.5 * P * log2(P) (half the 5 P log2 P of a complex
    radix-2 FFT): N * C_in forward transforms of `x`, C_in * C_out of `w`, N * C_out inverse
    transforms, and N * C_in * C_out * fh * (fw // 2 + 1) complex multiply-adds (8 FLOPs each).
    The kernel size enters only through the transform size, so for large kernels this grows
    far more slowly than `conv2d_flops`.

    Args:
        x_shape: (N, H, W, in_channels).
        w_shape: (kh, kw, in_channels, out_channels).
        padding: as in `conv2d_flops`.

    Returns:
        The estimate, rounded to a Python int.

    Raises:
        TypeError, ValueError: as in `conv2d_flops`.

    Example:
        >>> fft_conv2d_flops((1, 8, 8, 1), (1, 1, 1, 1))  # 3 transforms of 64 points + 40 products
        3200

    Introduced in chapter 08, notebooks/08-performance-and-scaling.ipynb.
    """
    where = "fft_conv2d_flops"
    conv2d_flops(x_shape, w_shape, padding=padding)  # the same checks (stride 1, groups 1)
    n, h, w, c = x_shape
    kh, kw, _, out_channels = w_shape
    (top, bottom), (left, right) = padding_pairs(
        padding, (h, w), (kh, kw), (1, 1), where, ("VALID", "SAME", "FULL")
    )
    fh, fw = h + top + bottom + kh - 1, w + left + right + kw - 1
    points = fh * fw
    transforms = n * c + c * out_channels + n * out_channels
    products = n * c * out_channels * fh * (fw // 2 + 1)  # one-sided spectrum of a real signal
    return round(transforms * 2.5 * points * math.log2(points) + 8 * products)


def benchmark(
    fn: Callable,
    *args: Any,
    repeats: int = 5,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Median wall-clock seconds of ``fn(*args)``, waiting for JAX's asynchronous results.

    JAX returns before the device has finished; `jax.block_until_ready` waits, so the time is
    that of the computation and not of its dispatch. The `warmup` calls first are not timed:
    under `jax.jit` the first call traces and compiles. The median ignores the odd slow call
    (another process, a garbage collection) that would skew a mean.

    Args:
        fn: the function to time.
        *args: its arguments.
        repeats: timed calls, >= 1.
        warmup: untimed calls first, >= 0.
        clock: returns seconds; `time.perf_counter` (tests pass a fake one).

    Returns:
        The median of the `repeats` times, in seconds.

    Raises:
        TypeError: `fn` is not callable, or `repeats` / `warmup` is not an int.
        ValueError: `repeats` < 1 or `warmup` < 0.

    Example:
        >>> f = jax.jit(lambda a: a @ a)
        >>> seconds = benchmark(f, jnp.ones((512, 512)), repeats=10)

    Introduced in chapter 08, notebooks/08-performance-and-scaling.ipynb.
    """
    repeats, warmup = _check_benchmark(fn, repeats, warmup)
    for _ in range(warmup):  # the first call under jit compiles: not timed
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = clock()
        jax.block_until_ready(fn(*args))  # wait for the device, not just the dispatch
        times.append(clock() - start)
    return statistics.median(times)


def _check_benchmark(fn, repeats, warmup):
    where = "benchmark"
    if not callable(fn):
        raise TypeError(
            f"{where}: `fn` must be callable; got {type(fn).__name__}. Pass the function, e.g. "
            f"benchmark(f, x), not its result benchmark(f(x))."
        )
    repeats = check_positive_int(repeats, "repeats", where)
    if not _is_int(warmup) or warmup < 0:
        raise (TypeError if not _is_int(warmup) else ValueError)(
            f"{where}: `warmup` must be an int >= 0; got {warmup!r}. Use warmup=1 to leave the "
            f"compiling first call out."
        )
    return repeats, int(warmup)


def _check_shape(shape, name, layout, where):
    if not isinstance(shape, (tuple, list)) or not all(_is_int(v) for v in shape):
        got = repr(shape) if isinstance(shape, (tuple, list)) else type(shape).__name__
        raise TypeError(
            f"{where}: `{name}` must be a tuple of ints {layout}; got {got}. Pass the "
            f"array's .shape."
        )
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(
            f"{where}: `{name}` must be 4 positive ints {layout}; got {tuple(shape)}."
        )
    return tuple(int(v) for v in shape)
