#!/usr/bin/env bash
# Set up (if needed) and run the linter and the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg
.venv/bin/ruff check src tests bench scripts
.venv/bin/python -m pytest "$@"
