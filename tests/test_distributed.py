"""cnnlib.distributed and cnnlib.launch: two processes on loopback train as one process does
(params, BatchNorm state, history, evaluate, a checkpoint written once), a failing process stops
the others, the launcher's output, timeout and errors, and the mismatch and connection errors.

Every multi-process test runs `python -m cnnlib.launch` in a subprocess with a --timeout, under a
subprocess timeout that is longer still, so nothing outlives a test.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

from cnnlib import distributed, launch, train

ROOT = Path(__file__).resolve().parents[1]

# The problem both sides solve: the two-process workers and the single-process reference.
SETUP = textwrap.dedent("""
    import jax, numpy as np, optax
    from cnnlib.layers import (BatchNorm, Conv, Dense, Flatten, MaxPool, Relu, init_params,
                               init_state, serial)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    x_val, y_val = x[:37], y[:37]  # 37: evaluate's batches of 10 become 3 full and 1 padded
    plain = serial(Conv(4, 3, padding="SAME"), Relu(), MaxPool(2), Flatten(), Dense(3))
    _, plain_params = init_params(plain, jax.random.key(0), (-1, 8, 8, 1))
    # No conv bias before BatchNorm: its gradient is zero up to rounding, which Adam would
    # turn into full-size steps that differ between runs.
    bn = serial(Conv(4, 3, padding="SAME", use_bias=False), BatchNorm(), Relu(), MaxPool(2),
                Flatten(), Dense(3))
    _, bn_params = init_params(bn, jax.random.key(0), (-1, 8, 8, 1))
    bn_state = init_state(bn, (-1, 8, 8, 1))
    kw = dict(epochs=3, batch_size=16, key=jax.random.key(1), progress=False)
""")

# initialize() comes first, before any JAX computation (SETUP's init_params).
INITIALIZE = "from cnnlib import distributed\nassert distributed.initialize(timeout=30)\n"

WORKER = INITIALIZE + SETUP + textwrap.dedent("""
    import json, os, sys
    from unittest import mock
    from cnnlib import checkpoint, train

    out, pid = sys.argv[1], jax.process_index()
    p, h = train.fit(plain.apply, plain_params, optax.adam(1e-2), (x, y),
                     validation=(x_val, y_val), **kw)
    loss, acc = train.evaluate(plain.apply, p, x_val, y_val, batch_size=10)
    logits = train.predict(plain.apply, p, x_val[pid:], batch_size=7)  # each its own examples
    bp, bs, bh = train.fit(bn.apply, bn_params, optax.adam(1e-2), (x, y), state=bn_state,
                           validation=(x_val, y_val), **kw)
    with mock.patch("os.replace", wraps=os.replace) as replace:
        checkpoint.save_params(os.path.join(out, "plain.npz"), p)
    loaded = checkpoint.load_params(os.path.join(out, "plain.npz"), model=plain,
                                    in_shape=(-1, 8, 8, 1))
    leaves = lambda tree: [np.asarray(a) for a in jax.tree.leaves(tree)]
    np.savez(os.path.join(out, f"trained{pid}.npz"), *leaves((p, bp, bs)))
    with open(os.path.join(out, f"result{pid}.json"), "w") as f:
        json.dump(dict(history=h, bn_history=bh, evaluate=[loss, acc], writes=replace.call_count,
                       predict=np.asarray(logits).tolist(),
                       loaded=all(np.array_equal(a, b) for a, b in zip(leaves(loaded),
                                                                          leaves(p)))), f)
