"""Fashion-MNIST with cnnlib: a small CNN (< 100K parameters) and an MLP, trained the same way.

Both models are trained by `cnnlib.train.fit` on the 60,000 training images with Adam and a
cosine learning-rate decay, batch 128, key 0, and evaluated once on the 10,000 test images.
"train s" is the wall time of `fit` (compilation included, evaluation excluded) and "CPU s" the
process CPU time over the same span (all threads). The published benchmark table of the data
set (Xiao et al. 2017) has 0.883 for an MLP and 0.916-0.925 for two-convolution networks.

    python benchmarks/fashion_mnist_results.py [--epochs 8] [--models cnn mlp]

Figures and the machine they came from: benchmarks/README.md, "Fashion-MNIST".
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import optax

from cnnlib import fashion_mnist, to_float
from cnnlib.layers import Conv, Dense, Flatten, MaxPool, Relu, init_params, serial
from cnnlib.models import mlp, param_count
from cnnlib.train import evaluate, fit

BATCH = 128


def small_cnn():
    """Two 3x3 conv blocks (16, 32 channels) and a 48-unit hidden layer: 80,602 parameters."""
    return serial(
        Conv(16, 3, padding="SAME"), Relu(), MaxPool(2),  # (N, 14, 14, 16)
        Conv(32, 3, padding="SAME"), Relu(), MaxPool(2),  # (N, 7, 7, 32)
        Flatten(), Dense(48), Relu(),  # (N, 48)
        Dense(10, w_init="lecun"),
    )


MODELS = {
    "cnn": small_cnn,
    "mlp": lambda: mlp((100,)),  # 79,510 parameters, about the CNN's count
}


def run(name, epochs, lr, data, weight_decay=0.0):
    (x_train, y_train), (x_test, y_test) = data
    model = MODELS[name]()
    _, params = init_params(model, jax.random.key(0), (-1, 28, 28, 1))
    steps = epochs * (len(x_train) // BATCH)
    schedule = optax.cosine_decay_schedule(lr, steps)
    # Decoupled weight decay (AdamW) is the one regulariser that needs no change to the model.
    optimizer = (optax.adamw(schedule, weight_decay=weight_decay) if weight_decay
                 else optax.adam(schedule))
    start, start_cpu = time.perf_counter(), time.process_time()
    params, history = fit(model.apply, params, optimizer, (x_train, y_train), epochs=epochs,
                          batch_size=BATCH, key=jax.random.key(0), progress=False)
    jax.block_until_ready(params)
    seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    _, acc = evaluate(model.apply, params, x_test, y_test)
    return dict(model=name, params=param_count(params), epochs=epochs, seconds=seconds, cpu=cpu,
                acc=acc, train_acc=history["accuracy"][-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=4e-3, help="peak learning rate")
    parser.add_argument("--weight-decay", type=float, default=0.0,
                        help="AdamW's decoupled weight decay; 0 for plain Adam")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()

    (x_train, y_train), (x_test, y_test) = fashion_mnist()
    data = (to_float(x_train), y_train), (to_float(x_test), y_test)
    print(f"jax {jax.__version__}, {jax.default_backend()} backend, {os.cpu_count()} CPU cores "
          f"({platform.machine()}); Adam, cosine decay from lr {args.lr}, batch {BATCH}\n")
    print("| model | params | epochs | train s | CPU s | train acc | test acc |")
    print("|-------|-------:|-------:|--------:|------:|----------:|---------:|")
    for name in args.models:
        r = run(name, args.epochs, args.lr, data, args.weight_decay)
        print(f"| {r['model']} | {r['params']:,} | {r['epochs']} | {r['seconds']:.1f} | "
              f"{r['cpu']:.1f} | {r['train_acc']:.4f} | {r['acc']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
