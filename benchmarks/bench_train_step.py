"""One LeNet-5 training step (28 x 28 x 1, batch 128, Adam): cnnlib vs raw lax vs PyTorch eager.

The same model three ways, timed in one process: median of `--repeats` steps each per round,
every step ended with `block_until_ready` (JAX) or a finished backward and optimizer step
(PyTorch, synchronous on CPU). cnnlib and raw lax are called step by step in turn (so
background load hits both alike); PyTorch runs in its own block after them in each round (its
OpenMP threads spin after each call and would slow the next JAX step). Each contender runs its
own state forward from step to step, as in training. Wall time and process CPU time are both
reported: on a shared machine CPU time is the steadier of the two.

- cnnlib: `models.lenet5()` and `train.make_train_step(model.apply, optax.adam(1e-3))`;
- raw lax: the same network written with `lax.conv_general_dilated`, `lax.reduce_window` and
  matmuls, the same loss and the same optax Adam, under `jax.jit`;
- PyTorch eager: `torch.nn` with `torch.optim.Adam`, if torch is importable (it is not a
  dependency of cnnlib; install it for measuring only).

Before timing, one step of cnnlib and raw lax from the same parameters and batch is compared
(they must agree to float32 rounding), so the two time the same computation.

    python benchmarks/bench_train_step.py [--repeats 200] [--rounds 3]
    python benchmarks/bench_train_step.py --profile   # where the time goes, piece by piece

`--profile` times the convolutions of the step (forward, input gradient, weight gradient) and
the first pooling one by one, each jitted on its own, beside the same operations in PyTorch.

Figures and the machine they came from: benchmarks/README.md, "Training step".
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from _args import positive
from cnnlib import conv2d, max_pool, models, train
from cnnlib.layers import init_params

BATCH, NUM_CLASSES = 128, 10
NHWC = ("NHWC", "HWIO", "NHWC")


def raw_lax_apply(p, x):
    """LeNet-5 in raw lax, on cnnlib's parameter dict (the same keys and shapes)."""

    def conv(x, layer, padding):
        y = lax.conv_general_dilated(x, p[layer]["w"], (1, 1), padding, dimension_numbers=NHWC)
        return y + p[layer]["b"]

    def pool(x):
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

    x = pool(jax.nn.relu(conv(x, "0_conv", "SAME")))  # (N, 14, 14, 6)
    x = pool(jax.nn.relu(conv(x, "3_conv", "VALID")))  # (N, 5, 5, 16)
    x = x.reshape(x.shape[0], -1)  # (N, 400)
    x = jax.nn.relu(x @ p["7_dense"]["w"] + p["7_dense"]["b"])
    x = jax.nn.relu(x @ p["9_dense"]["w"] + p["9_dense"]["b"])
    return x @ p["11_dense"]["w"] + p["11_dense"]["b"]


