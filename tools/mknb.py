"""Build a chapter notebook from a percent-format script (the authoring format of this book).

    python tools/mknb.py SRC.py notebooks/NN-name.ipynb

Cells are separated by `# %%` (code) and `# %% [markdown]` (markdown, each line prefixed by
"# "). A header line may carry JSON metadata: `# %% {"tags": ["raises-exception"]}` or
`# %% {"mystnb": {"figure": {"caption": "..."}, "image": {"alt": "..."}}}`.
The Colab install cell (hidden on the website) is prepended. The result is unexecuted:
run `make notebooks NB=notebooks/NN-name.ipynb` to execute it in place.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def install_cell() -> dict:
    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    src = (
        "# On Colab, install cnnlib from the book's repository; elsewhere it is already installed.\n"
        "try:\n"
        "    import google.colab  # noqa: F401\n"
        "except ImportError:\n"
        "    pass\n"
        "else:\n"
        f'    %pip install -q "cnnlib @ git+{repo["url"]}@{repo["branch"]}"'
    )
    return cell("code", src, {"tags": ["remove-cell"]})


def cell(kind: str, src: str, meta: dict) -> dict:
    c = {"cell_type": kind, "metadata": meta, "source": src.splitlines(keepends=True)}
    if kind == "code":
        c.update(execution_count=None, outputs=[])
    return c


def parse(text: str) -> list[dict]:
    cells, kind, meta, lines = [], None, {}, []

    def flush():
        if kind is None:
            return
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(l[2:] if l.startswith("# ") else l.lstrip("#") for l in body.splitlines())
        if body.strip():
            cells.append(cell(kind, body, meta))

    for line in text.splitlines():
        if line.startswith("# %%"):
            flush()
            rest = line[4:].strip()
            kind = "code"
            if rest.startswith("[markdown]"):
                kind, rest = "markdown", rest[len("[markdown]"):].strip()
            meta = json.loads(rest) if rest else {}
            lines = []
        else:
            lines.append(line)
    flush()
    return cells


def main(src: str, dst: str) -> None:
    cells = [install_cell()] + parse(Path(src).read_text())
    for i, c in enumerate(cells):
        c["id"] = f"c{i:02d}"
    nb = {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    Path(dst).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
