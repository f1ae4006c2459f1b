"""BatchNorm's hand-written backward pass against JAX's differentiation of its definition.

`cnnlib.layers.normalization.batch_norm_train` computes training-mode batch normalisation
and has its gradient written by hand (a `jax.custom_vjp`: two means per channel, the
normalised input kept from the forward pass). This script times one training step
(`train.make_train_step`: forward, backward, Adam; random shifts and label smoothing as in
the Fashion-MNIST record) of the book's batch-normalised networks both ways, the definition
patched in for the comparison, alternating, best of several rounds. Before timing, one step
from the same parameters, state and batch must agree: parameters and state to 1e-4 (Adam
divides each gradient by its own size, so a rounding difference in a gradient near zero
moves its parameter by up to a fraction of the learning rate, 1e-3), as in
bench_resnet_step.py.

    python benchmarks/bench_batch_norm.py [--rounds 5] [--steps 30] [--models vgg-bn resnet26]

Figures and the machine they came from: benchmarks/README.md, "New layers".
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import platform
import sys
import time
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax

from _args import positive
from cnnlib import layers, models, train
from cnnlib.layers import normalization

# name -> (model, input shape, batch): the batch-normalised networks of the book.
NETWORKS = {
    # the Fashion-MNIST record: one device's half of the recipe's batch of 64
    "vgg-bn": (models.vgg_bn, (28, 28, 1), 32),
    "resnet26": (lambda: models.resnet((8, 16, 32), 4), (14, 14, 1), 128),  # chapter 7
}


def definition(x, scale, offset, epsilon):
    """Training-mode batch normalisation as written, for JAX to differentiate."""
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes)
    var = jnp.mean(jnp.square(x - mean), axis=axes)
    return (x - mean) * jax.lax.rsqrt(var + epsilon) * scale + offset, mean, var


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=positive, default=5)
    parser.add_argument("--steps", type=positive, default=30, help="steps per round")
    parser.add_argument("--models", nargs="+", choices=sorted(NETWORKS), default=list(NETWORKS))
    args = parser.parse_args()

    print(f"jax {jax.__version__}, {platform.machine()}, {os.cpu_count()} cores, one device; "
          f"ms per training step, best of {args.rounds} rounds of {args.steps} steps")
    print(f"{'model':10s} {'batch':>6s} {'by hand':>8s} {'by JAX':>7s} {'speed-up':>9s}")
    disagree = []
    for name in args.models:
        make, shape, batch = NETWORKS[name]
        model = make()
        _, params = layers.init_params(model, jax.random.key(0), (-1, *shape))
        state = layers.init_state(model, (-1, *shape))
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.random((batch, *shape), dtype=np.float32))
        y = jnp.asarray(rng.integers(0, 10, batch).astype(np.int32))
        optimizer = optax.adam(1e-3)
        opt_state = optimizer.init(params)
        ways = {"by hand": contextlib.nullcontext,  # the library as it is
                "by JAX": lambda: mock.patch.object(normalization, "batch_norm_train",
                                                    definition)}
        steps, outs = {}, {}
        for way, patched in ways.items():
            with patched():  # the step traces on its first call, inside the patch
                steps[way] = train.make_train_step(
                    model.apply, optimizer, label_smoothing=0.1,
                    augment=functools.partial(train.random_shift, max_shift=1))
                outs[way] = jax.block_until_ready(
                    steps[way](params, opt_state, x, y, jax.random.key(1), state))
        leaves = [jax.tree.leaves((o[0], o[2])) for o in outs.values()]
        diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(*leaves))
        if diff > 1e-4:
            disagree.append(f"{name} (largest parameter or state difference {diff:.1e})")
        times = {way: [] for way in ways}
        for _ in range(args.rounds):
            for way, step in steps.items():
                start = time.perf_counter()
                for _ in range(args.steps):
                    out = step(params, opt_state, x, y, jax.random.key(1), state)
                jax.block_until_ready(out)
                times[way].append((time.perf_counter() - start) / args.steps * 1e3)
        hand, auto = min(times["by hand"]), min(times["by JAX"])
        print(f"{name:10s} {batch:6d} {hand:8.2f} {auto:7.2f} {auto / hand:8.2f}x")
    if disagree:
        sys.exit(f"the two gradients disagree: {disagree}")
    print("one step agrees both ways (parameters and state to 1e-4)")


if __name__ == "__main__":
    main()
