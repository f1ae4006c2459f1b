"""Execute notebooks in place, in a fresh kernel each, keeping their outputs (what nbval compares).

    python tools/execute.py notebooks/03-locality.ipynb [more.ipynb ...]

Runs from the notebook's folder, as Jupyter Book and nbval do. Stops at the first cell that
raises, unless the cell is tagged raises-exception.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def main(paths: list[str]) -> None:
    for path in map(Path, paths):
        nb = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        client = NotebookClient(
            nb, timeout=600, kernel_name="python3", record_timing=False,
            resources={"metadata": {"path": str(path.parent)}},
        )
        client.execute()
        nbformat.write(nb, path)
        print(f"{path}: executed in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
