#!/usr/bin/env bash
# Real multi-way data for the CPU experiments: LibreOffice help, en <-> fr, cs, tr, hi
# (default) or up to ~30 languages.
# Thin wrapper; all options are those of prepare_libreoffice.py (--help), e.g.
#   scripts/prepare_libreoffice.sh                          # -> data/libreoffice (cached)
#   scripts/prepare_libreoffice.sh --langs fr,hi --max-words 30 --vocab-size 4000 \
#       --max-train-per-pair 10000 --out data/lo-small
#   scripts/prepare_libreoffice.sh --langs de,ja,zh-cn --heldout-pairs english --out data/x
#       # any of Debian's libreoffice-help-* languages (zh-cn becomes the code zh_cn);
#       # configs/data/libreoffice25.sh has the 25-language corpus of Part I
# Needs apt-get (Debian/Ubuntu; `apt-get update` once) or --packages-dir, plus
# sentencepiece and fairseq in the current python.
set -euo pipefail
exec "${PYTHON:-python3}" "$(dirname "$0")/prepare_libreoffice.py" "$@"
