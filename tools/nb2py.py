"""Turn a chapter notebook back into the percent-format script that tools/mknb.py reads.

    python tools/nb2py.py notebooks/NN-name.ipynb SRC.py

The Colab install cell (the first cell) is dropped; mknb.py adds it again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(src: str, dst: str) -> None:
    nb = json.loads(Path(src).read_text())
    out = []
    for c in nb["cells"][1:]:
        meta = {k: v for k, v in c.get("metadata", {}).items() if k in ("tags", "mystnb")}
        head = "# %%" + (" [markdown]" if c["cell_type"] == "markdown" else "")
        if meta:
            head += " " + json.dumps(meta, ensure_ascii=False)
        body = "".join(c["source"])
        if c["cell_type"] == "markdown":
            body = "\n".join(("# " + l) if l else "#" for l in body.splitlines())
        out.append(head + "\n" + body + "\n")
    Path(dst).write_text("\n".join(out))


if __name__ == "__main__":
    main(*sys.argv[1:])
