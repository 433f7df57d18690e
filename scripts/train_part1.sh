#!/usr/bin/env bash
# Part I of the paper (issue 10): train the plain multilingual model (--gradient-combiner
# sum) on the 25-language LibreOffice corpus (configs/data/libreoffice25.sh), keeping a
# checkpoint every SAVE_EVERY updates so the gradient geometry can be measured along
# training. Prepares the corpus first (cached: a no-op once done), then starts the training
# in the BACKGROUND (setsid + nohup: it survives the shell) and returns.
#
#   bash scripts/train_part1.sh                         # 24 directions xx-en, 60 minutes
#   PART1_DIRECTION=en-xx bash scripts/train_part1.sh   # the other model, en-xx
#   MINUTES=120 bash scripts/train_part1.sh             # resume up to 120 minutes in all
#
# The same command resumes from SAVE/checkpoint_last.pt (MINUTES counts across resumes:
# fairseq's --stop-time-hours); it refuses to start while SAVE's training still runs.
# Environment: PART1_DIRECTION [xx-en], MINUTES [60], SAVE [runs/part1/$PART1_DIRECTION],
# SAVE_EVERY [200], METHOD [multilingual], SAMPLING [t5], MODEL [small_cpu], SEED [1],
# DATA_DIR [data/lo25], LO_CACHE_DIR [data/cache/libreoffice], FOREGROUND=1 (train in
# this shell), DRY_RUN=1 (print the training command). Logs: SAVE/train.log (fairseq),
# SAVE/launch.log (this script); pid in SAVE/train.pid. OMP_NUM_THREADS=1 throughout.
set -euo pipefail
cd "$(dirname "$0")/.."
export PART1_DIRECTION=${PART1_DIRECTION:-xx-en}
export DATA_DIR=${DATA_DIR:-data/lo25}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export MINUTES=${MINUTES:-60}
source configs/data/libreoffice25.sh
SAVE=${SAVE:-runs/part1/$PART1_DIRECTION}
SAVE_EVERY=${SAVE_EVERY:-200}
TRAIN=(bash scripts/train.sh configs/data/libreoffice25.sh "${METHOD:-multilingual}"
  "${SAMPLING:-t5}" "${MODEL:-small_cpu}" "$SAVE"
  --save-interval-updates "$SAVE_EVERY" --keep-interval-updates -1)

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
