#!/usr/bin/env bash
# Translate text with a trained run's model, one sentence per line on stdin:
#   echo "Choose Format - Cells and click the Font tab." | bash scripts/translate.sh RUN en fr
#   bash scripts/translate.sh RUN en fr      # type sentences, Ctrl-D to translate them
# (python -m fairseq_gradvac.evaluation.translate --help for the options)
set -euo pipefail
[ $# -ge 3 ] || { sed -n '2,5p' "$0"; exit 2; }
PYTHONPATH="$(cd "$(dirname "$0")/.." && pwd)${PYTHONPATH:+:$PYTHONPATH}" \
  exec python3 -m fairseq_gradvac.evaluation.translate "$@" 2> >(grep -v -E "^\S+ \S+ \| (INFO|WARNING) \|" >&2)
