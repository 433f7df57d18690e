#!/usr/bin/env bash
# Part I of the paper (issues 10, 18): train the plain multilingual model (--gradient-combiner
# sum) on the 25-language LibreOffice corpus (configs/data/libreoffice25.sh), keeping a
# checkpoint every SAVE_EVERY updates so the gradient geometry can be measured along
# training. Prepares the corpus first (cached: a no-op once done), then starts the training
# in the BACKGROUND (setsid + nohup: it survives the shell) and returns.
#
#   bash scripts/train_part1.sh                         # 24 directions xx-en, 60 minutes
#   PART1_DIRECTION=en-xx bash scripts/train_part1.sh   # the other model, en-xx
#   MINUTES=120 bash scripts/train_part1.sh             # resume up to 120 minutes in all
#   ANALYZE=1 PART1_DIRECTION=en-xx bash scripts/train_part1.sh   # probe + figures, below
#
# The same command resumes from SAVE/checkpoint_last.pt (MINUTES counts across resumes:
# fairseq's --stop-time-hours); it refuses to start while SAVE's training still runs.
# Environment: PART1_DIRECTION [xx-en], MINUTES [60], SAVE [runs/part1/$PART1_DIRECTION],
# SAVE_EVERY [200], METHOD [multilingual], SAMPLING [t5], MODEL [small_cpu], SEED [1],
# DATA [libreoffice25] (configs/data/DATA.sh or a path), TRAIN_ARGS (more fairseq-train
# options, e.g. "--max-update 800": the same number of updates as the other model),
# DATA_DIR [data/lo25], LO_CACHE_DIR [data/cache/libreoffice], FOREGROUND=1 (train in
# this shell), DRY_RUN=1 (print the training command). Logs: SAVE/train.log (fairseq),
# SAVE/launch.log (this script); pid in SAVE/train.pid. OMP_NUM_THREADS=1 throughout.
#
# ANALYZE=1: probes every interval checkpoint of SAVE not probed yet (the first
# PROBE_SENTENCES [200] rows of the multi-way valid split, fairseq_gradvac.analysis.probe,
# into PROBE [runs/part1/probe-$PART1_DIRECTION]), draws Figures 1 and 3 with their
# statistics (all updates and each checkpoint) into PROBE/figures, and, once both models
# are probed, Figure 2a with its paired tests into runs/part1/figure2a.
set -euo pipefail
cd "$(dirname "$0")/.."
export PART1_DIRECTION=${PART1_DIRECTION:-xx-en}
export DATA_DIR=${DATA_DIR:-data/lo25}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export MINUTES=${MINUTES:-60}
DATA=${DATA:-libreoffice25}
DATA_CONFIG=configs/data/$DATA.sh
[ -f "$DATA" ] && DATA_CONFIG=$DATA
source "$DATA_CONFIG"
SAVE=${SAVE:-runs/part1/$PART1_DIRECTION}
SAVE_EVERY=${SAVE_EVERY:-200}
# shellcheck disable=SC2206  # TRAIN_ARGS is a list of options
TRAIN=(bash scripts/train.sh "$DATA_CONFIG" "${METHOD:-multilingual}"
  "${SAMPLING:-t5}" "${MODEL:-small_cpu}" "$SAVE"
  --save-interval-updates "$SAVE_EVERY" --keep-interval-updates -1 ${TRAIN_ARGS:-})

if [ -n "${ANALYZE:-}" ]; then
  PART1=$(dirname "$SAVE")
  PROBE=${PROBE:-$PART1/probe-$PART1_DIRECTION}
  new=()
  for ckpt in "$SAVE"/checkpoint_*_*.pt; do
    [ -f "$ckpt" ] || continue
    update=${ckpt##*_}; update=${update%.pt}
    grep -q "^$update," "$PROBE/similarity.csv" 2>/dev/null || new+=("$ckpt")
  done
  [ ${#new[@]} -gt 0 ] || [ -f "$PROBE/similarity.csv" ] || { echo "[part1] no checkpoint_E_U.pt in $SAVE" >&2; exit 1; }
  if [ ${#new[@]} -gt 0 ]; then
    echo "[part1] probing ${#new[@]} checkpoint(s) of $SAVE into $PROBE"
    python3 -m fairseq_gradvac.analysis.probe "${new[@]}" --split valid \
      --max-sentences "${PROBE_SENTENCES:-200}" --out "$PROBE"
  fi
  python3 -m fairseq_gradvac.analysis.figures "$PROBE" --out "$PROBE/figures"
  if [ -f "$PART1/probe-xx-en/similarity.csv" ] && [ -f "$PART1/probe-en-xx/similarity.csv" ]; then
    python3 -m fairseq_gradvac.analysis.figures "$PART1/probe-xx-en" --figure2a "$PART1/probe-en-xx" \
      --out "$PART1/figure2a"
  fi
  exit 0
fi

if [ -n "${DRY_RUN:-}" ]; then
  echo "$PREPARE"
  "${TRAIN[@]}"
  exit 0
fi
if [ -f "$SAVE/train.pid" ] && kill -0 "$(cat "$SAVE/train.pid")" 2>/dev/null; then
  echo "[part1] $SAVE is still training (pid $(cat "$SAVE/train.pid")); tail -f $SAVE/train.log" >&2
  exit 1
fi

echo "[part1] corpus: $DATA_DIR"
eval "$PREPARE"

mkdir -p "$SAVE"
{
  echo "[part1] $(date -Is) start/resume: MINUTES=$MINUTES OMP_NUM_THREADS=$OMP_NUM_THREADS" \
    "code $(pwd) @ $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  printf '%q ' "${TRAIN[@]}"; echo
} >> "$SAVE/launch.log"
if [ -n "${FOREGROUND:-}" ]; then
  exec "${TRAIN[@]}"
fi
# fairseq's output goes to SAVE/train.log (train.sh tees it); errors before that land here
setsid nohup "${TRAIN[@]}" > /dev/null 2>> "$SAVE/launch.log" < /dev/null &
echo $! > "$SAVE/train.pid"
echo "[part1] training $PART1_DIRECTION in the background (pid $!, $MINUTES minutes in all):"
echo "        tail -f $SAVE/train.log; checkpoints every $SAVE_EVERY updates in $SAVE"
