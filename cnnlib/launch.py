"""Run one script as N local processes of one JAX job: ``python -m cnnlib.launch -n 2 script.py``.

Introduced in chapter 08, notebooks/08-performance-and-scaling.ipynb (data parallelism).

Each process gets ``CNNLIB_COORDINATOR=127.0.0.1:PORT`` (a free port), ``CNNLIB_NUM_PROCESSES``
and its own ``CNNLIB_PROCESS_ID``, which `cnnlib.distributed.initialize` reads. Their output is
forwarded line by line, prefixed with the process id (``[0] ...``). When one process fails the
others are stopped (their whole process groups: SIGTERM, then SIGKILL after a grace period) and
the launcher exits with the first failing process's status; after ``--timeout`` seconds all are
stopped and it exits with 124.

Usage::

    python -m cnnlib.launch -n 2 [--timeout 600] script.py [script arguments]
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Sequence, TextIO

from cnnlib.distributed import COORDINATOR, NUM_PROCESSES, PROCESS_ID

TIMED_OUT = 124  # the exit status of coreutils' timeout


def launch(
    script: str,
    args: Sequence[str] = (),
    num_processes: int = 2,
    *,
    timeout: float = 600.0,
    grace: float = 5.0,
    out: TextIO | None = None,
) -> int:
    """Run ``python script args`` as `num_processes` processes of one job; return an exit status.

    Args:
        script: path of the Python script; it calls `cnnlib.distributed.initialize()` first.
        args: the script's arguments, the same for every process.
        num_processes: how many processes, >= 1.
        timeout: seconds after which every process is stopped, > 0.
        grace: seconds between SIGTERM and SIGKILL when stopping processes, >= 0.
        out: where the prefixed output goes (default sys.stdout); the launcher's own messages
            go to sys.stderr.

    Returns:
        0 when every process exits with 0; else the status of the first process that failed
        (128 + n for a process killed by signal n), or 124 when `timeout` ran out.

    Example:
        >>> launch("train.py", ["--epochs", "2"], num_processes=2, timeout=300)
        0

    Introduced in chapter 08, notebooks/08-performance-and-scaling.ipynb.
    """
    _check(script, num_processes, timeout, grace)
    out = sys.stdout if out is None else out
    address = f"127.0.0.1:{_free_port()}"
    procs, lock, exits = [], threading.Lock(), queue.Queue()
    threads = []
    try:
        for i in range(num_processes):
            env = {**os.environ, COORDINATOR: address, NUM_PROCESSES: str(num_processes),
                   PROCESS_ID: str(i), "PYTHONUNBUFFERED": "1"}
            proc = subprocess.Popen(
                [sys.executable, script, *args], env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
            procs.append(proc)
            threads.append(threading.Thread(target=_forward, args=(proc, i, out, lock),
                                            daemon=True))
            threading.Thread(target=lambda p=proc, i=i: exits.put((i, p.wait())),
                             daemon=True).start()
            threads[-1].start()
        status = _wait(exits, num_processes, time.monotonic() + timeout, timeout)
    finally:
        _stop(procs, grace)
        for thread in threads:
            thread.join(timeout=5.0)  # the rest of the output
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m cnnlib.launch -n 2 [--timeout S] script.py [args]``."""
    parser = argparse.ArgumentParser(
        prog="python -m cnnlib.launch",
        description="Run a script as N local processes of one JAX job (cnnlib.distributed).")
    parser.add_argument("-n", "--num-processes", type=int, default=2,
                        help="number of processes (default 2)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds before every process is stopped (default 600)")
    parser.add_argument("--grace", type=float, default=5.0,
                        help="seconds between SIGTERM and SIGKILL when stopping (default 5)")
    parser.add_argument("script", help="the Python script to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the script's arguments")
    options = parser.parse_args(argv)
    try:
        return launch(options.script, options.args, options.num_processes,
                      timeout=options.timeout, grace=options.grace)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the processes were stopped on the way out
        return 130


# --- Helpers ----------------------------------------------------------------------------------


def _check(script, num_processes, timeout, grace):
    if isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1:
        raise ValueError(
            f"launch: `num_processes` must be an int >= 1; got {num_processes!r}. Use -n 2."
        )
    if not os.path.isfile(script):
        raise ValueError(
            f"launch: `script` {script!r} is not a file. Give the path of a Python script, "
            f"e.g. python -m cnnlib.launch -n 2 train.py."
        )
    for name, value, low in (("timeout", timeout, "> 0"), ("grace", grace, ">= 0")):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not (value > 0 if low == "> 0" else value >= 0):
            raise ValueError(f"launch: `{name}` must be seconds {low}; got {value!r}.")


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent():
    """In the child (Linux): receive SIGTERM when the launcher dies, even by SIGKILL."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _forward(proc, i, out, lock):
    for line in iter(proc.stdout.readline, b""):
        with lock:
            out.write(f"[{i}] {line.decode(errors='replace').rstrip()}\n")
            out.flush()


def _wait(exits, n, deadline, timeout):
    """The first non-zero status as processes end, 0 when all succeed, 124 at the deadline."""
    for _ in range(n):
        try:
            i, code = exits.get(timeout=max(deadline - time.monotonic(), 0.0))
        except queue.Empty:
            print(f"launch: the processes ran longer than --timeout {timeout:g} s; stopping "
                  f"them all.", file=sys.stderr)
            return TIMED_OUT
        if code != 0:
            status = 128 - code if code < 0 else code
            print(f"launch: process {i} exited with status {status}; stopping the others.",
                  file=sys.stderr)
            return status
    return 0


def _stop(procs, grace):
    """SIGTERM every process group, SIGKILL what is left after `grace` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in procs:
            try:
                os.killpg(proc.pid, sig)  # the group: the script and anything it started
            except (ProcessLookupError, PermissionError):
                pass
        end = time.monotonic() + grace
        for proc in procs:
            try:
                proc.wait(timeout=max(end - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                pass


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped: clean up the children
    sys.exit(main())
