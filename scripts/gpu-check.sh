#!/usr/bin/env bash
# The GPU check (issue 11): `mentorcollab bench` with both models on transformers, on CUDA in bfloat16.
# It prints the GPU, its measured memory bandwidth, each model alone (tokens/s and their share of that
# bandwidth), MentorCollab at the defaults against the cost model, requests at once against one at a
# time, and the first probe with and without read-ahead. Then each model's decoding three ways
# (scripts/torch_decoding.py): what the backend does, a static cache, and compiled with CUDA graphs; and
# the bench again with `--torch-compile` (the backend's static cache and compiled step; each model
# compiles in its untimed warm-up), to decide whether the torch path should compile on a GPU by default.
# A short, prepared run: a few minutes on a GPU.
#
#   bash scripts/gpu-check.sh [OUT_DIR] [extra bench flags...]
#
# STEPS picks the parts, in order (default "bench decoding compiled"), so the check can be split across
# calls on a machine lent for a few minutes at a time. A step that fails does not stop the ones after it
# (the script exits 1 at the end), and the bench prints each figure on stderr as it measures it.
#
# It needs a CUDA build of torch in ./.venv: install one first (scripts/install.sh keeps a torch that is
# already there), e.g. `python3 -m venv .venv && .venv/bin/pip install torch` and then scripts/install.sh.
# The tables and the GPU's description are written to OUT_DIR (default: runs/gpu-check).
#
# PYTHON, GENERATOR and MENTOR override the interpreter and the two models (a packaged name or a model
# folder). PACKED names a folder made by scripts/gpu-pack.sh, for a machine with a CUDA torch but no
# registry and no room for the weights: its wheels are installed into a temporary folder, and both models
# are built there with the packaged shapes and random weights (scripts/random_weights.py). The speed
# figures are the real models'; the answers, and so MentorCollab's probes and adoptions, are noise.
# DEVICE=cpu runs the same steps on the CPU, to try the script where there is no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT_DIR=${1:-runs/gpu-check}
shift || true
PYTHON=${PYTHON:-.venv/bin/python}
GENERATOR=${GENERATOR:-smollm2-135m-instruct}
MENTOR=${MENTOR:-qwen2.5-coder-1.5b-instruct}
DEVICE=${DEVICE:-cuda}
command -v "$PYTHON" >/dev/null || { echo "gpu-check: no $PYTHON here; run scripts/install.sh after installing a CUDA torch" >&2; exit 2; }
if [ "$DEVICE" != cpu ] && ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu-check: torch sees no CUDA device (torch $("$PYTHON" -c 'import torch; print(torch.__version__)'))" >&2
  exit 2
fi
if [ -n "${PACKED:-}" ]; then
  PACKED=$(cd "$PACKED" && pwd) scratch=$(mktemp -d)
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$scratch/site" "$PACKED"/wheels/*.whl
  export PYTHONPATH="$scratch/site:$PACKED/shapes/site${PYTHONPATH:+:$PYTHONPATH}"
  PYTHONPATH="$PYTHONPATH:." "$PYTHON" scripts/random_weights.py build "$PACKED/shapes" "$scratch/models" --device "$DEVICE"
  GENERATOR=$scratch/models/$GENERATOR MENTOR=$scratch/models/$MENTOR
fi
mkdir -p "$OUT_DIR"
[ "$DEVICE" = cpu ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT_DIR/gpu.txt"
bench() {
  PYTHONUNBUFFERED=1 "$PYTHON" -m mentorcollab_langchain.cli bench --backend transformers --device "$DEVICE" \
    --dtype bfloat16 --no-remote --generator "$GENERATOR" --mentor "$MENTOR" "$@"
}
STEPS=${STEPS:-bench decoding compiled}
for step in $STEPS; do
  case "$step" in
    bench|compiled|decoding) ;;
    *) echo "gpu-check: unknown step $step (bench, compiled, decoding)" >&2; exit 2 ;;
  esac
done
status=0
for step in $STEPS; do
  case "$step" in
    bench) bench "$@" | tee "$OUT_DIR/bench.txt" || status=1 ;;
    compiled) bench --torch-compile --skip-first-probe "$@" | tee "$OUT_DIR/bench-compiled.txt" || status=1 ;;
    decoding)
      for model in "$GENERATOR" "$MENTOR"; do
        PYTHONUNBUFFERED=1 PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" scripts/torch_decoding.py --model "$model" \
          --device "$DEVICE" --dtype bfloat16 | tee -a "$OUT_DIR/torch_decoding.txt" || status=1
      done ;;
  esac
done
exit "$status"
