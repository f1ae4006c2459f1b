#!/usr/bin/env bash
# Build the website for one chapter only, to look at it quickly:
#   tools/build_one.sh 03-locality     -> /tmp/bk-03-locality/_build/html
# Uses the notebook's stored outputs (execution off), with -W so warnings fail.
set -euo pipefail
name=$1
root=$(cd "$(dirname "$0")/.." && pwd)
dst=/tmp/bk-$name
rm -rf "$dst" && mkdir -p "$dst/notebooks"
cp -r "$root/book" "$root/_config.yml" "$dst/"
cp "$root/notebooks/$name.ipynb" "$dst/notebooks/"
sed -i 's/execute_notebooks: .*/execute_notebooks: "off"/' "$dst/_config.yml"
cat > "$dst/_toc.yml" <<TOC
format: jb-book
root: book/intro
chapters:
  - file: notebooks/$name
  - file: book/bibliography
TOC
"$root/.venv/bin/jupyter-book" build "$dst" -W --keep-going
echo "open $dst/_build/html/notebooks/$name.html"
