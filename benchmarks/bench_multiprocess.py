"""Data parallelism across processes: the same training run on 1 process and on N (cnnlib.launch).

The chapter's small CNN (`models.cnn((16, 32))`, 20,490 parameters) is trained with Adam on the
first 12,000 Fashion-MNIST training images, batch 128, for 2 epochs: once as one process, once
as N processes of one JAX job started by ``python -m cnnlib.launch -n N`` (gloo collectives over
loopback, one CPU device per process). The training code is the same in both; the workers only
call `cnnlib.distributed.initialize()` first.

Each worker first runs ``fit`` for one epoch, which compiles the step into JAX's persistent
compilation cache, then times the real ``fit`` (the same step, now read from the cache): "ms/step"
is its wall time over its steps, per-epoch work (shuffling, the loss history) included; "first
fit s" is the wall time of the warm-up call, compilation included.

The script ends with the largest difference between the final parameters of the two runs, and
fails when the processes disagree among themselves or the final losses differ by more than
1e-3 (relative). The parameters are not bitwise those of one process: the gradient of a batch
is summed in two halves, and training amplifies that rounding difference step by step (about
1e-9 after 10 steps, 1e-4 to 1e-2 after a few hundred; one process with two devices gives
exactly the two-process result, so the difference is data parallelism's, not the processes').

    python benchmarks/bench_multiprocess.py [--processes 2] [--examples 12000] [--epochs 2]

Figures and the machine they came from: benchmarks/README.md, "Multiple processes".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

from _args import positive


def worker(options):
    """One process of a run (or the only one): train, time, write params and timings."""
    from cnnlib import distributed

    distributed.initialize(timeout=60)  # does nothing when not started by cnnlib.launch
    import jax
    import optax

    cache = os.path.join(options.out, f"cache{jax.process_index()}")  # compile once, not twice
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)

    from cnnlib import fashion_mnist, to_float
    from cnnlib.layers import init_params
    from cnnlib.models import cnn
    from cnnlib.train import fit

    (x, y), _ = fashion_mnist()
    x, y = to_float(x[: options.examples]), y[: options.examples]
    model = cnn((16, 32))
    _, params = init_params(model, jax.random.key(0), (-1, 28, 28, 1))
    seconds = []
    for epochs in (1, options.epochs):  # warm-up (compiles), then the timed run
        start = time.perf_counter()
        trained, history = fit(model.apply, params, optax.adam(1e-3), (x, y), epochs=epochs,
                               batch_size=options.batch_size, key=jax.random.key(1),
                               progress=False)
        jax.block_until_ready(trained)
        seconds.append(time.perf_counter() - start)
    steps = len(x) // options.batch_size
    result = dict(processes=jax.process_count(), devices=jax.device_count(), steps=steps,
                  first_s=seconds[0], fit_s=seconds[1], loss=history["loss"][-1],
                  ms_per_step=1e3 * seconds[1] / (steps * options.epochs))
    out = os.path.join(options.out, f"process{jax.process_index()}")
    np.savez(out + ".npz", *[np.asarray(leaf) for leaf in jax.tree.leaves(trained)])
    with open(out + ".json", "w") as f:
        json.dump(result, f)


def run(command, folder, timeout):
    os.makedirs(folder)
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    env.pop("XLA_FLAGS", None)  # one CPU device per process
    done = subprocess.run(command + ["--out", folder], env=env, timeout=timeout + 60,
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"bench_multiprocess: {' '.join(command)} failed ({done.returncode}):\n"
                 f"{(done.stdout + done.stderr)[-3000:]}")
    names = sorted(name for name in os.listdir(folder) if name.endswith(".json"))
    results = [json.load(open(os.path.join(folder, name))) for name in names]
    params = [list(np.load(os.path.join(folder, name[:-5] + ".npz")).values()) for name in names]
    return results, params


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=positive, default=2)
    parser.add_argument("--examples", type=positive, default=12_000)
    parser.add_argument("--epochs", type=positive, default=2)
    parser.add_argument("--batch-size", type=positive, default=128)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        return worker(options)
    here = os.path.abspath(__file__)
    flags = ["--examples", str(options.examples), "--epochs", str(options.epochs),
             "--batch-size", str(options.batch_size), "--worker"]
    with tempfile.TemporaryDirectory() as tmp:
        one, one_params = run([sys.executable, here, *flags], os.path.join(tmp, "1"),
                              options.timeout)
        many, many_params = run([sys.executable, "-m", "cnnlib.launch", "-n",
                                 str(options.processes), "--timeout", str(options.timeout), here,
                                 *flags], os.path.join(tmp, "n"), options.timeout)
    cpus = os.cpu_count()
    print(f"Machine: {platform.machine()}, {cpus} CPU cores, Python {platform.python_version()}; "
          f"load average (1 min) at the end: {os.getloadavg()[0]:.1f}")
    print(f"{options.examples} images, batch {options.batch_size}, {options.epochs} epochs "
          f"({one[0]['steps']} steps each)\n")
    print("| processes | devices | ms/step | steps/s | fit s | first fit s | final loss |")
    print("|----------:|--------:|--------:|--------:|------:|------------:|-----------:|")
    for result in (one[0], many[0]):
        print(f"| {result['processes']:9d} | {result['devices']:7d} | "
              f"{result['ms_per_step']:7.1f} | {1e3 / result['ms_per_step']:7.1f} | "
              f"{result['fit_s']:5.1f} | {result['first_s']:11.1f} | {result['loss']:10.4f} |")
    speedup = one[0]["ms_per_step"] / many[0]["ms_per_step"]
    print(f"\nspeed-up of {options.processes} processes over 1: {speedup:.2f}x")
    diff = max(float(np.max(np.abs(a - b))) for run_params in many_params
               for a, b in zip(run_params, one_params[0]))
    same = all(np.array_equal(a, b) for a, b in zip(*many_params[:2])) if len(many) > 1 else True
    print(f"final params, {options.processes} processes vs 1: largest difference {diff:.2e}; "
          f"identical in every process: {'yes' if same else 'no'}")
    gap = abs(many[0]["loss"] - one[0]["loss"]) / abs(one[0]["loss"])
    print(f"final training loss, relative difference: {gap:.1e}")
    if gap > 1e-3 or not same:
        sys.exit("bench_multiprocess: the runs disagree")


if __name__ == "__main__":
    main()
