#!/usr/bin/env bash
# The first run: on a fresh machine, set up, prepare a real multilingual corpus (LibreOffice
# help in English, French and Czech), train a small multilingual transformer with GradVac
# all_layer on the CPU, score every trained and zero-shot direction, print sample
# translations next to their references, draw the gradient-similarity figures of Part I,
# and print the fairseq-interactive command to try the model.
#
#   bash scripts/demo.sh                          # about 16 minutes on 2 idle cores
#   METHOD=multilingual MINUTES=60 bash scripts/demo.sh
#
# Environment (defaults in brackets):
#   METHOD [gradvac_all_layer]  any configs/methods/*.args
#   SAMPLING [t1]               configs/sampling/*.args
#   MODEL [demo_cpu]            configs/models/*.args (transformer_base on a GPU)
#   DATA [libreoffice_demo]     configs/data/*.sh or a path; libreoffice = the 8 directions
#                               en<->{fr,cs,tr,hi}, full corpus (needs hours on a CPU)
#   MINUTES [14]                training budget (resumes count what is already done)
#   OMP_NUM_THREADS             threads of the training process; by default the cores other
#                               processes leave free now (a 1 s sample), at most 4
#   SEED [1]  BEAM [1]  SAMPLES [3] sample translations per shown direction
#   ZERO_SHOT                   zero-shot directions to score [the data config's]
#   RUN [runs/demo-METHOD-SAMPLING]  SKIP_SETUP=1 skips scripts/setup.sh
#   TRAIN_ARGS                  more fairseq-train options, e.g. "--max-update 800"
#   TRY_INPUT                   the sentence step 6 translates with fairseq-interactive
#                               ['Choose Format - Cells and click the Font tab.'; empty: the
#                               first sample's source]
# Stop it at any time: the same command resumes from the last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
step_start=
step() {  # step "N/6 what": print the time the previous step took, then the next step
  local now; now=$(date +%s)
  [ -z "$step_start" ] || echo "[demo]     ($((now - step_start)) s)"
  step_start=$now
  echo "[demo] $1"
}
# Threads: every core other processes leave free now (a 1-second /proc/stat sample, not the
# load average, which still counts what ran a minute ago), at least 1 and at most 4; on 2
# cores a 2-thread process next to other work slows down manyfold (scripts/choose_threads.py).
if [ -z "${OMP_NUM_THREADS:-}" ]; then
  read -r OMP_NUM_THREADS WHY < <(python3 scripts/choose_threads.py)
  echo "[demo] OMP_NUM_THREADS=$OMP_NUM_THREADS ($WHY; set OMP_NUM_THREADS to choose, 1 when sharing the machine)"
else
  echo "[demo] OMP_NUM_THREADS=$OMP_NUM_THREADS (set by you)"
fi
export OMP_NUM_THREADS
METHOD=${METHOD:-gradvac_all_layer} SAMPLING=${SAMPLING:-t1} MODEL=${MODEL:-demo_cpu}
DATA=${DATA:-libreoffice_demo} MINUTES=${MINUTES:-14} BEAM=${BEAM:-1} SAMPLES=${SAMPLES:-3}
RUN=${RUN:-runs/demo-$METHOD-$SAMPLING}
DEMO_ZERO_SHOT=${ZERO_SHOT:-}
DATA_CONFIG=configs/data/$DATA.sh
[ -f "$DATA" ] && DATA_CONFIG=$DATA
source "$DATA_CONFIG"
ZERO_SHOT=${DEMO_ZERO_SHOT:-$ZERO_SHOT}

step "1/6 set-up"
if [ -z "${SKIP_SETUP:-}" ]; then bash scripts/setup.sh; else echo "[demo] skipped (SKIP_SETUP)"; fi

step "2/6 real corpus -> $DATA_DIR"
eval "$PREPARE" 2>&1 | grep --line-buffered -v -E "^\S+ \| (prepare_libreoffice|fairseq)" || true
[ -f "$DATA_BIN/dict.en.txt" ] || { echo "[demo] corpus preparation failed" >&2; exit 1; }

