#!/usr/bin/env bash
# Sample a grid of faces from a published model (extra args: python -m models_core.demo --help).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
exec python -m models_core.demo "$@"
