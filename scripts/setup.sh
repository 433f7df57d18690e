#!/usr/bin/env bash
# Installs everything fairseq-gradvac needs into the current Python, idempotently.
# - keeps an installed torch (a GPU machine has its own); otherwise takes torch 2.13.0;
# - builds fairseq (PyPI: fairseq-fixed, import name fairseq) against that torch, without
#   build isolation or its pinned deps (torchaudio would pull in another torch); pip caches
#   the built wheel, so later runs take seconds;
# - installs this package in editable mode.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
pip_install() {  # pip, quiet; its one expected complaint left out (a real failure still fails, loudly)
  local out rc=0
  out=$("$PY" -m pip install --disable-pip-version-check --root-user-action=ignore -q "$@" 2>&1) || rc=$?
  printf '%s\n' "$out" | expected_pip_note >&2
  return $rc
}
expected_pip_note() {  # drops pip's note that fairseq-fixed declares torchaudio (text needs none, and
  # it would pull in another torch); any other dependency conflict is printed with pip's header
  local lines
  lines=$(grep -v -e '^$' -e '^fairseq-fixed [0-9.]* requires torchaudio' || true)
  if ! printf '%s\n' "$lines" | grep -q -e ' requires ' -e ' which is incompatible' -e ' has requirement '; then
    lines=$(printf '%s\n' "$lines" | grep -v "^ERROR: pip's dependency resolver does not currently take into account" || true)
  fi
  [ -z "$lines" ] || printf '%s\n' "$lines"
}
[ "${1:-}" = --filter-pip-note ] && { expected_pip_note; exit 0; }  # (for the tests)

if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "[setup] installing torch 2.13.0"
  pip_install torch==2.13.0
fi
TORCH=$("$PY" -c "import torch; print(torch.__version__.split('+')[0])")
# Every later step is pinned to the torch that is there now.
CONSTRAINT=$(mktemp); echo "torch==$TORCH" > "$CONSTRAINT"
pip_install -c "$CONSTRAINT" "numpy<2.5" cython setuptools wheel
if ! "$PY" -c "import fairseq" 2>/dev/null; then
  echo "[setup] building fairseq (fairseq-fixed 0.12.3.1; about 4 minutes the first time)"
  pip_install --no-build-isolation --no-deps fairseq-fixed==0.12.3.1
fi
pip_install -c "$CONSTRAINT" hydra-core==1.3.2 omegaconf==2.3.0 bitarray regex "sacrebleu>=2.3" \
  tqdm cffi scikit-learn packaging sentencepiece matplotlib scipy urielplus tensorboardX "torchjd[full]==0.18.0" langid \
  pytest "pytest-xdist==3.6.1"
pip_install --no-deps --no-build-isolation -e .
rm -f "$CONSTRAINT"
"$PY" -c "import torch, fairseq, fairseq_gradvac; print('[setup] ok: torch', torch.__version__, '| fairseq', fairseq.__version__)"
