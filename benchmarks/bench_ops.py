"""What cnnlib's checked wrappers cost over raw `jax.lax`, under `jax.jit`.

For each shape, a jitted cnnlib op and a jitted raw lax call of the same computation are timed
in one process, call by call in turn (so background load hits both alike): median of
`--repeats` calls each, every call ended with `block_until_ready`. "same HLO" says whether the
two compile to the same optimised program, in which case the overhead is exactly zero and any
measured difference is noise. Pooling is also timed as value-and-gradient, where the
reshape fast path for non-overlapping windows differs from reduce_window.

    python benchmarks/bench_ops.py [--repeats 50]

Figures and the machine they came from: benchmarks/README.md, "Operations".
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import time

import jax
import jax.numpy as jnp
from jax import lax

from _args import positive
import cnnlib

NHWC = ("NHWC", "HWIO", "NHWC")


def raw_conv(padding):
    return lambda x, w: lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=NHWC)


def raw_max_pool(k, s, padding):
    return lambda x: lax.reduce_window(x, -jnp.inf, lax.max, (1, k, k, 1), (1, s, s, 1), padding)


def raw_avg_pool(k, s, padding):
    return lambda x: lax.reduce_window(x, 0.0, lax.add, (1, k, k, 1), (1, s, s, 1), padding) / k**2


def raw_blur_pool(x):
    c = x.shape[3]
    f = jnp.array([1.0, 2.0, 1.0])
    w = jnp.tile((jnp.outer(f, f) / 16)[:, :, None, None], (1, 1, 1, c))
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    return lax.conv_general_dilated(x, w, (2, 2), "VALID", dimension_numbers=NHWC,
                                    feature_group_count=c)


def grad_of(f):
    return jax.value_and_grad(lambda *args: jnp.sum(f(*args) ** 2))


def compare(ours, raw, args, repeats):
    """Median ms of each over `repeats` calls, alternating call by call; and whether the two
    jitted programs compile to the same optimised HLO (then any difference is noise)."""
    ours, raw = jax.jit(ours), jax.jit(raw)
    for f in (ours, raw):  # compile, warm up
        jax.block_until_ready(f(*args))
    times = ([], [])
    for _ in range(repeats):
        for f, t in zip((ours, raw), times):
            start = time.perf_counter()
            jax.block_until_ready(f(*args))
            t.append(time.perf_counter() - start)
    same = _optimised_hlo(ours, args) == _optimised_hlo(raw, args)
    return 1e3 * statistics.median(times[0]), 1e3 * statistics.median(times[1]), same


def _optimised_hlo(f, args):
    """The compiled program's computations, without names and source locations."""
    text = f.lower(*args).compile().as_text()
    text = text[text.index("\nENTRY") :] if "\nENTRY" in text else text
    text = re.sub(r", metadata=\{[^}]*\}", "", text)
    return re.sub(r"ENTRY %\S+", "ENTRY", text)


def cases():
    key = jax.random.PRNGKey(0)

    def normal(*shape):
        return jax.random.normal(key, shape, jnp.float32)

    for x_shape, w_shape, padding in [
        ((128, 28, 28, 1), (5, 5, 1, 6), "VALID"),  # LeNet C1
        ((128, 14, 14, 6), (5, 5, 6, 16), "VALID"),  # LeNet C3
        ((32, 56, 56, 64), (3, 3, 64, 64), "SAME"),  # ResNet stage 1
    ]:
        x, w = normal(*x_shape), normal(*w_shape)
        yield ("conv2d", f"{x_shape} x {w_shape} {padding}",
               lambda x, w, p=padding: cnnlib.conv2d(x, w, padding=p), raw_conv(padding), (x, w))
    for x_shape in [(128, 24, 24, 6), (128, 10, 10, 16), (32, 56, 56, 64)]:
        x = normal(*x_shape)
        for name, ours, raw in [
            ("max_pool 2/2", lambda x: cnnlib.max_pool(x, 2), raw_max_pool(2, 2, "VALID")),
            ("avg_pool 2/2", lambda x: cnnlib.avg_pool(x, 2), raw_avg_pool(2, 2, "VALID")),
        ]:
            yield name, str(x_shape), ours, raw, (x,)
            yield name + " +grad", str(x_shape), grad_of(ours), grad_of(raw), (x,)
    x = normal(32, 56, 56, 64)
    ours = lambda x: cnnlib.max_pool(x, 3, 2, "SAME")  # noqa: E731 (overlapping: reduce_window)
    yield "max_pool 3/2 SAME", str(x.shape), ours, raw_max_pool(3, 2, "SAME"), (x,)
    raw = raw_max_pool(3, 2, "SAME")
    yield "max_pool 3/2 SAME +grad", str(x.shape), grad_of(ours), grad_of(raw), (x,)
    ours = lambda x: cnnlib.blur_pool(x)  # noqa: E731
    yield "blur_pool 3, s2", str(x.shape), ours, raw_blur_pool, (x,)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=positive, default=50)
    args = parser.parse_args()
    print(f"jax {jax.__version__}, {jax.default_backend()}, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}; median of {args.repeats} calls")
    print(f"| {'op':<24} | {'shape':<40} | cnnlib ms | lax ms | overhead | same HLO |")
    print(f"|{'-' * 26}|{'-' * 42}|----------:|-------:|---------:|:--------:|")
    for name, shape, ours, raw, inputs in cases():
        a, b, same = compare(ours, raw, inputs, args.repeats)
        print(f"| {name:<24} | {shape:<40} | {a:9.3f} | {b:6.3f} | {100 * (a / b - 1):+7.1f}% "
              f"| {'yes' if same else 'no':^8} |")


if __name__ == "__main__":
    main()