step "3/6 training $METHOD ($SAMPLING, $MODEL, $LANG_PAIRS) for $MINUTES minutes -> $RUN"
echo "[demo]     full log: $RUN/train.log"
compact() {  # fairseq's log, shortened to the lines a person watches (python: no awk dialects)
  python3 -u -c '
import re, sys
def get(key, line):
    m = re.search(r"(?:^|[ ,|])" + key + r"[= ]([^ ,|]+)", line)
    return m.group(1) if m else "?"
for line in sys.stdin:
    line = line.rstrip("\n")
    if "| train_inner |" in line:
        u, loss, ppl, lr, ups, wall = (get(k, line) for k in ("num_updates", "loss", "ppl", "lr", "ups", "wall"))
        lr = "%.1e" % float(lr) if re.fullmatch(r"[0-9.e+-]+", lr) else lr
        extra = "".join("  %s %s" % (k, get(k, line)) for k in ("cos_mean", "corrected") if get(k, line) != "?")
        print("[train] update %5s  loss %6s  ppl %8s  lr %s  %5s updates/s  %5s s%s" % (
            u, loss, ppl, lr, ups, wall, extra), flush=True)
    elif "valid on" in line:
        best = get("best_loss", line)
        print("[valid] update %5s  loss %6s  ppl %8s%s" % (
            get("num_updates", line), get("loss", line), get("ppl", line),
            "" if best == "?" else "  (best loss %s)" % best), flush=True)
    elif "done training in" in line:
        print("[train] done training in" + line.split("done training in", 1)[1], flush=True)
    elif re.search(r"Error|error:|Traceback", line):
        print(line, flush=True)
'
}
if [ ! -f "$RUN/train.done" ]; then
  MINUTES=$MINUTES bash scripts/train.sh "$DATA_CONFIG" "$METHOD" "$SAMPLING" "$MODEL" "$RUN" \
    --log-interval 100 ${TRAIN_ARGS:-} | compact
  [ -f "$RUN/checkpoint_best.pt" ] || { echo "[demo] training failed: see $RUN/train.log" >&2; exit 1; }
  touch "$RUN/train.done"
fi

step "4/6 BLEU on the test set ($LANG_PAIRS; zero-shot ${ZERO_SHOT:-none}; greedy) and samples"
# Samples of the first two trained directions and the first zero-shot one.
SHOW=$(echo "$LANG_PAIRS" | cut -d, -f1-2)${ZERO_SHOT:+,${ZERO_SHOT%%,*}}
python3 -m fairseq_gradvac.evaluation.evaluate --checkpoint "$RUN/checkpoint_best.pt" --directions "$LANG_PAIRS" \
  --zero-shot "$ZERO_SHOT" --raw "$RAW" --post-process "$POST_PROCESS" --beam "$BEAM" \
  --max-tokens 20000 --max-len-a 1.5 --max-len-b 10 --out "$RUN/bleu" \
  --samples "$SAMPLES" --sample-directions "$SHOW"
echo "[demo] table in $RUN/bleu.md (and bleu.json), samples in bleu.samples.md beside it"

step "5/6 gradient similarities between the directions (Part I; recorded every 100 updates)"
python3 -m fairseq_gradvac.analysis.figures "$RUN" --out "$RUN/figures" --permutations 1000 \
  | grep -v -E "^\[figures\] (wrote|.*no within- or no between-group pair)" || true
echo "[demo] figures (PNG + CSV) in $RUN/figures"

step "6/6 try it yourself"
SPM=()
[ "$POST_PROCESS" = sentencepiece ] && SPM=(--spm-model "$DATA_DIR/spm.model")
TRY_INPUT=${TRY_INPUT-Choose Format - Cells and click the Font tab.}
python3 -m fairseq_gradvac.evaluation.evaluate --checkpoint "$RUN/checkpoint_best.pt" --try "${LANG_PAIRS%%,*}" \
  ${TRY_INPUT:+--try-input "$TRY_INPUT"} --raw "$RAW" --beam "$BEAM" --max-len-a 1.5 --max-len-b 10 \
  "${SPM[@]}" | tee "$RUN/try.txt"
FIRST=${LANG_PAIRS%%,*}
echo "The short way (one sentence per line on stdin):" | tee -a "$RUN/try.txt"
echo "    echo 'Choose Format - Cells and click the Font tab.' | bash scripts/translate.sh $RUN ${FIRST%-*} ${FIRST#*-}" \
  | tee -a "$RUN/try.txt"
now=$(date +%s)
echo "[demo]     ($((now - step_start)) s)"
echo "[demo] done in $(( (now - T0) / 60 )) min $(( (now - T0) % 60 )) s"
