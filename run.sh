#!/usr/bin/env bash
# Start the facegen service on http://127.0.0.1:8000 (extra args: python -m service --help).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
exec python -m service "$@"
