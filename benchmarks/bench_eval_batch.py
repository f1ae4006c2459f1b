"""`train.evaluate` at several batch sizes: images per second, and the same result at each.

XLA's CPU convolutions pick their algorithm by the size of the problem, and some choices are
far slower than others: a 3x3 convolution on one input channel (the first layer of every
Fashion-MNIST network in the book) runs several times faster per image in a batch of 250
than in a batch of 1,000. This script measures what that means for `evaluate` on the book's
networks, with random weights and random images (the speed does not depend on their values),
and checks that every batch size gives the same accuracy and, to float32 rounding, the same
loss. It is the measurement behind `evaluate`'s default batch size.

    python benchmarks/bench_eval_batch.py [--examples 6000] [--rounds 3]
        [--batch-sizes 128 250 500 1000 2000] [--models cnn lenet ...]

Figures and the machine they came from: benchmarks/README.md, "Evaluation batch size".
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp

from _args import positive
from cnnlib import layers, models, train

# name -> (model, image side): the networks the chapters train and evaluate.
NETWORKS = {
    "cnn": (lambda: models.cnn((16, 32)), 28),            # chapter 6
    "cnn3": (lambda: models.cnn((16, 32, 64)), 28),       # chapter 5
    "lenet5": (models.lenet5, 28),                        # chapter 7
    "vgg-bn": (models.vgg_bn, 28),                        # the Fashion-MNIST record
    "resnet26": (lambda: models.resnet((8, 16, 32), 4), 14),  # chapter 7, on 14 x 14
    "mlp": (lambda: models.mlp((100,)), 28),              # the benchmark's MLP
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=positive, default=6000)
    parser.add_argument("--rounds", type=positive, default=3)
    parser.add_argument("--batch-sizes", type=positive, nargs="+",
                        default=[128, 250, 500, 1000, 2000])
    parser.add_argument("--models", nargs="+", choices=sorted(NETWORKS), default=list(NETWORKS))
    args = parser.parse_args()

    print(f"jax {jax.__version__}, {platform.machine()}, {os.cpu_count()} cores, "
          f"{args.examples} examples, best of {args.rounds} rounds; images per second")
    sizes = args.batch_sizes
    print(f"{'model':10s}" + "".join(f"{f'batch {b}':>12s}" for b in sizes)
          + "   fastest / batch 1000" * (1000 in sizes))
    for name in args.models:
        make, side = NETWORKS[name]
        model = make()
        shape = (-1, side, side, 1)
        _, params = layers.init_params(model, jax.random.key(0), shape)
        state = layers.init_state(model, shape) if model.init_state is not None else None
        x = jax.random.uniform(jax.random.key(1), (args.examples, side, side, 1))
        y = jnp.arange(args.examples) % 10
        speed, results = {}, {}
        for b in sizes:
            results[b] = train.evaluate(model.apply, params, x, y, b, state=state)  # compiles
            times = []
            for _ in range(args.rounds):
                start = time.perf_counter()
                train.evaluate(model.apply, params, x, y, b, state=state)
                times.append(time.perf_counter() - start)
            speed[b] = args.examples / min(times)
        loss0, acc0 = results[sizes[0]]
        for b, (loss, acc) in results.items():  # the batch size changes the speed, not the result
            if acc != acc0 or abs(loss - loss0) > 1e-5 * max(1.0, abs(loss0)):
                raise SystemExit(f"{name}: batch {b} gives loss {loss}, accuracy {acc}; batch "
                                 f"{sizes[0]} gives {loss0}, {acc0}")
        line = f"{name:10s}" + "".join(f"{speed[b]:12,.0f}" for b in sizes)
        if 1000 in sizes:
            fastest = max(speed, key=speed.get)
            line += f"   {speed[fastest] / speed[1000]:.2f}x (batch {fastest})"
        print(line, flush=True)
    print("every batch size gave the same accuracy and loss")


if __name__ == "__main__":
    main()
