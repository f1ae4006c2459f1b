"""Fashion-MNIST with cnnlib: small networks (< 100K parameters) and an MLP, each with its recipe.

Every model is trained by `cnnlib.train.fit` on 54,000 of the 60,000 training images (the other
6,000, `train.split_validation(x, y, 0.1)`, are the validation split on which the recipes were
chosen) with Adam and a cosine learning-rate decay, label smoothing 0.1 and random shifts of up
to 1 pixel (`train.random_shift`), for each of the keys 0 to 4 (the key draws the initial
weights, the order of the examples and the shifts). After training, the validation split and
the 10,000 test images are evaluated twice: as they are, and averaged over the 9 shifts of up
to one pixel (`invariance.shift_averaged`, test-time augmentation; chosen on the validation
split, like everything else). The recipes (epochs, batch, peak learning rate, CPU devices):

- ``cnn``: two conv blocks (16, 32 channels) and a 48-unit hidden layer, 80,602 parameters;
  11 epochs, batch 128, 6e-3, one device.
- ``mlp``: `models.mlp((100,))`, 79,510 parameters, trained like the cnn.
- ``vgg-bn``: `models.vgg_bn()`, five 3x3 convolutions with BatchNorm and global average
  pooling, 75,082 parameters; 20 epochs, batch 64, 6e-3, two devices (the record).

`devices` splits this process's CPU into that many XLA devices (`cpu_devices`), and `fit`
splits every batch over them (data parallelism, chapter 08): on two cores, two devices train
`vgg-bn` about 1.4 times as fast as one. "train s" is the wall time of `fit` (compilation
included; no per-epoch validation) and "CPU s" the process CPU time over the same span (all
threads). The published benchmark table of the data set (Xiao et al. 2017) has 0.883 for an
MLP, 0.916-0.925 for two-convolution networks and 0.934 for two convolutions with BatchNorm.

With ``--all-train`` a model is trained on all 60,000 training images and only the test set is
evaluated: the final run of a recipe already chosen on the split (for vgg-bn it gained
nothing; benchmarks/README.md records both runs).

    python benchmarks/fashion_mnist_results.py [--models cnn mlp vgg-bn] [--seeds 0 1 2 3 4]
        [--epochs E] [--batch B] [--lr LR] [--devices D] [--train-examples N]
        [--test-examples N] [--all-train]

Figures, the machine they came from and what was tried: benchmarks/README.md, "Fashion-MNIST".
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import time

import jax
import optax

from _args import non_negative, positive
from cnnlib import fashion_mnist, to_float
from cnnlib.experiments import Summary
from cnnlib.invariance import shift_averaged
from cnnlib.layers import Conv, Dense, Flatten, MaxPool, Relu, init_params, init_state, serial
from cnnlib.models import mlp, param_count, vgg_bn
from cnnlib.train import evaluate, fit, random_shift, split_validation


def small_cnn():
    """Two 3x3 conv blocks (16, 32 channels) and a 48-unit hidden layer: 80,602 parameters."""
    return serial(
        Conv(16, 3, padding="SAME"), Relu(), MaxPool(2),  # (N, 14, 14, 16)
        Conv(32, 3, padding="SAME"), Relu(), MaxPool(2),  # (N, 7, 7, 32)
        Flatten(), Dense(48), Relu(),  # (N, 48)
        Dense(10, w_init="lecun"),
    )


# name: (factory, recipe); every recipe also uses label smoothing 0.1 and shifts of 1 pixel.
# `devices`: CPU devices `fit` splits each batch over (see cpu_devices).
MODELS = {
    "cnn": (small_cnn, dict(epochs=11, batch=128, lr=6e-3, devices=1)),
    "mlp": (lambda: mlp((100,)), dict(epochs=11, batch=128, lr=6e-3, devices=1)),  # 79,510
    "vgg-bn": (vgg_bn, dict(epochs=20, batch=64, lr=6e-3, devices=2)),  # 75,082
}


def cpu_devices(n):
    """Make this process's CPU n XLA devices; call before anything starts JAX's backend.

    The devices share the machine's cores. They still pay on two cores: one device runs a
    step of small convolutions on about 1.2 cores' worth of CPU time, and two devices, each
    with half of every batch, keep both cores busy (benchmarks/README.md, "Fashion-MNIST").
    """
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except AttributeError:  # older JAX: only the XLA flag, read when the backend starts
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()


def run(name, data, *, epochs, batch, lr, devices=1, seed=0, weight_decay=0.0,
        label_smoothing=0.0, shift=0):
    (x_train, y_train), validation, (x_test, y_test) = data
    available = jax.devices("cpu")
    if len(available) < devices:
        raise SystemExit(f"{name}: the recipe needs {devices} CPU devices, JAX has "
                         f"{len(available)}; cpu_devices() came too late (after JAX started "
                         f"its backend), or XLA_FLAGS set fewer.")
    devices = available[:devices]
    factory, _ = MODELS[name]
    model = factory()
    init_key, fit_key = jax.random.split(jax.random.key(seed))
    _, params = init_params(model, init_key, (-1, 28, 28, 1))
    state = init_state(model, (-1, 28, 28, 1)) if model.init_state else None
    steps = epochs * (len(x_train) // batch)
    schedule = optax.cosine_decay_schedule(lr, steps)
    # Decoupled weight decay (AdamW) is the one regulariser that needs no change to the model.
    optimizer = (optax.adamw(schedule, weight_decay=weight_decay) if weight_decay
                 else optax.adam(schedule))
    augment = functools.partial(random_shift, max_shift=shift) if shift else None
    start, start_cpu = time.perf_counter(), time.process_time()
    # No per-epoch validation (it would cost about 5% of the time); evaluated once below.
    out = fit(model.apply, params, optimizer, (x_train, y_train), epochs=epochs,
              batch_size=batch, key=fit_key, state=state, progress=False, augment=augment,
              label_smoothing=label_smoothing, devices=devices)
    jax.block_until_ready(out[0])
    seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    params, history = out[0], out[-1]
    state = out[1] if state is not None else None
    # Test-time augmentation: the mean prediction over the 9 shifts of up to one pixel.
    averaged = shift_averaged(model.apply, max(shift, 1))
    val_acc = val_avg = None  # no validation split when training on all 60,000 images
    if validation is not None:
        _, val_acc = evaluate(model.apply, params, *validation, state=state)
        _, val_avg = evaluate(averaged, params, *validation, state=state)
    _, acc = evaluate(model.apply, params, x_test, y_test, state=state)
    _, acc_avg = evaluate(averaged, params, x_test, y_test, state=state)
    return dict(model=name, params=param_count(params), epochs=epochs, devices=len(devices),
                seconds=seconds, cpu=cpu, train_acc=history["accuracy"][-1],
                val_acc=val_acc, acc=acc, val_avg=val_avg, acc_avg=acc_avg,
                seed=seed)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["cnn", "mlp"], choices=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=non_negative, default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=positive, help="override every model's recipe")
    parser.add_argument("--batch", type=positive, help="override every model's recipe")
    parser.add_argument("--lr", type=float, help="peak learning rate; overrides the recipe")
    parser.add_argument("--weight-decay", type=float, default=0.0,
                        help="AdamW's decoupled weight decay; 0 for plain Adam")
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--shift", type=non_negative, default=1,
                        help="largest random shift in pixels (train.random_shift); 0 for none")
    parser.add_argument("--devices", type=positive,
                        help="CPU devices to split each batch over; overrides the recipe")
    parser.add_argument("--train-examples", type=positive,
                        help="train on the first N training images (for quick checks)")
    parser.add_argument("--test-examples", type=positive,
                        help="evaluate on the first N test images (for quick checks)")
    parser.add_argument("--all-train", action="store_true",
                        help="train on all 60,000 training images, without a validation split: "
                             "the final run, once the recipe has been chosen on the split")
    args = parser.parse_args()
    # Before anything starts JAX's backend: as many CPU devices as the largest recipe needs.
    cpu_devices(args.devices or max(MODELS[name][1]["devices"] for name in args.models))

    (x_train, y_train), (x_test, y_test) = fashion_mnist()
    if args.all_train:
        train, validation = (to_float(x_train), y_train), None
    else:
        train, validation = split_validation(to_float(x_train), y_train, 0.1)
    if args.train_examples:
        train = train[0][:args.train_examples], train[1][:args.train_examples]
    if args.test_examples:
        x_test, y_test = x_test[:args.test_examples], y_test[:args.test_examples]
    data = train, validation, (to_float(x_test), y_test)
    print(f"jax {jax.__version__}, {jax.default_backend()} backend, {os.cpu_count()} CPU cores "
          f"({platform.machine()}); {len(train[1]):,} training, "
          f"{len(validation[1]) if validation else 0:,} validation and {len(y_test):,} test "
          f"images; Adam, cosine decay, weight decay {args.weight_decay}, label smoothing "
          f"{args.label_smoothing}, random shift {args.shift}; \"9 shifts\": "
          f"invariance.shift_averaged over the shifts of up to {max(args.shift, 1)} pixel(s)\n")
    print("| model | params | key | epochs | batch | lr | devices | train s | CPU s | train acc "
          "| val acc | test acc | val acc, 9 shifts | test acc, 9 shifts |")
    print("|-------|-------:|----:|-------:|------:|---:|--------:|--------:|------:|----------:"
          "|--------:|---------:|------------------:|-------------------:|")
    summaries = []
    for name in args.models:
        recipe = dict(MODELS[name][1])
        recipe.update({k: getattr(args, k) for k in recipe if getattr(args, k) is not None})
        rows = []
        for seed in args.seeds:
            r = run(name, data, seed=seed, weight_decay=args.weight_decay,
                    label_smoothing=args.label_smoothing, shift=args.shift, **recipe)
            rows.append(r)
            val, val_avg = (f"{r[k]:.4f}" if r[k] is not None else "—"
                            for k in ("val_acc", "val_avg"))
            print(f"| {name} | {r['params']:,} | {seed} | {r['epochs']} | {recipe['batch']} | "
                  f"{recipe['lr']:g} | {r['devices']} | {r['seconds']:.1f} | {r['cpu']:.1f} | "
                  f"{r['train_acc']:.4f} | {val} | {r['acc']:.4f} | {val_avg} | "
                  f"{r['acc_avg']:.4f} |", flush=True)
        # Summary formats as "mean ± std" (sample std, 0 for one key).
        test, test_avg = (Summary(tuple(r[k] for r in rows)) for k in ("acc", "acc_avg"))
        val = val_avg = ""  # no validation split with --all-train
        if validation is not None:
            val, val_avg = (f"val acc {Summary(tuple(r[k] for r in rows)):.4f}, "
                            for k in ("val_acc", "val_avg"))
        summaries.append(
            f"{name}: {val}test acc {test:.4f} (min {test.min:.4f}); 9 shifts: {val_avg}"
            f"test acc {test_avg:.4f} (min {test_avg.min:.4f}); "
            f"train s max {max(r['seconds'] for r in rows):.1f} over {len(rows)} key(s)")
    print("\nmean ± std (sample std) over keys:")
    for line in summaries:
        print("  " + line)


if __name__ == "__main__":
    main()
