"""Compiling `init_params`: the weights drawn as a flat vector against drawn in their shape.

`init_params` compiles a model's whole initialisation into one program (once per model and
input shape; seeds reuse it). Every weight tensor in it is a `jax.random.normal` draw, and
XLA:CPU compiles a draw of a 4-D shape several times more slowly than a draw of the same
number of values as a vector. JAX numbers the values of a shape in row-major order, so
``normal(key, (n,)).reshape(shape)`` gives the numbers of ``normal(key, shape)``, bit for
bit; `cnnlib.layers.base.normal` draws that way. This script measures, for the book's
networks, the compile time of the whole initialisation both ways (the shaped draw patched in
for the comparison) and checks that both give the same weights.

    python benchmarks/bench_init.py [--rounds 3] [--models cnn lenet5 ...]

Figures and the machine they came from: benchmarks/README.md, "Initialisation".
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import sys
import time
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np

from _args import positive
from cnnlib import layers, models
from cnnlib.layers import linear

# name -> (model, input shape): the networks the chapters initialise.
NETWORKS = {
    "mlp": (lambda: models.mlp((100,)), (-1, 28, 28, 1)),               # the benchmark's MLP
    "cnn": (lambda: models.cnn((16, 32)), (-1, 28, 28, 1)),             # chapter 6
    "lenet5": (models.lenet5, (-1, 28, 28, 1)),                         # chapter 7
    "vgg-bn": (models.vgg_bn, (-1, 28, 28, 1)),                         # the Fashion-MNIST record
    "resnet26": (lambda: models.resnet((8, 16, 32), 4), (-1, 14, 14, 1)),  # chapter 7
}


def shaped_normal(key, shape, gain, fan_in):
    """The draw in the weights' shape: what `layers.base.normal` did before."""
    return jax.random.normal(key, shape, jnp.float32) * math.sqrt(gain / fan_in)


# draw -> a context in which `init_params` draws that way.
DRAWS = {"shaped": lambda: mock.patch.object(linear, "normal", shaped_normal),
         "flat": contextlib.nullcontext}  # the library as it is


def compile_seconds(model, in_shape) -> tuple[float, dict]:
    """Seconds to trace and compile the model's whole init, and the weights it draws."""
    def params_only(key):
        return model.init(key, in_shape)[1]

    start = time.perf_counter()
    compiled = jax.jit(params_only).lower(jax.random.key(0)).compile()
    seconds = time.perf_counter() - start
    return seconds, compiled(jax.random.key(0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=positive, default=3)
    parser.add_argument("--models", nargs="+", choices=sorted(NETWORKS), default=list(NETWORKS))
    args = parser.parse_args()
    # Every round must compile: no persistent compilation cache (make sets one for notebooks).
    jax.config.update("jax_enable_compilation_cache", False)

    print(f"jax {jax.__version__}, {platform.machine()}, {os.cpu_count()} cores, "
          f"best of {args.rounds} rounds; seconds to compile the whole init")
    print(f"{'model':10s} {'tensors':>8s} {'parameters':>11s} {'shaped draw':>12s} "
          f"{'flat draw':>10s} {'speed-up':>9s}")
    mismatched = []
    for name in args.models:
        make, in_shape = NETWORKS[name]
        model = make()
        _, shapes = layers.param_shapes(model, in_shape)
        times = {draw: [] for draw in DRAWS}
        weights = {}
        for _ in range(args.rounds):
            for draw, patched in DRAWS.items():
                with patched():  # each call traces a new function, so every round compiles
                    seconds, weights[draw] = compile_seconds(model, in_shape)
                times[draw].append(seconds)
        same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(weights["shaped"]),
                                                         jax.tree.leaves(weights["flat"])))
        if not same:
            mismatched.append(name)
        shaped, flat = min(times["shaped"]), min(times["flat"])
        print(f"{name:10s} {len(jax.tree.leaves(shapes)):8d} {models.param_count(shapes):11,d} "
              f"{shaped:12.2f} {flat:10.2f} {shaped / flat:8.1f}x")
    if mismatched:
        sys.exit(f"the flat and the shaped draw gave different weights for {mismatched}")
    print("the flat and the shaped draw gave the same weights, bit for bit")


if __name__ == "__main__":
    main()
