#!/usr/bin/env bash
# Train one row of Table 1 with fairseq-train and the fairseq_gradvac plugin.
#
#   scripts/train.sh DATA METHOD SAMPLING MODEL SAVE_DIR [more fairseq-train options]
#
# DATA, METHOD, SAMPLING, MODEL name files under configs/ (configs/data/DATA.sh or a path,
# configs/methods/METHOD.args, configs/sampling/SAMPLING.args, configs/models/MODEL.args).
# Environment: MINUTES (training-time budget, fairseq's --stop-time-hours; counted across
# resumes), SEED (default 1), SIMILARITY_INTERVAL (--similarity-interval, default 100: the
# gradient cosines of Part I in SAVE_DIR/similarity.csv; 0: off), DRY_RUN=1 (print the
# command, run nothing).
# Re-running the same command resumes from SAVE_DIR/checkpoint_last.pt. The bilingual
# row trains one model per direction, in SAVE_DIR/<direction>, each with the budget.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 5 ] || { sed -n '2,14p' "$0"; exit 2; }
DATA=$1 METHOD=$2 SAMPLING=$3 MODEL=$4 SAVE=$5; shift 5
for f in "configs/methods/$METHOD.args" "configs/sampling/$SAMPLING.args" "configs/models/$MODEL.args"; do
  [ -f "$f" ] || { echo "no such config: $f" >&2; exit 2; }
done
args_of() {  # the options in a configs/*.args file, comments dropped
  sed 's/#.*//' "$1" | tr -s ' \n' '  '
}
DATA_CONFIG=configs/data/$DATA.sh
[ -f "$DATA" ] && DATA_CONFIG=$DATA  # a path to a data config of one's own
[ -f "$DATA_CONFIG" ] || { echo "no such data config: $DATA_CONFIG" >&2; exit 2; }
source "$DATA_CONFIG"
read -r -a METHOD_ARGS <<< "$(args_of "configs/methods/$METHOD.args")"
read -r -a SAMPLING_ARGS <<< "$(args_of "configs/sampling/$SAMPLING.args")"
read -r -a MODEL_ARGS <<< "$(args_of "configs/models/$MODEL.args")"
BUDGET=()
if [ -n "${MINUTES:-}" ]; then
  BUDGET=(--stop-time-hours "$(python3 -c "print(${MINUTES} / 60)")")
fi

run() {  # run SAVE_DIR LANG_PAIRS
  local cmd=(fairseq-train "$DATA_BIN" --user-dir fairseq_gradvac --task multilingual_gradvac
    --lang-dict "$LANG_DICT" --lang-pairs "$2" "${SAMPLING_ARGS[@]}" "${MODEL_ARGS[@]}"
    "${METHOD_ARGS[@]}" --seed "${SEED:-1}" --save-dir "$1" --log-format simple
    --log-interval 50 --tensorboard-logdir "$1/tensorboard" --similarity-interval "${SIMILARITY_INTERVAL:-100}"
    "${BUDGET[@]}" "${EXTRA[@]}")
  if [ -n "${DRY_RUN:-}" ]; then printf '%q ' "${cmd[@]}"; echo; return; fi
  mkdir -p "$1"
  echo "[train] $METHOD / $SAMPLING / $MODEL -> $1"
  "${cmd[@]}" 2>&1 | tee -a "$1/train.log"
}
EXTRA=("$@")
if grep -q '^# bilingual' "configs/methods/$METHOD.args"; then
  for pair in ${LANG_PAIRS//,/ }; do run "$SAVE/$pair" "$pair"; done
else
  run "$SAVE" "$LANG_PAIRS"
fi
