#!/usr/bin/env bash
# Figure 2b of the paper: does the anchor direction (en-fr) translate better next to a
# direction whose gradients agree with its own? Trains one two-direction model per partner
# X and seed (ANCHOR + X, plain multilingual training: configs/methods/multilingual.args)
# recording gradient cosines every SIMILARITY_INTERVAL updates, and the anchor alone (the
# reference line) per seed, all with the same budget; scores the anchor's BLEU and chrF
# (fairseq_gradvac.evaluation.score) and plots them against the mean cosine of the anchor
# with X, with their rank correlation (fairseq_gradvac.analysis.figures --figure2b).
#
#   DATA=libreoffice25 TRAIN_ARGS="--max-update 3000" SEEDS="1 2" bash scripts/figure2b.sh
#
# Environment (defaults in brackets):
#   DATA [libreoffice25]  configs/data/DATA.sh or a path   MODEL [small_cpu]   SAMPLING [t5]
#   ANCHOR [en-fr]   PARTNERS [those of en-es en-it en-de en-cs en-ru en-hi en-ja en-tr that
#   the data config's LANG_PAIRS has (with PART1_DIRECTION=en-xx for libreoffice25), else
#   every other direction there]   SEEDS [1]   SIMILARITY_INTERVAL [10]
#   MINUTES  training-time budget per run (unset: the model config's --max-update)
#   PROBE_SENTENCES [500] rows of the valid split per direction for the probe (0: all)
#   ALONE [1]  0: no anchor-alone run (another invocation on the same RUNS trains it; to run
#              partners in parallel, one process per core:
#              PARTNERS="en-es en-de" bash scripts/figure2b.sh & ALONE=0 PARTNERS="en-it en-cs" bash scripts/figure2b.sh)
#   GROUP [model] the parameter group whose cosine is plotted   BEAM [5]
#   RUNS [runs/figure2b-DATA-MODEL]: one folder per run, PARTNER-seedN and alone-seedN
#   TRAIN_ARGS  more fairseq-train options for every run, e.g. "--max-update 3000" (equal
#               updates: a fairer budget than MINUTES on a shared machine)
# The partners' corpora differ in size, so the anchor's share of each batch differs too:
# compare runs of equal updates, and read the figure with that in mind.
# Re-running resumes: finished runs (train.done) and scores (scores.json) are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-libreoffice25} MODEL=${MODEL:-small_cpu} SAMPLING=${SAMPLING:-t5} ANCHOR=${ANCHOR:-en-fr}
SIMILARITY_INTERVAL=${SIMILARITY_INTERVAL:-10} BEAM=${BEAM:-5} SEEDS=${SEEDS:-1}
RUNS=${RUNS:-runs/figure2b-$(basename "$DATA" .sh)-$MODEL}
DATA_CONFIG=configs/data/$DATA.sh
[ -f "$DATA" ] && DATA_CONFIG=$DATA
DATA_CONFIG=$(realpath "$DATA_CONFIG")
export PART1_DIRECTION=${PART1_DIRECTION:-en-xx}  # libreoffice25: the en-xx directions
source "$DATA_CONFIG"
[ -f "$LANG_DICT" ] || eval "$PREPARE"
if [ -z "${PARTNERS:-}" ]; then
  for d in en-es en-it en-de en-cs en-ru en-hi en-ja en-tr; do
    [[ ",$LANG_PAIRS," == *",$d,"* && $d != "$ANCHOR" ]] && PARTNERS+="$d "
  done
fi
if [ -z "${PARTNERS:-}" ]; then
  for d in ${LANG_PAIRS//,/ }; do [ "$d" = "$ANCHOR" ] || PARTNERS+="$d "; done
fi
echo "[figure2b] $ANCHOR with each of: $PARTNERS; seeds $SEEDS; runs in $RUNS"

RUN_NAMES=$PARTNERS
[ "${ALONE:-1}" = 0 ] || RUN_NAMES="alone $PARTNERS"
for seed in $SEEDS; do
  for partner in $RUN_NAMES; do
    dir=$RUNS/$partner-seed$seed
    mkdir -p "$dir"
    # The data config of this run: the anchor and the partner, or the anchor alone.
    pairs=$ANCHOR,$partner interval=$SIMILARITY_INTERVAL
    [ "$partner" = alone ] && pairs=$ANCHOR interval=0
    printf 'source %q\nLANG_PAIRS=%s\n' "$DATA_CONFIG" "$pairs" > "$dir/data.sh"
    if [ ! -f "$dir/train.done" ]; then
      # shellcheck disable=SC2086  # TRAIN_ARGS is a list of options
      SEED=$seed bash scripts/train.sh "$dir/data.sh" multilingual "$SAMPLING" "$MODEL" "$dir" \
        --similarity-interval "$interval" ${TRAIN_ARGS:-}
      touch "$dir/train.done"
    fi
    if [ ! -f "$dir/scores.json" ]; then
      python3 -m fairseq_gradvac.evaluation.score --checkpoint "$dir/checkpoint_best.pt" --direction "$ANCHOR" \
        --raw "$RAW" --post-process "$POST_PROCESS" --beam "$BEAM" --out "$dir/scores.json"
    fi
    if [ "$partner" != alone ] && [ ! -f "$dir/probe/similarity.csv" ]; then
      python3 -m fairseq_gradvac.analysis.probe "$dir/checkpoint_best.pt" --directions "$ANCHOR,$partner" \
        --split valid --max-sentences "${PROBE_SENTENCES:-500}" --out "$dir/probe"
    fi
  done
done
python3 -m fairseq_gradvac.analysis.figures --figure2b "$RUNS" --anchor "$ANCHOR" \
  --group "${GROUP:-model}" --out "$RUNS/figures"
