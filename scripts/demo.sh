#!/usr/bin/env bash
# Set up (if needed) and run the demo: the image comparison on ELPV and the signal comparison on
# BasicMotions, each with a leaderboard beside the published figures. Results in demo_runs/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1 MPLBACKEND=Agg
.venv/bin/python scripts/demo.py "$@"
