#!/usr/bin/env bash
# Figure 2b of the paper: does the anchor direction (en-fr) translate better next to a
# direction whose gradients agree with its own? Trains one two-direction model per partner
# X (ANCHOR + X, plain multilingual training: configs/methods/multilingual.args) recording
# gradient cosines every SIMILARITY_INTERVAL updates, scores the anchor's BLEU, and plots
# BLEU against the mean cosine of the anchor with X (fairseq_gradvac.analysis.figures).
#
#   DATA=libreoffice MINUTES=20 bash scripts/figure2b.sh
#
# Environment (defaults in brackets):
#   DATA [libreoffice]  configs/data/DATA.sh or a path      MODEL [small_cpu]   SAMPLING [t5]
#   ANCHOR [en-fr]      PARTNERS [every other direction of the data config's LANG_PAIRS]
#   MINUTES  training-time budget per run (unset: the model config's --max-update)
#   SIMILARITY_INTERVAL [10]   GROUP [model] the parameter group whose cosine is plotted
#   SEED [1]   BEAM [5]   RUNS [runs/figure2b-DATA-MODEL]
#   TRAIN_ARGS  more fairseq-train options for every run, e.g. "--max-update 1000"
# The partners' corpora differ in size, so the anchor's share of each batch differs too:
# compare runs of equal updates, and read the figure with that in mind.
# Re-running resumes: finished runs (train.done) and evaluations (bleu.json) are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-libreoffice} MODEL=${MODEL:-small_cpu} SAMPLING=${SAMPLING:-t5} ANCHOR=${ANCHOR:-en-fr}
SIMILARITY_INTERVAL=${SIMILARITY_INTERVAL:-10} BEAM=${BEAM:-5}
RUNS=${RUNS:-runs/figure2b-$(basename "$DATA" .sh)-$MODEL}
DATA_CONFIG=configs/data/$DATA.sh
[ -f "$DATA" ] && DATA_CONFIG=$DATA
DATA_CONFIG=$(realpath "$DATA_CONFIG")
source "$DATA_CONFIG"
[ -f "$LANG_DICT" ] || eval "$PREPARE"
if [ -z "${PARTNERS:-}" ]; then
  for d in ${LANG_PAIRS//,/ }; do [ "$d" = "$ANCHOR" ] || PARTNERS+="$d "; done
fi

for partner in $PARTNERS; do
  dir=$RUNS/$partner
  mkdir -p "$dir"
  # The data config with the two directions of this run.
  printf 'source %q\nLANG_PAIRS=%s,%s\n' "$DATA_CONFIG" "$ANCHOR" "$partner" > "$dir/data.sh"
  if [ ! -f "$dir/train.done" ]; then
    # shellcheck disable=SC2086  # TRAIN_ARGS is a list of options
    bash scripts/train.sh "$dir/data.sh" multilingual "$SAMPLING" "$MODEL" "$dir" \
      --similarity-interval "$SIMILARITY_INTERVAL" ${TRAIN_ARGS:-}
    touch "$dir/train.done"
  fi
  if [ ! -f "$dir/bleu.json" ]; then
    python3 -m fairseq_gradvac.evaluate --checkpoint "$dir/checkpoint_best.pt" --directions "$ANCHOR" \
      --raw "$RAW" --post-process "$POST_PROCESS" --beam "$BEAM" --out "$dir/bleu"
  fi
done
python3 -m fairseq_gradvac.analysis.figures --figure2b "$RUNS" --anchor "$ANCHOR" \
  --group "${GROUP:-model}" --out "$RUNS/figures"
