"""Execute notebooks, each in a fresh kernel, and save them in place with their outputs (what
nbval compares); with --no-save, only check that they run.

    python tools/execute.py notebooks/03-locality.ipynb [more.ipynb ...]
    python tools/execute.py --no-save notebooks/*.ipynb   # run top to bottom, save nothing
    python tools/execute.py --no-save --jobs 2 notebooks/*.ipynb   # two at a time

Runs from the notebook's folder, as Jupyter Book and nbval do, in this interpreter's
environment. A cell that raises stops its notebook, unless the cell is tagged raises-exception.
Saving stops at the first such notebook (with --jobs, those already running finish); --no-save
runs the others too, prints one line per notebook (time, or the failing cell and its error) and
exits 1 if any failed. Outputs are not compared with the committed ones: that is nbval's job
(make nbval).
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def execute(nb: nbformat.NotebookNode, path: Path) -> nbformat.NotebookNode:
    """Run every cell of `nb` (read from `path`) in place, from the notebook's folder."""
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    return nb


def failing_cell(nb: nbformat.NotebookNode) -> str:
    """'cell N (code cell M): first source line' of the first untagged cell with an error."""
    code = 0
    for index, cell in enumerate(nb.cells, 1):
        if cell.cell_type != "code":
            continue
        code += 1
        tagged = "raises-exception" in cell.get("metadata", {}).get("tags", [])
        if not tagged and any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            first = next((line for line in cell.source.splitlines() if line.strip()), "")
            return f"cell {index} (code cell {code}): {first.strip()}"
    return "cell unknown"


def run(path: Path, save: bool) -> tuple[Path, str, bool]:
    """Execute one notebook; return (path, the line(s) to print, whether it failed).

    Saving lets a failing cell's error propagate (nothing is written); without saving, the error
    is reported as the failing cell and the last lines of its traceback."""
    nb, start = nbformat.read(path, as_version=4), time.perf_counter()
    if save:
        nbformat.write(execute(nb, path), path)
        return path, f"{path}: executed in {time.perf_counter() - start:.1f} s", False
    try:
        execute(nb, path)
    except CellExecutionError as error:
        seconds = time.perf_counter() - start
        tail = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip().splitlines()[-6:]
        where = failing_cell(nb)  # nbclient fills in nb's outputs as it runs
        lines = [f"{path}: FAILED after {seconds:.1f} s at {where}"]
        lines += [f"    {line}" for line in tail]
        return path, "\n".join(lines), True
    return path, f"{path}: ran in {time.perf_counter() - start:.1f} s", False


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description="Execute notebooks, saving them in place; --no-save: only check they run.")
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--no-save", action="store_true",
                        help="check that every notebook runs; keep going after a failure")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="run N notebooks at a time, started in the order given (default 1); "
                             "each kernel is its own process, and XLA's compiler is "
                             "single-threaded, so 2 jobs on 2 cores finish sooner than 1")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    failed, total, stop = [], time.perf_counter(), threading.Event()

    def task(path: Path) -> tuple[Path, str, bool] | None:
        if stop.is_set():  # an earlier notebook raised (saving): start no more
            return None
        try:
            return run(path, not args.no_save)
        except BaseException:
            stop.set()
            raise

    # Threads suffice: each one only waits on its kernel, a process of its own.
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for future in as_completed([pool.submit(task, path) for path in args.notebooks]):
            result = future.result()  # re-raises a saving run's error, once the others stop
            if result is None:
                continue
            path, report, error = result
            print(report, flush=True)
            if error:
                failed.append(path)
    if args.no_save:
        ran = len(args.notebooks) - len(failed)
        print(f"{ran} of {len(args.notebooks)} notebooks ran without an error in "
              f"{time.perf_counter() - total:.1f} s"
              + (f"; failed: {', '.join(p.name for p in failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
