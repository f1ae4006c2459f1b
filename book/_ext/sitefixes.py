"""Small fixes to the HTML that Jupyter Book 1 generates (a local Sphinx extension).

sphinx-thebe's inline configuration script is registered twice by Jupyter Book 1.0.4, so
every page declared `const THEBE_JS_URL` twice and the browser raised a SyntaxError on each
page. The browser test (tests/test_site.py) caught it; this keeps the first copy only.
"""

from __future__ import annotations


def _drop_duplicate_scripts(app, pagename, templatename, context, doctree):
    seen = set()
    unique = []
    for script in context.get("script_files", []):
        # An inline script has no file name (None or "", depending on who added it).
        body = getattr(script, "attributes", {}).get("body")
        key = ("inline", body) if body else ("file", str(script))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _drop_duplicate_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
