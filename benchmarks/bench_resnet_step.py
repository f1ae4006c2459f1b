"""One training step of a small ResNet (BatchNorm, residual blocks, Dropout): cnnlib vs raw lax.

The new layers' cost, measured as the lead benchmark measures LeNet-5 (bench_train_step.py):
`models.resnet((16, 32, 64), dropout=0.1)` on 28 x 28 x 1 images, batch 128, Adam, through
`train.make_train_step` with a key (Dropout) and state (BatchNorm's running averages), against
the same network written by hand in raw lax: `lax.conv_general_dilated`, batch statistics and
running averages spelled out, the dropout mask drawn from the same key as cnnlib draws it
(``fold_in(fold_in(step_key, 1), layer_index)``), the same loss and the same optax Adam, under
`jax.jit`. Before timing, one step from the same parameters, state, batch and key is compared:
parameters, running averages and loss must agree to float32 rounding, so both time the same
computation. The goal (issue 11): cnnlib never slower than raw lax by more than 5%.

    python benchmarks/bench_resnet_step.py [--repeats 100] [--rounds 3]

Figures and the machine they came from: benchmarks/README.md, "New layers".
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from _args import positive
from bench_train_step import time_rounds
from cnnlib import models, train
from cnnlib.layers import init_params, init_state

BATCH, NUM_CLASSES, RATE, MOMENTUM, EPS = 128, 10, 0.1, 0.9, 1e-5
NHWC = ("NHWC", "HWIO", "NHWC")


def raw_lax_apply(p, s, x, key):
    """models.resnet((16, 32, 64), dropout=0.1) in training mode, on cnnlib's param dicts."""
    new_state = {}

    def conv(x, w, stride):
        pad = "SAME"
        return lax.conv_general_dilated(x, w, (stride, stride), pad, dimension_numbers=NHWC)

    def bn(x, p, s):
        mean = jnp.mean(x, axis=(0, 1, 2))
        var = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))
        m = x.size // x.shape[-1]
        running = {"mean": MOMENTUM * s["mean"] + (1 - MOMENTUM) * lax.stop_gradient(mean),
                   "var": MOMENTUM * s["var"]
                   + (1 - MOMENTUM) * lax.stop_gradient(var) * m / (m - 1)}
        return (x - mean) * lax.rsqrt(var + EPS) * p["scale"] + p["offset"], running

    def conv_bn(x, p, s, stride=1):
        y, running = bn(conv(x, p["0_conv"]["w"], stride), p["1_batch_norm"], s["1_batch_norm"])
        return y, {"1_batch_norm": running}

    def block(x, key, stride):
        pb, sb = p[key], s[key]
        inner_p, inner_s = pb["inner"], sb["inner"]
        h, r1 = bn(conv(x, inner_p["0_conv"]["w"], stride), inner_p["1_batch_norm"],
                   inner_s["1_batch_norm"])
        h, r2 = bn(conv(jax.nn.relu(h), inner_p["3_conv"]["w"], 1), inner_p["4_batch_norm"],
                   inner_s["4_batch_norm"])
        new = {"inner": {"1_batch_norm": r1, "4_batch_norm": r2}}
        if "shortcut" in pb:
            short, new["shortcut"] = conv_bn(x, pb["shortcut"], sb["shortcut"], stride)
        else:
            short = x
        new_state[key] = new
        return jax.nn.relu(h + short)

    x, r = bn(conv(x, p["0_conv"]["w"], 1), p["1_batch_norm"], s["1_batch_norm"])
    new_state["1_batch_norm"] = r
    x = jax.nn.relu(x)  # (N, 28, 28, 16)
    x = block(x, "3_residual", 1)  # (N, 28, 28, 16)
    x = block(x, "5_residual", 2)  # (N, 14, 14, 32)
    x = block(x, "7_residual", 2)  # (N, 7, 7, 64)
    x = jnp.mean(x, axis=(1, 2))  # (N, 64)
    keep = jax.random.bernoulli(jax.random.fold_in(key, 10), 1 - RATE, x.shape)
    x = jnp.where(keep, x / (1 - RATE), 0.0)
    return x @ p["11_dense"]["w"] + p["11_dense"]["b"], new_state


