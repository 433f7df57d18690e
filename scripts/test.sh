#!/usr/bin/env bash
# The project's test command: set-up (idempotent), then the whole pytest suite on the CPU,
# one pytest worker per core (pytest-xdist, at most 4; a test file's tests stay on one
# worker, so its module fixtures are built once), one torch thread per worker.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec "${PYTHON:-python3}" -m pytest -q -n auto --maxprocesses 4 --dist loadfile --durations 20 tests "$@"