""")


def run_launcher(tmp_path, script, *args, n=2, timeout=60):
    """Run ``python -m cnnlib.launch`` on `script`; (exit status, stdout, stderr, seconds)."""
    path = tmp_path / "worker.py"
    path.write_text(script)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)  # one CPU device per process
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "cnnlib.launch", "-n", str(n), "--timeout", str(timeout),
         "--grace", "2", str(path), *args],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout + 30)
    return out.returncode, out.stdout, out.stderr, time.monotonic() - start


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- Two processes train as one ------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """One 2-process run of WORKER, and the same training in this (single) process."""
    tmp = tmp_path_factory.mktemp("two_processes")
    status, stdout, stderr, seconds = run_launcher(tmp, WORKER, str(tmp))
    assert status == 0, (stdout + stderr)[-4000:]
    runs = [(json.loads((tmp / f"result{i}.json").read_text()),
             list(np.load(tmp / f"trained{i}.npz").values())) for i in range(2)]
    ns: dict = {}
    exec(SETUP, ns)
    p, h = train.fit(ns["plain"].apply, ns["plain_params"], optax.adam(1e-2), (ns["x"], ns["y"]),
                     validation=(ns["x_val"], ns["y_val"]), **ns["kw"])
    bp, bs, bh = train.fit(ns["bn"].apply, ns["bn_params"], optax.adam(1e-2), (ns["x"], ns["y"]),
                           state=ns["bn_state"], validation=(ns["x_val"], ns["y_val"]),
                           **ns["kw"])
    single = dict(history=h, bn_history=bh,
                  evaluate=train.evaluate(ns["plain"].apply, p, ns["x_val"], ns["y_val"], 10),
                  predict=np.asarray(train.predict(ns["plain"].apply, p, ns["x_val"])),
                  leaves=[np.asarray(a) for a in jax.tree.leaves((p, bp, bs))],
                  initial=[np.asarray(a) for a in jax.tree.leaves((ns["plain_params"],
                                                                   ns["bn_params"]))])
    return runs, single, seconds


def test_two_processes_end_with_the_params_and_state_of_one(two_processes):
    runs, single, _ = two_processes
    n_plain = 4  # conv w, b and dense w, b; then the BatchNorm model's params and state
    for _, leaves in runs:
        assert len(leaves) == len(single["leaves"])
        for got, want in zip(leaves, single["leaves"]):
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    # Training moved the parameters, and both processes hold the very same values.
    assert max(np.abs(a - b).max() for a, b in zip(runs[0][1][:n_plain], single["initial"])) > 1e-3
    assert all(np.array_equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


def test_two_processes_report_the_global_history_and_evaluation(two_processes):
    runs, single, _ = two_processes
    for result, _ in runs:
        for name in ("history", "bn_history"):  # validation: evaluate, BatchNorm state too
            assert len(single[name]) == 4 and result[name].keys() == single[name].keys()
            for key in single[name]:
                np.testing.assert_allclose(result[name][key], single[name][key], atol=1e-5)
        # Global: the loss and accuracy of all 37 examples, not of one process's share.
        np.testing.assert_allclose(result["evaluate"][0], single["evaluate"][0], rtol=1e-5)
        assert result["evaluate"][1] == single["evaluate"][1]
    assert runs[0][0]["history"] == runs[1][0]["history"]
    # predict is local: each process predicts its own examples, with its copy of the params.
    for pid, (result, _) in enumerate(runs):
        got = np.array(result["predict"])
        assert got.shape == (37 - pid, 3)
        np.testing.assert_allclose(got, single["predict"][pid:], atol=1e-5)


def test_a_checkpoint_is_written_once_and_loads_everywhere(two_processes):
    runs, _, seconds = two_processes
    assert [result["writes"] for result, _ in runs] == [1, 0]  # process 0 only
    assert all(result["loaded"] for result, _ in runs)
    assert seconds < 60


# --- Failures stop the job -----------------------------------------------------------------------

FAILING = textwrap.dedent("""
    import os, sys
    from cnnlib import distributed
    distributed.initialize(timeout=30)
    import jax
    from jax.experimental import multihost_utils
    with open(os.path.join(sys.argv[1], f"pid{jax.process_index()}"), "w") as f:
        f.write(str(os.getpid()))
    multihost_utils.sync_global_devices("both started")
    if jax.process_index() == 1:
        raise RuntimeError("process 1 fails on purpose")
    multihost_utils.sync_global_devices("never reached by process 1")  # waits for process 1
