#!/usr/bin/env bash
# Real multi-way data for the CPU experiments: LibreOffice help, en <-> fr, cs, tr, hi.
# Thin wrapper; all options are those of prepare_libreoffice.py (--help), e.g.
#   scripts/prepare_libreoffice.sh                          # -> data/libreoffice (cached)
#   scripts/prepare_libreoffice.sh --langs fr,hi --max-words 30 --vocab-size 4000 \
#       --max-train-per-pair 10000 --out data/lo-small
# Needs apt-get (Debian/Ubuntu; `apt-get update` once) or --packages-dir, plus
# sentencepiece and fairseq in the current python.
set -euo pipefail
exec "${PYTHON:-python3}" "$(dirname "$0")/prepare_libreoffice.py" "$@"
