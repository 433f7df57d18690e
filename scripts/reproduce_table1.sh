#!/usr/bin/env bash
# Table 1 of the paper: train every row, evaluate every direction (supervised and
# zero-shot) with fairseq-generate + sacrebleu, print the table in the paper's shape.
#
#   DATA=wmt MODEL=transformer_base bash scripts/reproduce_table1.sh         # the paper (GPU)
#   DATA=libreoffice MODEL=small_cpu MINUTES=30 bash scripts/reproduce_table1.sh   # CPU
#
# Environment (defaults in brackets):
#   DATA [libreoffice]   configs/data/DATA.sh      MODEL [small_cpu]  configs/models/MODEL.args
#   ROWS [all nine rows of Table 1]                configs/methods/ROW.args
#   SAMPLINGS [t5]  e.g. "t1 t5" for the data-imbalance table      SEEDS [1]  e.g. "1 2 3"
#   MINUTES  training-time budget per run (fairseq --stop-time-hours; unset: the model config's
#            --max-update)       RUNS [runs/table1-DATA-MODEL]     BEAM [5]
#   TRAIN_ARGS  more fairseq-train options for every run, e.g. "--max-update 700"
# On a 2-core CPU, run two of these side by side (different ROWS or SEEDS, same RUNS) with
# OMP_NUM_THREADS=1 each: two 2-thread trainings on 2 cores slow each other down manyfold.
# Re-running resumes: a run stopped half-way continues from its checkpoint_last.pt, finished
# runs (train.done) and evaluations (bleu.json) are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-libreoffice} MODEL=${MODEL:-small_cpu}
ROWS=${ROWS:-"bilingual multilingual gradnorm mgda pcgrad pcgrad_all_layer gradvac_fixed_obj gradvac_whole_model gradvac_all_layer"}
SAMPLINGS=${SAMPLINGS:-t5} SEEDS=${SEEDS:-1} BEAM=${BEAM:-5}
RUNS=${RUNS:-runs/table1-$(basename "$DATA" .sh)-$MODEL}
if [ -f "$DATA" ]; then source "$DATA"; else source "configs/data/$DATA.sh"; fi
[ -f "$LANG_DICT" ] || eval "$PREPARE"

evaluate() {  # evaluate RUN_DIR DIRECTIONS ZERO_SHOT
  [ -f "$1/bleu.json" ] && return
  python3 -m fairseq_gradvac.evaluation.evaluate --checkpoint "$1/checkpoint_best.pt" --directions "$2" \
    --zero-shot "$3" --raw "$RAW" --post-process "$POST_PROCESS" --beam "$BEAM" --out "$1/bleu"
}

for row in $ROWS; do
  for sampling in $SAMPLINGS; do
    for seed in $SEEDS; do
      dir=$RUNS/${row}_${sampling}_seed$seed
      if [ ! -f "$dir/train.done" ]; then
        # shellcheck disable=SC2086  # TRAIN_ARGS is a list of options
        SEED=$seed bash scripts/train.sh "$DATA" "$row" "$sampling" "$MODEL" "$dir" ${TRAIN_ARGS:-}
        touch "$dir/train.done"
      fi
      if grep -q '^# bilingual' "configs/methods/$row.args"; then
        for pair in ${LANG_PAIRS//,/ }; do evaluate "$dir/$pair" "$pair" ""; done
      else
        evaluate "$dir" "$LANG_PAIRS" "$ZERO_SHOT"
      fi
    done
  done
done
python3 -m fairseq_gradvac.evaluation.results_table "$RUNS" --high "$HIGH" --med "$MED" --low "$LOW" \
  --zero-shot "$ZERO_SHOT" --out "$RUNS/table1"
echo "[table1] written to $RUNS/table1.md"
