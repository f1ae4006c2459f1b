"""Several processes, one training run: joining a JAX job, and what `fit` needs to feed it.

Introduced in chapter 08, notebooks/08-performance-and-scaling.ipynb (data parallelism).

A script becomes multi-process by calling `initialize()` at its top, before any JAX
computation; nothing else changes. Every process then runs the same script on the same data:
`fit` and `evaluate` build each global batch from per-process slices
(`jax.make_array_from_process_local_data`), jit averages the gradients across the devices of
all processes, and every process ends with the same parameters. Without the variables below
`initialize()` does nothing and the script runs as one process.

The variables (set by ``python -m cnnlib.launch -n 2 script.py`` on one machine, or by hand on
real hosts):

- ``CNNLIB_COORDINATOR``: ``host:port`` of process 0, which runs the coordinator service.
- ``CNNLIB_NUM_PROCESSES``: how many processes take part.
- ``CNNLIB_PROCESS_ID``: this process's index, 0 .. num_processes - 1.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
import threading
import time
import zlib
from typing import Any, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from cnnlib._validate import _is_int

COORDINATOR = "CNNLIB_COORDINATOR"
NUM_PROCESSES = "CNNLIB_NUM_PROCESSES"
PROCESS_ID = "CNNLIB_PROCESS_ID"


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout: float = 60.0,
) -> bool:
    """Join a multi-process JAX job described by arguments or environment variables.

    Reads ``CNNLIB_COORDINATOR``, ``CNNLIB_NUM_PROCESSES`` and ``CNNLIB_PROCESS_ID`` for the
    arguments not given; when none is set it returns False and does nothing (one process). On
    CPU the collectives go through gloo. A process other than 0 first waits for the
    coordinator's port to open, so an unreachable coordinator is a TimeoutError naming the
    address, not a hang; process 0 waits `timeout` seconds for the others to connect.

    In a multi-process run an uncaught exception ends the process at once (status 1, after the
    traceback), instead of waiting up to five minutes in JAX's shutdown barrier for processes
    that are blocked in a collective; `cnnlib.launch` then stops the others.

    Args:
        coordinator_address: ``"host:port"`` of process 0 (default: ``$CNNLIB_COORDINATOR``).
        num_processes: number of processes, >= 1 (default: ``$CNNLIB_NUM_PROCESSES``).
        process_id: this process's index in 0 .. num_processes - 1 (default:
            ``$CNNLIB_PROCESS_ID``).
        timeout: seconds to wait for the coordinator and the other processes, > 0.

    Returns:
        True when this process joined a job of several processes, False otherwise.

    Raises:
        ValueError: some but not all three settings given, or a malformed one.
        TimeoutError: the coordinator or the other processes did not answer within `timeout`.

    Example:
        >>> import cnnlib.distributed
        >>> cnnlib.distributed.initialize()  # first line of a script run by cnnlib.launch
        True

    Introduced in chapter 08, notebooks/08-performance-and-scaling.ipynb.
    """
    address, n, pid = _settings(coordinator_address, num_processes, process_id, timeout)
    if address is None or n == 1:
        return False
    deadline = time.monotonic() + timeout
    if pid != 0:
        _wait_for_port(address, deadline, n, pid, timeout)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU backend only
    _exit_on_uncaught_exception()
    # jax.distributed.initialize aborts the process (no exception) when it times out: run it
    # in a thread and give up first, with a message, while its own deadline is still ahead.
    done, errors = threading.Event(), []

    def connect():
        try:
            jax.distributed.initialize(address, n, pid, initialization_timeout=int(timeout) + 30)
        except Exception as error:  # re-raised below, in the caller's thread
            errors.append(error)
        finally:
            done.set()

    threading.Thread(target=connect, name="cnnlib-initialize", daemon=True).start()
    if not done.wait(max(deadline - time.monotonic(), 0.0)):
        raise TimeoutError(
            f"initialize: process {pid} of {n} connected to the coordinator at {address}, but "
            f"not all {n} processes joined within timeout={timeout} s. Start every process "
            f"(CNNLIB_PROCESS_ID 0 to {n - 1}) with the same address, or raise `timeout`."
        )
    if errors:
        raise RuntimeError(
            f"initialize: jax.distributed.initialize failed for process {pid} of {n} at "
            f"{address}: {errors[0]} Call initialize() at the top of the script, before any "
            f"JAX computation, and only once."
        ) from errors[0]
    return True


def replicate(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    """Place every leaf of `tree` whole on each device of `sharding` (replicated params).

    One process: ``jax.device_put(tree, sharding)``, exactly. Several: arrays that already
    have the sharding are kept; others are copied from this process's value, which every
    process must hold alike (`check_same` makes sure of it before training).

    Example:
        >>> params = replicate(params, NamedSharding(mesh, PartitionSpec()))

    Introduced in chapter 08, notebooks/08-performance-and-scaling.ipynb.
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(leaf):
        if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
            return leaf
        if _is_key(leaf):  # keys travel as their bits
            return jax.random.wrap_key_data(put(jax.random.key_data(leaf)),
                                            impl=jax.random.key_impl(leaf))
        value = np.asarray(leaf)  # the whole array, the same in every process
        return jax.make_array_from_process_local_data(sharding, value, value.shape)

    return jax.tree.map(put, tree)


