#!/usr/bin/env bash
# Build the website around one chapter, to look at it quickly:
#   tools/build_one.sh 03-locality     -> /tmp/bk-03-locality/_build/html
# Uses the notebooks' stored outputs (execution off, as in _config.yml and `make book`) and -W, so
# warnings fail. Every notebook that exists is included (so links between chapters resolve), but
# only NAME is reported. book/ comes along whole, with the explorers in book/_static.
set -euo pipefail
name=$1
root=$(cd "$(dirname "$0")/.." && pwd)
dst=/tmp/bk-$name
rm -rf "$dst" && mkdir -p "$dst/notebooks"
cp -r "$root/book" "$root/_config.yml" "$dst/"
cp "$root"/notebooks/*.ipynb "$dst/notebooks/"
printf '# Chapter preview\n\nA preview build of %s.\n' "$name" > "$dst/book/intro.md"
{
  echo "format: jb-book"
  echo "root: book/intro"
  echo "chapters:"
  for nb in "$root"/notebooks/*.ipynb; do echo "  - file: notebooks/$(basename "$nb" .ipynb)"; done
  echo "  - file: book/notation"
  echo "  - file: book/bibliography"
} > "$dst/_toc.yml"
"$root/.venv/bin/jupyter-book" build "$dst" -W --keep-going
echo "open $dst/_build/html/notebooks/$name.html"
