#!/usr/bin/env bash
# The main job: on a fresh machine, set up, prepare the real multilingual corpus
# (LibreOffice help in en, fr, cs, tr, hi), train a small multilingual transformer with
# GradVac all_layer on the CPU, and score every supervised and zero-shot direction.
#
#   bash scripts/demo.sh                        # ~15 minutes on 2 cores
#   METHOD=multilingual MINUTES=40 bash scripts/demo.sh
#
# Environment: METHOD [gradvac_all_layer] (any configs/methods/*.args), SAMPLING [t5],
# MODEL [small_cpu], MINUTES [10] training budget, OMP_NUM_THREADS [1], SEED [1], BEAM [1],
# ZERO_SHOT [fr-cs,cs-fr,tr-hi] zero-shot directions to score, RUN [runs/demo-METHOD-SAMPLING].
# Stop it at any time: the same command resumes from the last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
# One thread: a 2-thread run next to any other work on 2 cores slows down manyfold (OpenMP
# threads spin waiting for a descheduled partner; measured, docs/results.md).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
METHOD=${METHOD:-gradvac_all_layer} SAMPLING=${SAMPLING:-t5} MODEL=${MODEL:-small_cpu}
MINUTES=${MINUTES:-10} BEAM=${BEAM:-1}
RUN=${RUN:-runs/demo-$METHOD-$SAMPLING}
echo "[demo] 1/4 set-up"
bash scripts/setup.sh
DEMO_ZERO_SHOT=${ZERO_SHOT:-fr-cs,cs-fr,tr-hi}
source configs/data/libreoffice.sh
ZERO_SHOT=$DEMO_ZERO_SHOT
echo "[demo] 2/4 real corpus -> $DATA_DIR"
eval "$PREPARE"
echo "[demo] 3/4 training $METHOD ($SAMPLING, $MODEL) for $MINUTES minutes -> $RUN"
[ -f "$RUN/train.done" ] || {
  MINUTES=$MINUTES bash scripts/train.sh libreoffice "$METHOD" "$SAMPLING" "$MODEL" "$RUN" \
    --log-interval 25 | grep --line-buffered -E "train_inner|valid on|Saved checkpoint|done training|Error"
  touch "$RUN/train.done"
}
echo "[demo] 4/4 BLEU on the test set ($LANG_PAIRS; zero-shot $ZERO_SHOT)"
python3 -m fairseq_gradvac.evaluate --checkpoint "$RUN/checkpoint_best.pt" --directions "$LANG_PAIRS" \
  --zero-shot "$ZERO_SHOT" --raw "$RAW" --post-process "$POST_PROCESS" --beam "$BEAM" \
  --max-len-a 2 --max-len-b 20 --out "$RUN/bleu"  # a short run's model rarely stops by itself
echo "[demo] table written to $RUN/bleu.md and $RUN/bleu.json"