def put_batch(arrays: Sequence[np.ndarray], idx: np.ndarray, sharding: Any) -> tuple:
    """The global batch ``(a[idx] for a in arrays)``, split along axis 0 over `sharding`.

    One process: ``jax.device_put`` of the whole batch, exactly. Several: each process reads
    only the rows that land on its own devices (a contiguous slice of `idx` when each
    process's devices sit together in the mesh) and `jax.make_array_from_process_local_data`
    assembles the global array; no process holds another's rows.

    Args:
        arrays: host arrays with the examples along axis 0, the same in every process.
        idx: the batch's indices (B,), the same in every process; B divisible by the devices.
        sharding: a ``NamedSharding(mesh, PartitionSpec("data"))``.

    Returns:
        A tuple of global arrays of shape (B, ...), one per array.

    Example:
        >>> xb, yb = put_batch((x, y), order[:128], NamedSharding(mesh, PartitionSpec("data")))

    Introduced in chapter 08, notebooks/08-performance-and-scaling.ipynb.
    """
    if jax.process_count() == 1:
        return jax.device_put(tuple(a[idx] for a in arrays), sharding)
    rows = idx[_local_rows(sharding, len(idx))]  # this process's share of the batch
    return tuple(
        jax.make_array_from_process_local_data(sharding, a[rows], (len(idx), *a.shape[1:]))
        for a in arrays)


def check_same(where: str, values: dict[str, Any]) -> None:
    """Raise a ValueError naming what differs when the processes disagree on any of `values`.

    Does nothing in a single process. Otherwise each process gathers one small row from every
    process: ints as they are; for any other value (data, params, state, a key) a checksum of
    its shapes and dtypes and one of its bytes. Processes that disagree on the data or the
    model would otherwise train apart silently, or wait forever in a collective.

    Args:
        where: the calling function, for the message.
        values: name -> int or pytree of arrays, the same names in every process.

    Example:
        >>> check_same("fit", {"the number of training examples": len(x), "the params": params})

    Introduced in chapter 08, notebooks/08-performance-and-scaling.ipynb.
    """
    if jax.process_count() == 1:
        return
    names, row = [], []  # (what, how to show it), and this process's number for it
    for name, value in values.items():
        if _is_int(value):
            names.append((name, "{}"))
            row.append(int(value))
        else:
            leaves = [_bits(leaf) for leaf in jax.tree.leaves(value)]
            shapes = repr([(leaf.shape, leaf.dtype.str) for leaf in leaves]).encode()
            names += [(f"{name} (shapes)", "checksum {:08x}"),
                      (f"{name} (values)", "checksum {:08x}")]
            row += [zlib.crc32(shapes), _crc(leaves)]
    row = np.array([value % 2**32 for value in row], np.uint32)
    table = np.asarray(multihost_utils.process_allgather(row))  # (processes, len(row))
    for (name, shown), column in zip(names, table.T):
        if (column != column[0]).any():
            got = ", ".join(f"process {p} has {shown.format(v)}" for p, v in enumerate(column))
            raise ValueError(
                f"{where}: the processes disagree on {name}: {got}. Every process must call "
                f"{where} with the same arguments (data, params, settings); each feeds its own "
                f"slice of every batch."
            )


