#!/usr/bin/env bash
# Pack what scripts/gpu-check.sh needs on a GPU machine that has a CUDA torch but no package registry
# and no room for the packaged weights (a lent machine that takes 64 MiB from here):
#
#   FOLDER/shapes  each default model's config and tokenizer, and the bench's task files
#                  (scripts/random_weights.py export; about 3 MB)
#   FOLDER/wheels  the project's runtime dependencies for CPython $PACK_PYTHON (default 3.12) on x86-64
#                  Linux, at the versions of constraints.txt, less torch and numpy, which such a machine
#                  has (about 45 MB)
#
#   bash scripts/gpu-pack.sh [FOLDER]        # here (default FOLDER: .gpu, ignored by git)
#   PYTHON=python3 PACKED=.gpu bash scripts/gpu-check.sh OUT_DIR     # there, with FOLDER beside the code
#
# There gpu-check installs the wheels into a temporary folder and measures models of the packaged shapes
# with random weights: the speed figures are the real models', the answers are noise.
set -euo pipefail
cd "$(dirname "$0")/.."

FOLDER=${1:-.gpu}
PYTHON=.venv/bin/python
rm -rf "$FOLDER/shapes" "$FOLDER/wheels"
PYTHONPATH=. "$PYTHON" scripts/random_weights.py export "$FOLDER/shapes"
platforms=()
for tag in manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  platforms+=(--platform "${tag}_x86_64")
done
"$PYTHON" -m pip download -q --only-binary=:all: --python-version "${PACK_PYTHON:-3.12}" --implementation cp "${platforms[@]}" \
  -c constraints.txt -d "$FOLDER/wheels" \
  transformers langchain-core langgraph langgraph-checkpoint-sqlite pydantic gguf llguidance platformdirs httpx
rm -f "$FOLDER"/wheels/numpy-*.whl
du -sh "$FOLDER/shapes" "$FOLDER/wheels"
