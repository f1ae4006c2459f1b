"""tools/execute.py: runs notebooks (several at a time with --jobs), reports which cell failed.

`make lower` relies on it to fail when a chapter raises on the oldest JAX, and `make notebooks`
to save outputs; each test runs it in a subprocess on tiny notebooks written here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]


def notebook(path: Path, *cells: str, tagged: int | None = None) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    if tagged is not None:
        nb.cells[tagged].metadata["tags"] = ["raises-exception"]
    nbformat.write(nb, path)
    return path


def execute(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "execute.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_no_save_runs_every_notebook_and_names_the_failing_cell(tmp_path):
    ok = notebook(tmp_path / "ok.ipynb", "x = 1", "print(x + 1)")
    bad = notebook(tmp_path / "bad.ipynb", "x = 1", "raise ValueError('boom')", "print('after')")
    tagged = notebook(tmp_path / "tagged.ipynb", "1 / 0", "print('went on')", tagged=0)
    out = execute("--no-save", "--jobs", "2", ok, bad, tagged)
    assert out.returncode == 1, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert any(line.startswith(f"{ok}: ran in ") for line in lines)
    assert any(line.startswith(f"{tagged}: ran in ") for line in lines)  # tagged: allowed
    assert any(line.startswith(f"{bad}: FAILED after ") and line.endswith(
        "at cell 2 (code cell 2): raise ValueError('boom')") for line in lines)
    assert "ValueError: boom" in out.stdout
    assert lines[-1].startswith("2 of 3 notebooks ran without an error in ")
    assert lines[-1].endswith("; failed: bad.ipynb")
    assert not nbformat.read(ok, as_version=4).cells[1].outputs  # --no-save wrote nothing


def test_saving_writes_the_outputs_in_place(tmp_path):
    ok = notebook(tmp_path / "ok.ipynb", "x = 1", "print(x + 1)")
    out = execute(ok)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith(f"{ok}: executed in ")
    saved = nbformat.read(ok, as_version=4).cells[1].outputs
    assert [(o.output_type, o.text) for o in saved] == [("stream", "2\n")]


def test_saving_stops_at_a_failing_notebook(tmp_path):
    bad = notebook(tmp_path / "bad.ipynb", "raise ValueError('boom')")
    later = notebook(tmp_path / "later.ipynb", "print('ran')")
    out = execute(bad, later)
    assert out.returncode != 0
    assert "ValueError: boom" in re.sub(r"\x1b\[[0-9;]*m", "", out.stderr)  # without colours
    assert not nbformat.read(later, as_version=4).cells[0].outputs  # never run, never saved


def test_jobs_below_one_is_an_error_naming_the_value(tmp_path):
    out = execute("--jobs", "0", notebook(tmp_path / "ok.ipynb", "1"))
    assert out.returncode == 2
    assert "--jobs must be at least 1, got 0" in out.stderr