def raw_lax_step(optimizer):
    def loss_fn(p, s, x, y, key):
        logits, s = raw_lax_apply(p, s, x, key)
        log_p = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(log_p, y[:, None], axis=1)), s

    @jax.jit
    def step(p, opt_state, x, y, key, s):
        (loss, s), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            p, s, x, y, jax.random.fold_in(key, 1))
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, s, loss

    return step


def runner(step, params, state, optimizer, x, y, key):
    carry = [params, optimizer.init(params), state]

    def run():
        out = step(carry[0], carry[1], x, y, key, carry[2])
        carry[0], carry[1], carry[2] = out[0], out[1], out[2]
        jax.block_until_ready(out)

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=positive, default=100,
                        help="steps per contender per round")
    parser.add_argument("--rounds", type=positive, default=3, help="independent rounds (medians)")
    args = parser.parse_args()

    model = models.resnet((16, 32, 64), dropout=RATE)
    _, params = init_params(model, jax.random.key(0), (-1, 28, 28, 1))
    state = init_state(model, (-1, 28, 28, 1))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((BATCH, 28, 28, 1), dtype=np.float32))
    y = jnp.asarray(rng.integers(0, NUM_CLASSES, BATCH).astype(np.int32))
    key = jax.random.key(3)
    optimizer = optax.adam(1e-3)
    ours, raw = train.make_train_step(model.apply, optimizer), raw_lax_step(optimizer)

    opt_state = optimizer.init(params)
    p_ours, _, s_ours, loss_ours, _ = ours(params, opt_state, x, y, key, state)
    p_raw, _, s_raw, loss_raw = raw(params, opt_state, x, y, key, state)
    diff = max(float(jnp.max(jnp.abs(a - b)))
               for a, b in zip(jax.tree.leaves((p_ours, s_ours)), jax.tree.leaves((p_raw, s_raw))))
    print(f"one step, cnnlib vs raw lax: loss {float(loss_ours):.6f} vs {float(loss_raw):.6f}, "
          f"largest parameter or state difference {diff:.2e}")
    if diff > 1e-4 or abs(float(loss_ours) - float(loss_raw)) > 1e-5:
        raise SystemExit("cnnlib and raw lax disagree: the timings would not be comparable")

    runners = {"cnnlib": runner(ours, params, state, optimizer, x, y, key),
               "raw lax": runner(raw, params, state, optimizer, x, y, key)}
    print(f"jax {jax.__version__}, {jax.default_backend()} backend, {os.cpu_count()} CPU cores "
          f"({platform.machine()})")
    rounds = [time_rounds(runners, args.repeats) for _ in range(args.rounds)]
    print(f"\nresnet((16, 32, 64), dropout=0.1) train step, batch {BATCH}, Adam: ms per step, "
          f"median of {args.repeats} steps per round (wall, then process CPU time)")
    print("| round | cnnlib wall | raw lax wall | cnnlib CPU | raw lax CPU |")
    print("|------:|------------:|-------------:|-----------:|------------:|")
    for i, (wall, cpu) in enumerate(rounds, 1):
        print(f"| {i:>5} | {wall['cnnlib']:>11.2f} | {wall['raw lax']:>12.2f} | "
              f"{cpu['cnnlib']:>10.2f} | {cpu['raw lax']:>11.2f} |")
    best = {n: min(r[0][n] for r in rounds) for n in runners}
    median = {n: statistics.median(r[0][n] for r in rounds) for n in runners}
    ratio = best["cnnlib"] / best["raw lax"]
    verdict = "met" if ratio <= 1.05 else "NOT met"
    print(f"\ncnnlib / raw lax, best rounds: {ratio:.3f} (wall); median rounds: "
          f"{median['cnnlib'] / median['raw lax']:.3f}; goal <= 1.05: {verdict}")


if __name__ == "__main__":
    main()