""")


def assert_gone(pid, wait=5.0):
    """The process has ended (a zombie not yet reaped by init counts as ended)."""
    end = time.monotonic() + wait
    while time.monotonic() < end:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return
        if stat.rpartition(")")[2].split()[0] in ("Z", "X"):  # the state field
            return
        time.sleep(0.1)
    raise AssertionError(f"process {pid} still runs: {stat}")


def test_a_failing_process_stops_the_other_and_the_launcher_fails(tmp_path):
    status, stdout, stderr, seconds = run_launcher(tmp_path, FAILING, str(tmp_path), timeout=60)
    assert status == 1, stdout + stderr
    assert "[1] RuntimeError: process 1 fails on purpose" in stdout
    # Process 1 raises; process 0 may learn of it from the coordinator and exit first (status 1
    # too), so the launcher may name either: the first to end with an error.
    assert re.search(r"launch: process [01] exited with status 1; stopping the others\.", stderr)
    assert seconds < 45  # not the 60 s timeout, nor JAX's 5-minute shutdown barrier
    for i in range(2):
        assert_gone(int((tmp_path / f"pid{i}").read_text()))


SLEEPERS = textwrap.dedent("""
    import os, subprocess, sys, time
    i = int(os.environ["CNNLIB_PROCESS_ID"])
    print(os.environ["CNNLIB_COORDINATOR"], os.environ["CNNLIB_NUM_PROCESSES"], i, flush=True)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(os.path.join(sys.argv[1], f"pids{i}"), "w") as f:
        f.write(f"{os.getpid()} {child.pid}")
    if i == 1 and sys.argv[2] == "fail":
        time.sleep(1)
        sys.exit(3)
    time.sleep(600)
""")


def test_the_launcher_prefixes_output_and_stops_every_process_group(tmp_path):
    status, stdout, stderr, seconds = run_launcher(tmp_path, SLEEPERS, str(tmp_path), "fail",
                                                   n=3, timeout=60)
    assert status == 3, stdout + stderr
    lines = sorted(line for line in stdout.splitlines() if line.startswith("["))
    address = lines[0].split()[1]
    assert address.startswith("127.0.0.1:") and int(address.rpartition(":")[2]) > 0
    assert lines == [f"[{i}] {address} 3 {i}" for i in range(3)]
    assert "launch: process 1 exited with status 3; stopping the others." in stderr
    assert seconds < 30
    for i in range(3):  # the scripts and the children they started
        for pid in (tmp_path / f"pids{i}").read_text().split():
            assert_gone(int(pid))


def test_the_launcher_stops_everything_after_its_timeout(tmp_path):
    status, _, stderr, seconds = run_launcher(tmp_path, SLEEPERS, str(tmp_path), "sleep",
                                              timeout=3)
    assert status == 124
    assert "launch: the processes ran longer than --timeout 3 s; stopping them all." in stderr
    assert seconds < 20
    for i in range(2):
        for pid in (tmp_path / f"pids{i}").read_text().split():
            assert_gone(int(pid))


def test_launcher_errors(tmp_path, capsys):
    script = tmp_path / "s.py"
    script.write_text("")
    with pytest.raises(ValueError, match=r"launch: `script` 'missing\.py' is not a file\. Give "
                       r"the path of a Python script"):
        launch.launch("missing.py")
    with pytest.raises(ValueError, match=r"launch: `num_processes` must be an int >= 1; got 0\. "
                       r"Use -n 2\."):
        launch.launch(str(script), num_processes=0)
    with pytest.raises(ValueError, match=r"launch: `timeout` must be seconds > 0; got 0"):
        launch.launch(str(script), timeout=0)
    with pytest.raises(ValueError, match=r"launch: `grace` must be seconds >= 0; got -1"):
        launch.launch(str(script), grace=-1)
    assert launch.main(["-n", "0", str(script)]) == 2
    assert "launch: `num_processes` must be an int >= 1; got 0" in capsys.readouterr().err


# --- What the processes must agree on ------------------------------------------------------------

MISMATCH = INITIALIZE + SETUP + textwrap.dedent("""
    import json
    from cnnlib import train
    pid = jax.process_index()
    errors = {}
    def attempt(name, call):
        try:
            call()
            errors[name] = "no error"
        except ValueError as error:
            errors[name] = str(error)
    sgd = optax.sgd(0.1)
    attempt("length", lambda: train.fit(plain.apply, plain_params, sgd,
                                        (x[:64 - 2 * pid], y[:64 - 2 * pid]), **kw))
    other = init_params(plain, jax.random.key(pid), (-1, 8, 8, 1))[1]
    attempt("params", lambda: train.fit(plain.apply, other, sgd, (x, y), **kw))
    attempt("batch", lambda: train.fit(plain.apply, plain_params, sgd, (x, y),
                                       **{**kw, "batch_size": 15}))
    attempt("evaluate", lambda: train.evaluate(plain.apply, plain_params, x[:9 + pid],
                                               y[:9 + pid]))
    attempt("devices", lambda: train.fit(plain.apply, plain_params, sgd, (x, y),
                                         devices=jax.local_devices(), **kw))
    print(json.dumps(errors))
