#!/usr/bin/env bash
# Does GradVac help, and where? The paper's Table 1 rows and its data-imbalance table at a
# budget where the baseline has stopped moving (or the largest this machine affords), with
# seeds and significance, across as many work periods as it takes:
#
#   bash scripts/study_imbalance.sh        # the CPU study: hours; resumable, run it again
#
# Two places: RUNS, the checkpoints of runs in progress, outside the work tree (a machine
# handed back keeps them; if they are gone, only the runs in flight are lost), and RESULTS,
# in the repository: one result bundle per finished run (fairseq_gradvac.evaluation.study_bundle), the
# budget and its curve, the data table, the test references and the tables. A run with a
# bundle is done and skipped; the tables are built from the bundles alone.
#
# 1. data: the corpus of DATA (prepared if missing, into STUDY_CACHE); training rows per
#    direction and the sampling shares at T=1 and T=5 -> RESULTS/data.md
# 2. budget: the baseline (multilingual T=5, seeds 1..CURVE_SEEDS) trains in steps of EVERY
#    updates, validated at each, until the mean validation loss of those seeds lowered by
#    less than TOLERANCE (1%) over the last fifth of training, at two validations in a row
#    (fairseq_gradvac.evaluation.budget; candidates are multiples of 2 x EVERY, so half the budget is a
#    kept checkpoint), or until CURVE_MAX, the largest budget the study affords
#    -> RESULTS/budget.json, RESULTS/curve.csv
# 3. rows x seeds, JOBS at a time with one thread each: train to the budget (gradient
#    cosines of every layer every SIMILARITY_INTERVAL updates), score the checkpoints at the
#    budget and at half of it on every direction and the zero-shot ones (BLEU, chrF,
#    hypotheses), probe the checkpoints at multiples of PROBE_EVERY on the multi-way
#    validation rows, write the run's bundle -> RESULTS/ROW_seedN (COMMIT=1: and commit it)
# 4. tables from the bundles: fairseq_gradvac.evaluation.results_table (missing runs marked) at the
#    budget and at half -> RESULTS/results.md, results_half.md; what GradVac did
#    (fairseq_gradvac.analysis.conflicts) -> RESULTS/conflicts/
#
# Environment (defaults in brackets):
#   DATA [libreoffice_study] configs/data/DATA.sh or a path   MODEL [demo_cpu] configs/models/
#   ROWS [multilingual_t1 multilingual_t5 pcgrad_all_layer_t5 gradvac_all_layer_t5
#         gradvac_all_layer_low_t5]  METHOD_SAMPLING, METHOD a configs/methods/*.args,
#         SAMPLING a configs/sampling/*.args (t1, t5, cooldown);
#         METHOD_low is METHOD on the data config's LOW directions only (--gradvac-directions)
#   EXTRA_ROWS [none]  more rows, e.g. "gradvac_whole_model_t5 mgda_t5 gradnorm_t5"
#   SEEDS ["1 2 3"]  JOBS [2] runs side by side   CURVE_SEEDS [2] baseline seeds of step 2
#   EVERY [500] validation and checkpoint interval (updates)   CURVE_MAX [5000] the cap
#   TOLERANCE [0.01]   BUDGET  a fixed budget in updates instead of step 2
#   SIMILARITY_INTERVAL [100]   PROBE_EVERY [2000] (0: no probe)   PROBE_SENTENCES [200]
#   BEAM [1]   MAX_LEN ["2 20"] hypotheses of at most a * source + b tokens
#   BOOTSTRAP [10000] resamples   STUDY_CACHE [~/.cache/fairseq_gradvac/study]
#   RUNS [STUDY_CACHE/DATA-MODEL]   RESULTS [docs/data/study/DATA-MODEL]   COMMIT [0]
#   CODE_COMMIT [git rev-parse HEAD] the commit recorded in the bundles (for a frozen copy of
#   the code: run it from `git archive COMMIT` outside the work tree, RESULTS in the repository)
#   TRAIN_ARGS  more fairseq-train options for every run   OMP_NUM_THREADS [1] per run
# Kill it at any moment: the same command continues (each run from its last checkpoint;
# finished trainings, scores, probes and bundles are skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-libreoffice_study} MODEL=${MODEL:-demo_cpu}
ROWS=${ROWS:-"multilingual_t1 multilingual_t5 pcgrad_all_layer_t5 gradvac_all_layer_t5 gradvac_all_layer_low_t5"}
ROWS="$ROWS ${EXTRA_ROWS:-}"
SEEDS=${SEEDS:-"1 2 3"} JOBS=${JOBS:-2} EVERY=${EVERY:-500} CURVE_MAX=${CURVE_MAX:-5000}
TOLERANCE=${TOLERANCE:-0.01} SIMILARITY_INTERVAL=${SIMILARITY_INTERVAL:-100}
PROBE_EVERY=${PROBE_EVERY:-2000} PROBE_SENTENCES=${PROBE_SENTENCES:-200} BEAM=${BEAM:-1}
MAX_LEN=${MAX_LEN:-"2 20"} BOOTSTRAP=${BOOTSTRAP:-10000} BASELINE=multilingual_t5 COMMIT=${COMMIT:-0}
DATA_CONFIG=configs/data/$DATA.sh
[ -f "$DATA" ] && DATA_CONFIG=$DATA
[ -f "$DATA_CONFIG" ] || { echo "[study] no such data config: $DATA_CONFIG" >&2; exit 2; }
STUDY=$(basename "$DATA" .sh)-$MODEL
STUDY_CACHE=${STUDY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fairseq_gradvac/study}
RUNS=${RUNS:-$STUDY_CACHE/$STUDY} RESULTS=${RESULTS:-docs/data/study/$STUDY}
RESULTS=$(realpath -m "$RESULTS")  # absolute: git -C works from a frozen copy too
# the prepared corpus lives beside the checkpoints that were trained on it
export DATA_DIR=${DATA_DIR:-$STUDY_CACHE/data/$(basename "$DATA" .sh)}
source "$DATA_CONFIG"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# the commit of the code that trains (a copy of the code outside git says it with CODE_COMMIT)
CODE_COMMIT=${CODE_COMMIT:-$(git rev-parse HEAD 2> /dev/null || echo unknown)}
read -r -a SEED_LIST <<< "$SEEDS"
read -r MAX_LEN_A MAX_LEN_B <<< "$MAX_LEN"
CURVE_SEEDS=${CURVE_SEEDS:-2}
[ "$CURVE_SEEDS" -le "${#SEED_LIST[@]}" ] || CURVE_SEEDS=${#SEED_LIST[@]}
LOW_DIRECTIONS=$(for l in ${LOW//,/ }; do for d in "en-$l" "$l-en"; do
  [[ ,$LANG_PAIRS, == *,$d,* ]] && printf '%s,' "$d"; done; done)  # the trained ones
LOW_DIRECTIONS=${LOW_DIRECTIONS%,}

method_of() {  # ROW_SAMPLING -> "method sampling": refused unless both configs exist
  local spec=$1 row sampling
  [[ $spec =~ ^([a-z0-9_]+)_(t[0-9]+|[a-z]+)$ ]] || { echo "[study] a row is METHOD_SAMPLING (SAMPLING: tN or a schedule, e.g. cooldown), not '$spec'" >&2; return 2; }
  row=${BASH_REMATCH[1]} sampling=${BASH_REMATCH[2]}
  [[ $row == *_low ]] && row=${row%_low}
  [ -f "configs/methods/$row.args" ] || { echo "[study] no such method: configs/methods/$row.args (row $spec)" >&2; return 2; }
  [ -f "configs/sampling/$sampling.args" ] || { echo "[study] no such sampling: configs/sampling/$sampling.args (row $spec)" >&2; return 2; }
  echo "$row $sampling"
}
for spec in $ROWS; do method_of "$spec" > /dev/null; done
[[ " $ROWS " == *" $BASELINE "* ]] || { echo "[study] ROWS must include the baseline $BASELINE" >&2; exit 2; }
[[ " $ROWS " != *"_low_"* || -n $LOW_DIRECTIONS ]] || { echo "[study] a _low row needs LOW in $DATA_CONFIG" >&2; exit 2; }
mkdir -p "$RUNS/.locks" "$RESULTS"

commit() {  # commit MESSAGE PATH...: commit only PATHs (COMMIT=1) in the repository that holds
  # RESULTS (the driver may run from a copy of the code frozen at a commit), retrying while git is busy
  [ "$COMMIT" = 1 ] || return 0
  local msg=$1 try; shift
  for try in $(seq 30); do
    if git -C "$RESULTS" add -- "$@" 2> /dev/null && { git -C "$RESULTS" diff --cached --quiet -- "$@" ||
        git -C "$RESULTS" commit -q -m "$msg" -- "$@"; }; then
      echo "[study] committed: $msg"; return 0
    fi
    sleep 2
  done
  echo "[study] could not commit $* (git busy); commit it by hand" >&2
}

trained_updates() {  # the updates of RUN/checkpoint_last.pt (0 without one)
  [ -f "$1/checkpoint_last.pt" ] || { echo 0; return; }
  python3 -c "import sys, torch; print(torch.load(sys.argv[1], map_location='cpu', weights_only=False)['optimizer_history'][-1]['num_updates'])" "$1/checkpoint_last.pt"
}

units_of() {  # units_of ROW_SAMPLING: "folder:data config" per model (a bilingual row: one per direction)
  local spec=$1 dir=$RUNS/${1}_seed$2 method p
  read -r method _ <<< "$(method_of "$spec")"
  if grep -q '^# bilingual' "configs/methods/$method.args"; then
    mkdir -p "$RUNS/.configs"
    for p in ${LANG_PAIRS//,/ }; do
      printf 'source %q\nLANG_PAIRS=%s\n' "$(realpath "$DATA_CONFIG")" "$p" > "$RUNS/.configs/$p.sh"
      echo "$dir/$p:$RUNS/.configs/$p.sh:$p:"
    done
  else
    echo "$dir:$DATA_CONFIG:$LANG_PAIRS:$ZERO_SHOT"
  fi
}

train_command() {  # train_command ROW_SAMPLING SEED MAX_UPDATE CONFIG SAVE [DRY_RUN]
  local spec=$1 seed=$2 max=$3 method sampling extra=()
  read -r method sampling <<< "$(method_of "$spec")"
  [[ $spec == *_low_* ]] && extra=(--gradvac-directions "$LOW_DIRECTIONS")
  # every interval checkpoint is kept: half the budget is scored, multiples of PROBE_EVERY probed
  # shellcheck disable=SC2086  # TRAIN_ARGS is a list of options
  DRY_RUN=${6:-} SEED=$seed SIMILARITY_INTERVAL=$SIMILARITY_INTERVAL MINUTES= bash scripts/train.sh "$4" \
    "$method" "$sampling" "$MODEL" "$5" "${extra[@]}" --similarity-granularity all_layer --max-update "$max" \
    --validate-interval-updates "$EVERY" --save-interval-updates "$EVERY" --keep-interval-updates 1 \
    --keep-interval-updates-pattern "$EVERY" --log-interval 100 ${TRAIN_ARGS:-}
}

train_run() {  # train_run ROW_SAMPLING SEED MAX_UPDATE: train (or resume) to MAX_UPDATE updates
  local spec=$1 seed=$2 max=$3 unit dir config done
  while IFS=: read -r dir config _ _; do
    done=$(trained_updates "$dir")
    # fairseq resumed at --max-update would make one update more
    [ "$done" = "$max" ] && continue
    [ "$done" -lt "$max" ] || { echo "[study] $dir has $done updates, more than $max" >&2; return 1; }
    mkdir -p "$dir"
    [ -s "$dir/commit.txt" ] || echo "$CODE_COMMIT" > "$dir/commit.txt"
    train_command "$spec" "$seed" "$max" "$config" "$dir" > /dev/null \
      || { echo "[study] training failed: $dir/train.log" >&2; return 1; }
  done < <(units_of "$spec" "$seed")
}

score() {  # score CHECKPOINT PAIRS ZERO_SHOT OUT
  [ -f "$4.json" ] && return 0
  echo "[study] score $1"
  python3 -m fairseq_gradvac.evaluation.evaluate --checkpoint "$1" --directions "$2" --zero-shot "$3" --raw "$RAW" \
    --post-process "$POST_PROCESS" --beam "$BEAM" --max-len-a "$MAX_LEN_A" --max-len-b "$MAX_LEN_B" \
    --max-tokens 20000 --out "$4" > "$4.log" 2>&1 \
    || { echo "[study] scoring failed: $4.log" >&2; return 1; }
}

bundle_budget() {  # the budget a bundle was trained to
  python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['budget'])" "$1/run.json"
}

finish_run() {  # finish_run ROW_SAMPLING SEED: train to the budget, score, probe, bundle
  local spec=$1 seed=$2 dir=$RUNS/${1}_seed$2 bundle=$RESULTS/${1}_seed$2 t0 unit config pairs zero half u
  if [ -f "$bundle/run.json" ]; then
    [ "$(bundle_budget "$bundle")" = "$BUDGET" ] && return 0
    echo "[study] $bundle was trained to $(bundle_budget "$bundle") updates, but the budget is $BUDGET: remove one of them" >&2
    return 1
  fi
  t0=$(date +%s)
  if [ "$(cat "$dir/train.done" 2>/dev/null)" != "$BUDGET" ]; then
    echo "[study] train $spec seed $seed to $BUDGET updates -> $dir"
    train_run "$spec" "$seed" "$BUDGET" || return 1
    echo "$BUDGET" > "$dir/train.done"
    echo "[study] trained $spec seed $seed: $(grep -o 'done training in [0-9.]* seconds' "$dir"/train.log "$dir"/*/train.log 2>/dev/null | tail -1)"
  fi
  while IFS=: read -r unit config pairs zero; do
    train_command "$spec" "$seed" "$BUDGET" "$config" "$unit" 1 > "$unit/command.txt" || return 1
    score "$unit/checkpoint_last.pt" "$pairs" "$zero" "$unit/bleu" || return 1
    half=$(compgen -G "$unit/checkpoint_*_$HALF.pt" | head -1) \
      || { echo "[study] no checkpoint at half the budget ($HALF updates) in $unit" >&2; return 1; }
    mkdir -p "$unit/half"
    score "$half" "$pairs" "$zero" "$unit/half/bleu" || return 1
  done < <(units_of "$spec" "$seed")
  if [ "$PROBE_EVERY" -gt 0 ] && [ -f "$dir/checkpoint_last.pt" ] && [ ! -f "$dir/probe.done" ]; then
    local probes=()
    for ((u = PROBE_EVERY; u <= BUDGET; u += PROBE_EVERY)); do probes+=($(compgen -G "$dir/checkpoint_*_$u.pt" || true)); done
    echo "[study] probe $dir (${#probes[@]} checkpoints)"
    python3 -m fairseq_gradvac.analysis.probe "${probes[@]}" --split valid \
      --max-sentences "$PROBE_SENTENCES" --out "$dir/probe" > "$dir/probe.log" 2>&1 \
      || { echo "[study] probe failed: $dir/probe.log" >&2; return 1; }
    touch "$dir/probe.done"
  fi
  python3 -m fairseq_gradvac.evaluation.study_bundle "$dir" "$bundle" --budget "$BUDGET" --half "$HALF" \
    --references "$RESULTS/references" --row "$spec" --seed "$seed" --command-file "$dir/command.txt" \
    --commit "$(cat "$dir/commit.txt" 2>/dev/null || echo "$CODE_COMMIT")" || return 1
  commit "study $STUDY: bundle ${spec}_seed$seed (budget $BUDGET)" "$bundle" "$RESULTS/references"
  echo "[study] done $spec seed $seed ($(( $(date +%s) - t0 )) s)"
}

locked() {  # locked NAME COMMAND...: run COMMAND unless another process holds NAME's lock
  ( exec 9> "$RUNS/.locks/$1"; flock -n 9 || exit 0
    shift; "$@" )
}

echo "[study] $DATA_CONFIG, model $MODEL, rows: $ROWS; seeds: $SEEDS; $JOBS side by side, OMP_NUM_THREADS=$OMP_NUM_THREADS; checkpoints in $RUNS, bundles in $RESULTS"
[ -f "$LANG_DICT" ] || eval "$PREPARE"
if [ ! -f "$RESULTS/data.json" ]; then
  python3 -m fairseq_gradvac.evaluation.sampling_shares "$DATA_BIN" --lang-pairs "$LANG_PAIRS" --temperatures 1,5 \
    --out "$RESULTS/data" 2> /dev/null
  commit "study $STUDY: training rows and sampling shares" "$RESULTS/data.json" "$RESULTS/data.md"
fi

# 2. the budget: fixed, kept from an earlier period, or from the baseline's learning curve
budget_of() { python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['budget'] or '')" "$1"; }
KEPT=
[ -f "$RESULTS/budget.json" ] && KEPT=$(budget_of "$RESULTS/budget.json")
if [ -n "${BUDGET:-}" ]; then
  if [ -n "$KEPT" ] && [ "$KEPT" != "$BUDGET" ]; then
    echo "[study] BUDGET=$BUDGET, but $RESULTS/budget.json says $KEPT updates: use another RESULTS or remove it" >&2
    exit 2
  fi
  echo "[study] budget: $BUDGET updates (set by BUDGET)"
  [ -n "$KEPT" ] || printf '{"budget": %s, "holds": false, "capped": false, "fixed": true}\n' "$BUDGET" > "$RESULTS/budget.json"
elif [ -n "$KEPT" ]; then
  BUDGET=$KEPT
  echo "[study] budget: $BUDGET updates (kept in $RESULTS/budget.json)"
else
  CURVE_RUNS=()
  for seed in "${SEED_LIST[@]:0:$CURVE_SEEDS}"; do CURVE_RUNS+=("$RUNS/${BASELINE}_seed$seed"); done
  budget_check() {
    local logs=() r
    for r in "${CURVE_RUNS[@]}"; do [ -f "$r/train.log" ] || return 1; logs+=("$r/train.log"); done
    python3 -m fairseq_gradvac.evaluation.budget "${logs[@]}" --every $((2 * EVERY)) --cap "$CURVE_MAX" \
      --tolerance "$TOLERANCE" --out "$RUNS/budget.json" --curve-out "$RUNS/curve.csv"
  }
  until budget_check; do
    next=$(( ($(trained_updates "${CURVE_RUNS[0]}") / EVERY + 1) * EVERY ))
    if [ "$next" -gt "$CURVE_MAX" ]; then
      echo "[study] no budget by CURVE_MAX=$CURVE_MAX updates (a cap that is not a multiple of 2 x EVERY?)" >&2
      exit 1
    fi
    echo "[study] learning curve: $BASELINE, seeds ${SEED_LIST[*]:0:$CURVE_SEEDS}, to $next updates"
    pids=()
    for seed in "${SEED_LIST[@]:0:$CURVE_SEEDS}"; do
      locked "${BASELINE}_seed$seed" train_run "$BASELINE" "$seed" "$next" & pids+=($!)
      [ ${#pids[@]} -lt "$JOBS" ] || { wait "${pids[0]}"; pids=("${pids[@]:1}"); }
    done
    for pid in "${pids[@]}"; do wait "$pid"; done
  done
  cp "$RUNS/curve.csv" "$RESULTS/curve.csv"
  cp "$RUNS/budget.json" "$RESULTS/budget.json"
  BUDGET=$(budget_of "$RESULTS/budget.json")
fi
commit "study $STUDY: the budget ($BUDGET updates)" "$RESULTS/budget.json" $([ -f "$RESULTS/curve.csv" ] && echo "$RESULTS/curve.csv")
HALF=$(( BUDGET / 2 ))
if [ $(( HALF % EVERY )) -ne 0 ]; then
  echo "[study] half the budget ($HALF updates) is not a multiple of EVERY=$EVERY: no checkpoint there to score" >&2
  exit 2
fi

# 3. every row and seed, JOBS at a time; the runs furthest along first (the learning curve's
# are trained already), so that a work period ends with as many bundles as it can
progress() {  # the newest interval checkpoint's update count of a run (0 without one)
  compgen -G "$RUNS/$1/checkpoint_*_*.pt" > /dev/null || { echo 0; return; }
  for f in "$RUNS/$1"/checkpoint_*_*.pt; do f=${f##*_}; echo "${f%.pt}"; done | sort -n | tail -1
}
ALL=()
while read -r _ spec seed; do ALL+=("$spec $seed"); done < <(
  i=0; for spec in $ROWS; do for seed in "${SEED_LIST[@]}"; do
    printf '%s %s %s %s\n' "$(progress "${spec}_seed$seed")" $((i++)) "$spec" "$seed"
  done; done | sort -k1,1nr -k2,2n | cut -d' ' -f2-)
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

# 4. the tables, from the bundles alone
EXPECT=$(for spec in $ROWS; do printf '%s,' "$spec"; done)
for at in full half; do
  out=$RESULTS/results; [ "$at" = half ] && out=$RESULTS/results_half
  python3 -m fairseq_gradvac.evaluation.results_table "$RESULTS" --at "$at" --high "$HIGH" --med "$MED" --low "$LOW" \
    --zero-shot "$ZERO_SHOT" --baseline "$BASELINE" --bootstrap "$BOOTSTRAP" --expect "${EXPECT%,}" \
    --seeds "${SEEDS// /,}" --out "$out" > /dev/null
done
echo "[study] tables: $RESULTS/results.md (at half the budget: $RESULTS/results_half.md)"
if compgen -G "$RESULTS/*/similarity.csv" > /dev/null; then
  python3 -m fairseq_gradvac.analysis.conflicts "$RESULTS" --window "$EVERY" --out "$RESULTS/conflicts" > /dev/null
  echo "[study] what GradVac did: $RESULTS/conflicts/conflicts.md"
else
  echo "[study] no gradient cosines recorded (a budget under SIMILARITY_INTERVAL=$SIMILARITY_INTERVAL updates): no conflicts tables"
fi
commit "study $STUDY: tables" "$RESULTS"
