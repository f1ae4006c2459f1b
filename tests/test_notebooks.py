"""The promises every chapter notebook keeps, checked without running it.

nbval (make nbval) re-executes each notebook and compares outputs; these tests make
sure there is something to compare (a notebook saved without outputs passes nbval
vacuously) and that the book's conventions hold.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def toc_files() -> list[str]:
    files = [TOC["root"]]
    for part in TOC["parts"]:
        files += [chapter["file"] for chapter in part["chapters"]]
    return files


ids = [p.stem for p in NOTEBOOKS]


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 1


def test_toc_and_notebooks_agree():
    listed = toc_files()
    for file in listed:
        assert (ROOT / f"{file}.md").exists() or (ROOT / f"{file}.ipynb").exists(), file
    listed_notebooks = {f for f in listed if f.startswith("notebooks/")}
    on_disk = {f"notebooks/{p.stem}" for p in NOTEBOOKS}
    assert on_disk == listed_notebooks


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_file_name_is_numbered_kebab_case(path):
    assert re.fullmatch(r"\d\d-[a-z0-9]+(-[a-z0-9]+)*\.ipynb", path.name), path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_committed_executed_in_order(path):
    cells = [c for c in code_cells(load(path)) if source(c).strip()]
    counts = [c["execution_count"] for c in cells]
    assert None not in counts, f"{path.name}: a code cell was never executed"
    assert counts == list(range(1, len(cells) + 1)), (
        f"{path.name}: cells were executed out of order or not in one fresh run: {counts}. "
        f"Re-run with `make notebooks NB={path.relative_to(ROOT)}`."
    )
    assert sum(len(c["outputs"]) for c in cells) > 0, f"{path.name} has no outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_only_tagged_cells_raise(path):
    for cell in code_cells(load(path)):
        errors = [o for o in cell["outputs"] if o["output_type"] == "error"]
        if "raises-exception" in tags(cell):
            assert errors, f"{path.name}: a raises-exception cell did not raise:\n{source(cell)}"
        else:
            assert not errors, f"{path.name}: untagged cell raised:\n{source(cell)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_colab_install_cell_matches_config(path):
    first = load(path)["cells"][0]
    url = CONFIG["repository"]["url"]
    branch = CONFIG["repository"]["branch"]
    assert first["cell_type"] == "code"
    assert "remove-cell" in tags(first), "the install cell is hidden on the website"
    text = source(first)
    assert "import google.colab" in text, "installs only when google.colab is importable"
    assert f'%pip install -q "cnnlib @ git+{url}@{branch}"' in text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_notebooks_define_no_library_code(path):
    for cell in code_cells(load(path)):
        # IPython magics are not Python: parse them as `pass` at the same indentation.
        text = "\n".join(
            line[: len(line) - len(line.lstrip())] + "pass"
            if line.lstrip().startswith(("%", "!"))
            else line
            for line in source(cell).splitlines()
        )
        for node in ast.walk(ast.parse(text)):
            assert not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)), (
                f"{path.name} defines `{node.name}`: library code belongs in cnnlib"
            )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_no_prose_hidden_in_code_cells(path):
    """A lost ``# %% [markdown]`` marker turns prose into comments: nbval passes, the page shows
    raw TeX. Headings and display math belong to markdown cells."""
    stray = [line for cell in code_cells(load(path)) for line in source(cell).splitlines()
             if re.match(r"#\s*(#{1,6} |\$\$)", line)]
    assert not stray, f"{path.name}: markdown in a code cell: {stray[:3]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_chapter_structure(path):
    headings = [
        line.lstrip("#").strip()
        for cell in load(path)["cells"]
        if cell["cell_type"] == "markdown"
        for line in source(cell).splitlines()
        if line.startswith("#")
    ]
    assert headings and re.match(r"# ", source(load(path)["cells"][1])), "one title first"
    for section in ("Overview", "Summary", "Exercises"):
        assert section in headings, f"{path.name} has no '## {section}' section"
    exercises = "".join(
        source(c) for c in load(path)["cells"] if c["cell_type"] == "markdown"
    ).split("## Exercises", 1)[1]
    assert ":class: dropdown" in exercises, "exercise solutions are collapsed dropdowns"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_figures_have_caption_and_alt_text(path):
    for cell in code_cells(load(path)):
        if any("image/png" in o.get("data", {}) for o in cell["outputs"]):
            meta = cell["metadata"].get("mystnb", {})
            assert meta.get("image", {}).get("alt"), f"{path.name}: figure without alt text"
            assert meta.get("figure", {}).get("caption"), f"{path.name}: figure without caption"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_floats_are_not_printed_raw(path):
    # Unrounded floats differ in the last digits between 1 and 2 cores; print rounded.
    raw = re.compile(r"\d\.\d{7,}|\d\.\d+e[-+]\d\d")  # 0.12345678 or 1.2e-07
    for cell in code_cells(load(path)):
        if "# NBVAL_IGNORE_OUTPUT" in source(cell):
            continue
        for out in cell["outputs"]:
            text = out.get("text", "") or "".join(out.get("data", {}).get("text/plain", ""))
            assert not raw.search("".join(text)), f"{path.name}: unrounded float in {text!r}"