# --- Helpers ----------------------------------------------------------------------------------


def _settings(address, n, pid, timeout):
    """The three settings from the arguments or the environment; (None, None, None) if unset."""
    given = {COORDINATOR: address, NUM_PROCESSES: n, PROCESS_ID: pid}
    for name in given:
        if given[name] is None and os.environ.get(name, "") != "":
            given[name] = os.environ[name]
    missing = [name for name, value in given.items() if value is None]
    if len(missing) == 3:
        return None, None, None
    if missing:
        raise ValueError(
            f"initialize: set all of {COORDINATOR}, {NUM_PROCESSES} and {PROCESS_ID} (or pass "
            f"coordinator_address, num_processes and process_id); {', '.join(missing)} "
            f"missing. Run the script with python -m cnnlib.launch -n 2 script.py."
        )
    address, n, pid = given.values()
    host, _, port = str(address).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"initialize: the coordinator address must be host:port, e.g. 10.0.0.1:1234; got "
            f"{address!r}."
        )
    n, pid = _as_int(n, "num_processes"), _as_int(pid, "process_id")
    if n < 1 or not 0 <= pid < n:
        raise ValueError(
            f"initialize: `process_id` must lie in 0..num_processes - 1 and num_processes be "
            f">= 1; got process_id={pid}, num_processes={n}. Number processes 0, 1, ..., n - 1."
        )
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"initialize: `timeout` must be seconds > 0; got {timeout!r}.")
    return str(address), n, pid


def _as_int(value, name):
    if _is_int(value):
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ValueError(f"initialize: `{name}` must be an int; got {value!r}.")


def _wait_for_port(address, deadline, n, pid, timeout):
    """Poll the coordinator's TCP port until it accepts a connection or the deadline passes."""
    host, _, port = address.rpartition(":")
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"initialize: process {pid} of {n} cannot reach the coordinator at "
                    f"{address} within timeout={timeout} s. Start process 0 (it runs the "
                    f"coordinator) with the same address, check the host, port and firewall, "
                    f"or raise `timeout`."
                ) from None
            time.sleep(0.2)


def _exit_on_uncaught_exception():
    previous = sys.excepthook

    def hook(kind, value, traceback):
        previous(kind, value, traceback)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # a closed stream must not stop the exit
                pass
        os._exit(1)

    sys.excepthook = hook


@functools.lru_cache(maxsize=64)  # one lookup per batch shape, not one per step
def _local_rows(sharding, n):
    """Positions 0..n-1 of a batch that this process's devices hold, in ascending order."""
    spans = {(s[0].start or 0, n if s[0].stop is None else s[0].stop)
             for s in sharding.addressable_devices_indices_map((n,)).values()}
    return np.concatenate([np.arange(start, stop) for start, stop in sorted(spans)])


def _is_key(leaf):
    return isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _bits(leaf):
    if _is_key(leaf):
        leaf = jax.random.key_data(leaf)
    return np.ascontiguousarray(np.asarray(leaf))


def _crc(arrays):
    crc = 0
    for array in arrays:
        crc = zlib.crc32(array.view(np.uint8).reshape(-1) if array.size else b"", crc)
    return crc
