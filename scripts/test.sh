#!/usr/bin/env bash
# The project's test command: set-up (idempotent), then the whole pytest suite on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" -m pytest -q tests "$@"
