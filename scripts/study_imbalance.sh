#!/usr/bin/env bash
# Does GradVac help, and where? (issue 16) The paper's Table 1 rows and its data-imbalance
# table at a budget where the models have stopped moving, with seeds and significance:
#
#   bash scripts/study_imbalance.sh        # the CPU study: hours; resumable, run it again
#
# 1. data: the corpus of DATA (prepared if missing); training rows per direction and the
#    sampling shares at T=1 and T=5 -> RUNS/data.md
# 2. budget: the baseline (multilingual T=5, the first CURVE_SEEDS seeds side by side)
#    trains in steps of EVERY updates, validated at each, until its validation loss lowered
#    by less than TOLERANCE (1%) over the last fifth of training (fairseq_gradvac.budget);
#    that update count is the budget of every run -> RUNS/budget.json
# 3. rows x seeds, JOBS at a time with one thread each: train to the budget (gradient
#    cosines every SIMILARITY_INTERVAL updates in similarity.csv), score every direction
#    and the zero-shot ones (BLEU, chrF, hypotheses kept), probe the checkpoints kept every
#    PROBE_EVERY updates on the multi-way validation rows (RUN/probe/similarity.csv)
# 4. tables: fairseq_gradvac.results_table (scores, mean ± std over seeds, paired bootstrap
#    against the baseline per seed) -> RUNS/results.md; what GradVac did
#    (fairseq_gradvac.analysis.conflicts) -> RUNS/conflicts/
#
# Environment (defaults in brackets):
#   DATA [libreoffice_study] configs/data/DATA.sh or a path   MODEL [demo_cpu] configs/models/
#   ROWS [multilingual_t1 multilingual_t5 pcgrad_all_layer_t5 gradvac_all_layer_t5
#         gradvac_all_layer_low_t5]  METHOD_TSAMPLING, METHOD a configs/methods/*.args;
#         METHOD_low is METHOD on the data config's LOW directions only (--gradvac-directions)
#   EXTRA_ROWS [none]  more rows, e.g. "gradvac_whole_model_t5 mgda_t5 gradnorm_t5"
#   SEEDS ["1 2 3"]  JOBS [2] runs side by side   CURVE_SEEDS [JOBS] baseline seeds of step 2
#   EVERY [500] validation interval = budget step (updates)   CURVE_MAX [40000] give up there
#   TOLERANCE [0.01]   BUDGET  a fixed budget in updates instead of step 2
#   SIMILARITY_INTERVAL [100]   PROBE_EVERY [2000] (0: no probe)   PROBE_SENTENCES [200]
#   BEAM [1]   MAX_LEN ["2 20"] hypotheses of at most a * source + b tokens
#   BOOTSTRAP [1000] resamples   RUNS [runs/study-DATA-MODEL]
#   TRAIN_ARGS  more fairseq-train options for every run   OMP_NUM_THREADS [1] per run
# Kill it at any moment: the same command continues (each run from its last checkpoint;
# finished trainings, scores and probes are skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-libreoffice_study} MODEL=${MODEL:-demo_cpu}
ROWS=${ROWS:-"multilingual_t1 multilingual_t5 pcgrad_all_layer_t5 gradvac_all_layer_t5 gradvac_all_layer_low_t5"}
ROWS="$ROWS ${EXTRA_ROWS:-}"
SEEDS=${SEEDS:-"1 2 3"} JOBS=${JOBS:-2} EVERY=${EVERY:-500} CURVE_MAX=${CURVE_MAX:-40000}
TOLERANCE=${TOLERANCE:-0.01} SIMILARITY_INTERVAL=${SIMILARITY_INTERVAL:-100}
PROBE_EVERY=${PROBE_EVERY:-2000} PROBE_SENTENCES=${PROBE_SENTENCES:-200} BEAM=${BEAM:-1}
MAX_LEN=${MAX_LEN:-"2 20"} BOOTSTRAP=${BOOTSTRAP:-1000} BASELINE=multilingual_t5
DATA_CONFIG=configs/data/$DATA.sh
[ -f "$DATA" ] && DATA_CONFIG=$DATA
[ -f "$DATA_CONFIG" ] || { echo "[study] no such data config: $DATA_CONFIG" >&2; exit 2; }
RUNS=${RUNS:-runs/study-$(basename "$DATA" .sh)-$MODEL}
source "$DATA_CONFIG"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
read -r -a SEED_LIST <<< "$SEEDS"
read -r MAX_LEN_A MAX_LEN_B <<< "$MAX_LEN"
CURVE_SEEDS=${CURVE_SEEDS:-$JOBS}
LOW_DIRECTIONS=$(for l in ${LOW//,/ }; do for d in "en-$l" "$l-en"; do
  [[ ,$LANG_PAIRS, == *,$d,* ]] && printf '%s,' "$d"; done; done)  # the trained ones
LOW_DIRECTIONS=${LOW_DIRECTIONS%,}

method_of() {  # ROW_SAMPLING -> "method sampling": refused unless both configs exist
  local spec=$1 row sampling
  [[ $spec =~ ^([a-z0-9_]+)_(t[0-9]+)$ ]] || { echo "[study] a row is METHOD_tN, not '$spec'" >&2; return 2; }
  row=${BASH_REMATCH[1]} sampling=${BASH_REMATCH[2]}
  [[ $row == *_low ]] && row=${row%_low}
  [ -f "configs/methods/$row.args" ] || { echo "[study] no such method: configs/methods/$row.args (row $spec)" >&2; return 2; }
  [ -f "configs/sampling/$sampling.args" ] || { echo "[study] no such sampling: configs/sampling/$sampling.args (row $spec)" >&2; return 2; }
  echo "$row $sampling"
}
for spec in $ROWS; do method_of "$spec" > /dev/null; done
[[ " $ROWS " == *" $BASELINE "* ]] || { echo "[study] ROWS must include the baseline $BASELINE" >&2; exit 2; }
[[ " $ROWS " != *"_low_"* || -n $LOW_DIRECTIONS ]] || { echo "[study] a _low row needs LOW in $DATA_CONFIG" >&2; exit 2; }
mkdir -p "$RUNS/.locks"

trained_updates() {  # the updates of RUN/checkpoint_last.pt (0 without one)
  [ -f "$1/checkpoint_last.pt" ] || { echo 0; return; }
  python3 -c "import sys, torch; print(torch.load(sys.argv[1], map_location='cpu', weights_only=False)['optimizer_history'][-1]['num_updates'])" "$1/checkpoint_last.pt"
}

train_run() {  # train_run ROW_SAMPLING SEED MAX_UPDATE: train (or resume) to MAX_UPDATE updates
  local spec=$1 seed=$2 max=$3 dir=$RUNS/${1}_seed$2 method sampling extra=() keep=-1 units=() p
  read -r method sampling <<< "$(method_of "$spec")"
  [[ $spec == *_low_* ]] && extra=(--gradvac-directions "$LOW_DIRECTIONS")
  [ "$PROBE_EVERY" -gt 0 ] && keep=$PROBE_EVERY
  if grep -q '^# bilingual' "configs/methods/$method.args"; then  # one model per direction
    mkdir -p "$RUNS/.configs"
    for p in ${LANG_PAIRS//,/ }; do
      printf 'source %q\nLANG_PAIRS=%s\n' "$(realpath "$DATA_CONFIG")" "$p" > "$RUNS/.configs/$p.sh"
      units+=("$dir/$p:$RUNS/.configs/$p.sh")
    done
  else
    units=("$dir:$DATA_CONFIG")
  fi
  for unit in "${units[@]}"; do
    local done
    done=$(trained_updates "${unit%%:*}")
    # fairseq resumed at --max-update would make one update more
    [ "$done" = "$max" ] && continue
    [ "$done" -lt "$max" ] || { echo "[study] ${unit%%:*} has $done updates, more than $max" >&2; return 1; }
    # shellcheck disable=SC2086  # TRAIN_ARGS is a list of options
    SEED=$seed SIMILARITY_INTERVAL=$SIMILARITY_INTERVAL MINUTES= bash scripts/train.sh "${unit#*:}" \
      "$method" "$sampling" "$MODEL" "$dir" "${extra[@]}" --max-update "$max" \
      --validate-interval-updates "$EVERY" --save-interval-updates "$EVERY" --keep-interval-updates 1 \
      --keep-interval-updates-pattern "$keep" --log-interval 100 ${TRAIN_ARGS:-} > /dev/null \
      || { echo "[study] training failed: ${unit%%:*}/train.log" >&2; return 1; }
  done
}

finish_run() {  # finish_run ROW_SAMPLING SEED: train to the budget, score, probe
  local spec=$1 seed=$2 dir=$RUNS/${1}_seed$2 t0 method worked=
  t0=$(date +%s)
  read -r method _ <<< "$(method_of "$spec")"
  if [ "$(cat "$dir/train.done" 2>/dev/null)" != "$BUDGET" ]; then
    echo "[study] train $spec seed $seed to $BUDGET updates -> $dir"; worked=1
    train_run "$spec" "$seed" "$BUDGET"
    echo "$BUDGET" > "$dir/train.done"
    echo "[study] trained $spec seed $seed: $(grep -o 'done training in [0-9.]* seconds' "$dir/train.log" | tail -1)"
  fi
  local units=("$dir") pairs=("$LANG_PAIRS") zero=("$ZERO_SHOT")
  if grep -q '^# bilingual' "configs/methods/$method.args"; then
    units=() pairs=() zero=()
    for p in ${LANG_PAIRS//,/ }; do units+=("$dir/$p") pairs+=("$p") zero+=(""); done
  fi
  for i in "${!units[@]}"; do
    [ -f "${units[$i]}/bleu.json" ] && continue
    echo "[study] score ${units[$i]}"; worked=1
    python3 -m fairseq_gradvac.evaluate --checkpoint "${units[$i]}/checkpoint_best.pt" \
      --directions "${pairs[$i]}" --zero-shot "${zero[$i]}" --raw "$RAW" --post-process "$POST_PROCESS" \
      --beam "$BEAM" --max-len-a "$MAX_LEN_A" --max-len-b "$MAX_LEN_B" --max-tokens 20000 \
      --out "${units[$i]}/bleu" > "${units[$i]}/evaluate.log" 2>&1 \
      || { echo "[study] scoring failed: ${units[$i]}/evaluate.log" >&2; return 1; }
  done
  if [ "$PROBE_EVERY" -gt 0 ] && [ ${#units[@]} -eq 1 ] && [ ! -f "$dir/probe.done" ]; then
    echo "[study] probe $dir"; worked=1
    python3 -m fairseq_gradvac.analysis.probe "$dir"/checkpoint_*_*.pt --split valid \
      --max-sentences "$PROBE_SENTENCES" --out "$dir/probe" > "$dir/probe.log" 2>&1 \
      || { echo "[study] probe failed: $dir/probe.log" >&2; return 1; }
    touch "$dir/probe.done"
  fi
  [ -z "$worked" ] || echo "[study] done $spec seed $seed ($(( $(date +%s) - t0 )) s)"
}

locked() {  # locked NAME COMMAND...: run COMMAND unless another process holds NAME's lock
  ( exec 9> "$RUNS/.locks/$1"; flock -n 9 || exit 0
    shift; "$@" )
}

echo "[study] $DATA_CONFIG, model $MODEL, rows: $ROWS; seeds: $SEEDS; $JOBS side by side, OMP_NUM_THREADS=$OMP_NUM_THREADS -> $RUNS"
[ -f "$LANG_DICT" ] || eval "$PREPARE"
python3 -m fairseq_gradvac.sampling_shares "$DATA_BIN" --lang-pairs "$LANG_PAIRS" --temperatures 1,5 \
  --out "$RUNS/data" 2> /dev/null

# 2. the budget, from the baseline's learning curve
if [ -n "${BUDGET:-}" ]; then
  echo "[study] budget: $BUDGET updates (set by BUDGET)"
else
  CURVE=$RUNS/${BASELINE}_seed${SEED_LIST[0]}
  budget_check() {
    python3 -m fairseq_gradvac.budget "$CURVE/train.log" --every "$EVERY" --tolerance "$TOLERANCE" \
      --out "$RUNS/budget.json"
  }
  until [ -f "$CURVE/train.log" ] && budget_check; do
    next=$(( ($(trained_updates "$CURVE") / EVERY + 1) * EVERY ))
    if [ "$next" -gt "$CURVE_MAX" ]; then
      echo "[study] the budget rule does not hold by CURVE_MAX=$CURVE_MAX updates: raise CURVE_MAX or set BUDGET" >&2
      exit 1
    fi
    echo "[study] learning curve: $BASELINE, seeds ${SEED_LIST[*]:0:$CURVE_SEEDS}, to $next updates"
    pids=()
    for seed in "${SEED_LIST[@]:0:$CURVE_SEEDS}"; do
      locked "${BASELINE}_seed$seed" train_run "$BASELINE" "$seed" "$next" & pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid"; done
  done
  BUDGET=$(python3 -c "import json; print(json.load(open('$RUNS/budget.json'))['budget'])")
fi

# 3. every row and seed, JOBS at a time
ALL=()
for spec in $ROWS; do for seed in "${SEED_LIST[@]}"; do ALL+=("$spec $seed"); done; done
worker() {
  local job
  for job in "${ALL[@]}"; do
    read -r spec seed <<< "$job"
    locked "${spec}_seed$seed" finish_run "$spec" "$seed" || return 1
  done
}
pids=()
for _ in $(seq "$JOBS"); do worker & pids+=($!); done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
[ "$failed" = 0 ] || { echo "[study] a run failed (above); the same command continues" >&2; exit 1; }
for job in "${ALL[@]}"; do
  read -r spec seed <<< "$job"
  [ -f "$RUNS/${spec}_seed$seed/train.done" ] || { echo "[study] $spec seed $seed not finished" >&2; exit 1; }
done

# 4. the tables
python3 -m fairseq_gradvac.results_table "$RUNS" --high "$HIGH" --med "$MED" --low "$LOW" \
  --zero-shot "$ZERO_SHOT" --baseline "$BASELINE" --bootstrap "$BOOTSTRAP" --out "$RUNS/results" > /dev/null
echo "[study] tables: $RUNS/results.md"
if compgen -G "$RUNS/*/similarity.csv" > /dev/null; then
  python3 -m fairseq_gradvac.analysis.conflicts "$RUNS" --window "$EVERY" --out "$RUNS/conflicts" > /dev/null
  echo "[study] what GradVac did: $RUNS/conflicts/conflicts.md"
else
  echo "[study] no gradient cosines recorded (a budget under SIMILARITY_INTERVAL=$SIMILARITY_INTERVAL updates): no conflicts tables"
fi