def raw_lax_step(optimizer):
    def loss_fn(p, x, y):
        log_p = jax.nn.log_softmax(raw_lax_apply(p, x))
        return -jnp.mean(jnp.take_along_axis(log_p, y[:, None], axis=1))

    @jax.jit
    def step(p, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss

    return step


def jax_runner(step, params, optimizer, x, y):
    state = [params, optimizer.init(params)]

    def run():
        out = step(state[0], state[1], x, y)
        state[0], state[1] = out[0], out[1]
        jax.block_until_ready(out)

    return run


def torch_runner(x, y, threads=None):
    """A step of the same LeNet-5 in PyTorch eager; None (with a note) when torch is missing."""
    try:
        import torch
    except ImportError:
        return None, "torch is not installed: PyTorch eager not measured (pip install torch)"
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(6, 16, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(400, 120), torch.nn.ReLU(), torch.nn.Linear(120, 84), torch.nn.ReLU(),
        torch.nn.Linear(84, NUM_CLASSES),
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    xt = torch.from_numpy(np.array(x).transpose(0, 3, 1, 2).copy())  # NCHW, writable
    yt = torch.from_numpy(np.asarray(y).astype(np.int64))

    def run():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(xt), yt)
        loss.backward()
        optimizer.step()

    note = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    return run, note


def time_rounds(runners, repeats, warmup=10):
    """Median wall and process-CPU ms per call of each runner, in one round.

    The JAX runners are called in turn, step by step, so background load hits them alike.
    PyTorch is timed in its own block after them: its OpenMP threads keep spinning for a
    while after each call and would slow down whichever JAX step came next.
    CPU time (all threads of this process) is less sensitive than wall time to other
    processes on a shared machine; wall time is what a user waits for.
    """
    wall = {name: [] for name in runners}
    cpu = {name: [] for name in runners}

    def timed(name):
        start, start_cpu = time.perf_counter(), time.process_time()
        runners[name]()
        wall[name].append(time.perf_counter() - start)
        cpu[name].append(time.process_time() - start_cpu)

    jax_names = [name for name in runners if name != "torch eager"]
    for name in runners:
        for _ in range(warmup):
            runners[name]()
    for _ in range(repeats):
        for name in jax_names:
            timed(name)
    if "torch eager" in runners:
        for _ in range(warmup):
            runners["torch eager"]()
        for _ in range(repeats):
            timed("torch eager")
    return ({name: 1e3 * statistics.median(t) for name, t in wall.items()},
            {name: 1e3 * statistics.median(t) for name, t in cpu.items()})


def profile(params, x, y, repeats):
    """Time the pieces of the LeNet-5 step one by one, in cnnlib (XLA) and in PyTorch.

    Each piece is jitted on its own (inside the whole step XLA fuses and overlaps them, so the
    pieces do not add up exactly to the step); the PyTorch column runs the same operation with
    torch.nn.functional and torch.autograd.grad. Returns the rows printed by main.
    """
    w1, w2 = params["0_conv"]["w"], params["3_conv"]["w"]
    key = jax.random.key(1)
    h1 = jax.random.uniform(key, (BATCH, 14, 14, 6))  # input of conv 2
    g1 = jax.random.normal(key, (BATCH, 28, 28, 6))  # gradient at the output of conv 1
    g2 = jax.random.normal(key, (BATCH, 10, 10, 16))  # gradient at the output of conv 2
    a1 = jax.random.normal(key, (BATCH, 28, 28, 6))  # input of relu + pool 1
    conv1 = lambda w, x: conv2d(x, w, padding="SAME")  # noqa: E731
    conv2 = lambda w, x: conv2d(x, w)  # noqa: E731
    relu_pool = lambda a: max_pool(jax.nn.relu(a), 2)  # noqa: E731
    pieces = {
        "conv 1 forward (1 -> 6 channels, 5x5, 28x28)": (conv1, (w1, x)),
        "conv 1 weight gradient": (lambda w, x, g: jax.vjp(lambda w: conv1(w, x), w)[1](g),
                                   (w1, x, g1)),
        "conv 2 forward (6 -> 16 channels, 5x5, 14x14)": (conv2, (w2, h1)),
        "conv 2 input gradient": (lambda w, h, g: jax.vjp(lambda h: conv2(w, h), h)[1](g),
                                  (w2, h1, g2)),
        "conv 2 weight gradient": (lambda w, h, g: jax.vjp(lambda w: conv2(w, h), w)[1](g),
                                   (w2, h1, g2)),
        "relu + max pool 1, forward and gradient": (
            lambda a, g: jax.vjp(relu_pool, a)[1](g), (a1, jax.random.normal(key, (BATCH, 14, 14, 6)))),
    }
    times = {}
    for name, (fn, args) in pieces.items():
        run = jax.jit(fn)
        times[name] = time_call(lambda: jax.block_until_ready(run(*args)), repeats)

    torch_times = {}
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        torch = None
    if torch is not None:
        t = lambda a: torch.from_numpy(np.array(a))  # noqa: E731
        tw1, tw2 = (t(w).permute(3, 2, 0, 1).contiguous().requires_grad_() for w in (w1, w2))
        tx = t(x).permute(0, 3, 1, 2).contiguous()
        th1 = t(h1).permute(0, 3, 1, 2).contiguous().requires_grad_()
        tg1, tg2 = (t(g).permute(0, 3, 1, 2).contiguous() for g in (g1, g2))
        ta1 = t(a1).permute(0, 3, 1, 2).contiguous().requires_grad_()
        tgp = torch.randn(BATCH, 6, 14, 14)

        def grad(out, wrt, g):
            # Backward only, like the jitted vjp on the left (whose unused forward XLA drops):
            # the graph is built once and kept.
            return lambda: torch.autograd.grad(out, wrt, g, retain_graph=True)

        torch_pieces = {
            "conv 1 forward (1 -> 6 channels, 5x5, 28x28)":
                lambda: F.conv2d(tx, tw1.detach(), padding=2),
            "conv 1 weight gradient": grad(F.conv2d(tx, tw1, padding=2), tw1, tg1),
            "conv 2 forward (6 -> 16 channels, 5x5, 14x14)":
                lambda: F.conv2d(th1.detach(), tw2.detach()),
            "conv 2 input gradient": grad(F.conv2d(th1, tw2.detach()), th1, tg2),
            "conv 2 weight gradient": grad(F.conv2d(th1.detach(), tw2), tw2, tg2),
            "relu + max pool 1, forward and gradient":
                lambda: torch.autograd.grad(F.max_pool2d(F.relu(ta1), 2), ta1, tgp),
        }
        for name, fn in torch_pieces.items():
            torch_times[name] = time_call(fn, repeats)
    return times, torch_times


def time_call(fn, repeats, warmup=5):
    """Median wall ms of `repeats` calls of fn()."""
    for _ in range(warmup):
        fn()
    wall = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        wall.append(time.perf_counter() - start)
    return 1e3 * statistics.median(wall)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=positive, default=200,
                        help="steps per contender per round")
    parser.add_argument("--rounds", type=positive, default=3, help="independent rounds (medians)")
    parser.add_argument("--torch-threads", type=positive, default=None,
                        help="torch.set_num_threads (default: torch's own choice)")
    parser.add_argument("--profile", action="store_true",
                        help="time the pieces of the step one by one instead")
    args = parser.parse_args()

    model = models.lenet5()
    _, params = init_params(model, jax.random.key(0), (-1, 28, 28, 1))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((BATCH, 28, 28, 1), dtype=np.float32))
    y = jnp.asarray(rng.integers(0, NUM_CLASSES, BATCH).astype(np.int32))
    optimizer = optax.adam(1e-3)
    ours, raw = train.make_train_step(model.apply, optimizer), raw_lax_step(optimizer)

    # The two JAX steps compute the same thing: one step from the same start agrees.
    state = optimizer.init(params)
    p_ours, _, loss_ours, _ = ours(params, state, x, y)
    p_raw, _, loss_raw = raw(params, state, x, y)
    diff = max(float(jnp.max(jnp.abs(a - b)))
               for a, b in zip(jax.tree.leaves(p_ours), jax.tree.leaves(p_raw)))
    print(f"one step, cnnlib vs raw lax: loss {float(loss_ours):.6f} vs {float(loss_raw):.6f}, "
          f"largest parameter difference {diff:.2e}")
    if diff > 1e-4:
        raise SystemExit("cnnlib and raw lax disagree: the timings would not be comparable")
    if args.profile:
        times, torch_times = profile(params, x, y, args.repeats)
        print(f"\nPieces of the LeNet-5 step, batch {BATCH}, each timed on its own: median ms "
              f"of {args.repeats} calls")
        print(f"| {'piece':<46} | cnnlib (XLA) | torch |")
        print(f"|{'-' * 48}|-------------:|------:|")
        for name, ms in times.items():
            other = f"{torch_times[name]:.2f}" if name in torch_times else "-"
            print(f"| {name:<46} | {ms:>12.2f} | {other:>5} |")
        return

    runners = {"cnnlib": jax_runner(ours, params, optimizer, x, y),
               "raw lax": jax_runner(raw, params, optimizer, x, y)}
    torch_run, torch_note = torch_runner(x, y, args.torch_threads)
    if torch_run is not None:
        runners["torch eager"] = torch_run
    print(f"jax {jax.__version__}, {jax.default_backend()} backend, {os.cpu_count()} CPU cores "
          f"({platform.machine()}); {torch_note}")

    rounds = [time_rounds(runners, args.repeats) for _ in range(args.rounds)]
    names = list(runners)
    print(f"\nLeNet-5 train step, batch {BATCH}, Adam: ms per step, median of {args.repeats} "
          f"steps per round; wall time, then process CPU time (all threads)")
    print("| round | " + " | ".join(f"{n + ' wall':>16}" for n in names) + " | "
          + " | ".join(f"{n + ' CPU':>15}" for n in names) + " |")
    print("|------:|" + "|".join("-" * 17 + ":" for _ in names) + "|"
          + "|".join("-" * 16 + ":" for _ in names) + "|")
    for i, (wall, cpu) in enumerate(rounds, 1):
        print(f"| {i:>5} | " + " | ".join(f"{wall[n]:>16.2f}" for n in names) + " | "
              + " | ".join(f"{cpu[n]:>15.2f}" for n in names) + " |")
    # Load from other processes only ever adds time, so the fastest round is the best estimate
    # of a quiet machine; the median round is shown too.
    best = {n: min(r[0][n] for r in rounds) for n in names}
    best_cpu = {n: min(r[1][n] for r in rounds) for n in names}
    print("|  best | " + " | ".join(f"{best[n]:>16.2f}" for n in names) + " | "
          + " | ".join(f"{best_cpu[n]:>15.2f}" for n in names) + " |")
    median = {n: statistics.median(r[0][n] for r in rounds) for n in names}
    print(f"\ncnnlib / raw lax, best rounds: {best['cnnlib'] / best['raw lax']:.2f} (wall), "
          f"{best_cpu['cnnlib'] / best_cpu['raw lax']:.2f} (CPU); median rounds: "
          f"{median['cnnlib'] / median['raw lax']:.2f} (wall)")
    if "torch eager" in best:
        verdict = "met" if best["cnnlib"] <= best["torch eager"] else "NOT met"
        print(f"cnnlib / torch eager, best rounds: {best['cnnlib'] / best['torch eager']:.2f} "
              f"(wall), {best_cpu['cnnlib'] / best_cpu['torch eager']:.2f} (CPU); goal cnnlib "
              f"<= torch eager in wall time: {verdict}")
    else:
        print(f"Note: {torch_note}.")


if __name__ == "__main__":
    main()
