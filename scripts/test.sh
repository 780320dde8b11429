#!/usr/bin/env bash
# The whole test suite, real models included (installs what is missing first).
# Fast set only:  scripts/test.sh -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
ruff check .  # lint first: a style failure costs seconds, not the suite's half hour
# pytest exits 5 when it collects nothing; with `set -e` that fails the run, as it should.
exec python -m pytest "$@"