""")


def test_processes_that_disagree_get_errors_naming_what_differs(tmp_path):
    status, stdout, stderr, _ = run_launcher(tmp_path, MISMATCH, timeout=60)
    assert status == 0, (stdout + stderr)[-4000:]
    reports = [json.loads(line.partition(" ")[2]) for i in range(2)
               for line in stdout.splitlines() if line.startswith(f"[{i}] {{")]
    assert len(reports) == 2
    for i, errors in enumerate(reports):
        assert errors.pop("devices") == (
            f"fit: in a job of 2 processes `devices` must include devices of every process; got "
            f"devices of processes [{i}]. Leave devices=None (all devices of all processes).")
    assert reports[0] == reports[1]  # the same error in every process
    errors = reports[0]
    assert errors["length"] == (
        "fit: the processes disagree on the number of training examples: process 0 has 64, "
        "process 1 has 62. Every process must call fit with the same arguments (data, params, "
        "settings); each feeds its own slice of every batch.")
    assert errors["params"].startswith(
        "fit: the processes disagree on the params (values): process 0 has checksum ")
    assert errors["batch"] == (
        "fit: `batch_size` must be divisible by the number of devices 2 of 2 processes (each "
        "gets an equal share); got 15. Use batch_size=14.")
    assert errors["evaluate"].startswith(
        "evaluate: the processes disagree on the number of examples: process 0 has 9, process "
        "1 has 10.")


# --- initialize ----------------------------------------------------------------------------------


def test_initialize_does_nothing_without_settings_and_checks_them(monkeypatch):
    for name in (distributed.COORDINATOR, distributed.NUM_PROCESSES, distributed.PROCESS_ID):
        monkeypatch.delenv(name, raising=False)
    assert distributed.initialize() is False
    assert distributed.initialize("127.0.0.1:1234", 1, 0) is False  # one process: nothing to do
    monkeypatch.setenv(distributed.COORDINATOR, "127.0.0.1:1234")
    with pytest.raises(ValueError, match=r"initialize: set all of CNNLIB_COORDINATOR, "
                       r"CNNLIB_NUM_PROCESSES and CNNLIB_PROCESS_ID .*; CNNLIB_NUM_PROCESSES, "
                       r"CNNLIB_PROCESS_ID missing"):
        distributed.initialize()
    with pytest.raises(ValueError, match=r"initialize: the coordinator address must be "
                       r"host:port, e\.g\. 10\.0\.0\.1:1234; got 'localhost'"):
        distributed.initialize("localhost", 2, 0)
    with pytest.raises(ValueError, match=r"`process_id` must lie in 0\.\.num_processes - 1 .*got "
                       r"process_id=2, num_processes=2"):
        distributed.initialize(num_processes=2, process_id=2)
    with pytest.raises(ValueError, match=r"initialize: `num_processes` must be an int; got 'two'"):
        distributed.initialize(num_processes="two", process_id=0)
    with pytest.raises(ValueError, match=r"initialize: `timeout` must be seconds > 0; got 0"):
        distributed.initialize(num_processes=2, process_id=0, timeout=0)


def test_an_unreachable_coordinator_is_a_timeout_error_not_a_hang():
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=rf"initialize: process 1 of 2 cannot reach the "
                       rf"coordinator at {address} within timeout=1 s\. Start process 0"):
        distributed.initialize(address, 2, 1, timeout=1)
    assert time.monotonic() - start < 5


def test_a_coordinator_whose_peers_never_come_gives_up_after_its_timeout():
    address = f"127.0.0.1:{free_port()}"
    code = f"from cnnlib import distributed; distributed.initialize({address!r}, 2, 0, timeout=2)"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 1, out.stderr[-3000:]
    assert (f"TimeoutError: initialize: process 0 of 2 connected to the coordinator at "
            f"{address}, but not all 2 processes joined within timeout=2 s.") in out.stderr
    assert time.monotonic() - start < 30
