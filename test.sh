#!/usr/bin/env bash
# Run the whole test suite (CPU only) in the project's virtual environment; extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
exec python -m pytest "$@"
