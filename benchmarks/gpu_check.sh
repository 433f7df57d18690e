#!/usr/bin/env bash
# Everything a GPU must show, in one run of about 8 minutes on one GPU: first what only a GPU
# can check, then the speed numbers docs/performance.md asks for.
#
#   bash benchmarks/gpu_check.sh             # on a machine with a CUDA GPU
#   bash benchmarks/gpu_check.sh --dry-run   # the same steps on the CPU, tiny sizes (tested)
#
# 1. fairseq-train, a few updates on a synthetic corpus of K=8 directions, for every combiner
#    (and a loss weighting, FAMO and UW, also on fairseq's mixed batches)
#    x {--fp16, --amp} x {--direction-batching single, split}, on one GPU: each run must end
#    at its --max-update with a finite loss (the plain sum's weights, the exchange and the
#    combination on CUDA; the fp16 loss scaler)
# 2. two processes over NCCL on that one GPU (NCCL may refuse two ranks on one device: then
#    it says so)
# 3. target tokens/s of stock, split and single batches at K=8 and K=50, transformer base,
#    fp16 (benchmarks/step_overhead.py --directions)
# 4. the combine time of every combiner at K=8 on the transformer-base layout, as a ratio to
#    one plain sum (benchmarks/combine.py); goal: GradVac under 2 ms
# 5. one update on one GPU against stock, transformer base, fp16 (step_overhead.py); goal:
#    at most 1.10x
# Dry run: --cpu, --amp only (fairseq's --fp16 needs CUDA), two combiners, no NCCL, tiny
# models and a few repetitions: a check that the script works, not a measurement.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
FAILED=0
say() { printf '\n== %s\n' "$*"; }

if [ "$DRY" = 1 ]; then
  DEVICE=cpu COMBINERS="sum gradvac famo" PRECISIONS="amp" DEVICE_ARGS=(--cpu) PARALLEL=1
else
  python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "gpu_check: no CUDA device (run with --dry-run on a CPU)" >&2; exit 2; }
  DEVICE=cuda COMBINERS="sum pcgrad gradvac mgda gradnorm famo uw" PRECISIONS="fp16 amp" DEVICE_ARGS=() PARALLEL=4
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
python3 -c "import torch, fairseq; print('torch', torch.__version__, '| fairseq', fairseq.__version__, '| cuda', torch.version.cuda)"

say "1. every combiner for a few updates, on one $DEVICE"
PAIRS=$(python3 -m fairseq_gradvac.data.synthetic_corpus "$WORK/corpus" --directions 8 --rows 400 --min-rows 80 \
  | sed -n 's/^--lang-pairs //p')
one_run() {  # one_run COMBINER PRECISION BATCHING: prints one line of the table
  local c=$1 prec=$2 b=$3 dir=$WORK/$1-$2-$3 flags=() t0
  [ "$prec" = fp16 ] && flags=(--fp16)
  [ "$prec" = amp ] && flags=(--amp)
  t0=$(date +%s)
  fairseq-train "$WORK/corpus/bin" --user-dir fairseq_gradvac --task multilingual_gradvac \
    --lang-dict "$WORK/corpus/langs.txt" --lang-pairs "$PAIRS" --encoder-langtok tgt \
    --sampling-method temperature --sampling-temperature 5 --arch transformer --share-all-embeddings \
    --encoder-layers 2 --decoder-layers 2 --encoder-embed-dim 64 --decoder-embed-dim 64 \
    --encoder-ffn-embed-dim 128 --decoder-ffn-embed-dim 128 --encoder-attention-heads 2 \
    --decoder-attention-heads 2 --optimizer adam --lr 1e-3 --criterion label_smoothed_cross_entropy \
    --max-tokens 1000 --update-freq 2 --max-update 6 --gradient-combiner "$c" --combine-granularity all_layer \
    --direction-batching "$b" --ddp-backend legacy_ddp --num-workers 0 --seed 1 --no-save \
    --log-format simple --log-interval 1 --save-dir "$dir" "${flags[@]}" "${DEVICE_ARGS[@]}" > "$dir.log" 2>&1
  local rc=$? loss
  loss=$(grep -o 'train | epoch [0-9]* | loss [0-9.]*' "$dir.log" | tail -1 | awk '{print $NF}')
  if [ $rc = 0 ] && grep -q 'num_updates 6\b' "$dir.log" && [ -n "$loss" ]; then
    printf '| %s | %s | %s | ok | %s | %s s |\n' "$c" "$prec" "$b" "$loss" $(( $(date +%s) - t0 ))
  else
    printf '| %s | %s | %s | FAILED (rc %s) | %s | %s s |\n' "$c" "$prec" "$b" "$rc" "${loss:--}" $(( $(date +%s) - t0 ))
    tail -5 "$dir.log" | sed 's/^/    /'
  fi
}
export -f one_run
export WORK PAIRS DEVICE
export DEVICE_ARGS_STR="${DEVICE_ARGS[*]}"
echo "| combiner | precision | batching | result | last loss | time |"
echo "|---|---|---|---|---:|---:|"
# (a loss weighting also on fairseq's own mixed batches, its default)
lw=" $(python3 -c "from fairseq_gradvac.combiners import available_combiners, gradient_methods as g; print(' '.join(sorted(set(available_combiners()) - set(g()))))") "
for c in $COMBINERS; do for p in $PRECISIONS; do for b in single split $([[ $lw == *" $c "* ]] && echo mixed); do
  echo "$c $p $b"; done; done; done \
  | xargs -P "$PARALLEL" -L 1 bash -c 'DEVICE_ARGS=($DEVICE_ARGS_STR); one_run "$@"' _ > "$WORK/table.txt"
sort "$WORK/table.txt"
grep -q FAILED "$WORK/table.txt" && FAILED=1

say "2. two processes over NCCL on one GPU"
if [ "$DRY" = 1 ]; then
  echo "skipped in the dry run (NCCL needs CUDA; gloo's two workers are in the test suite)"
else
  torchrun --nproc_per_node 2 --no-python bash -c "fairseq-train '$WORK/corpus/bin' --user-dir fairseq_gradvac \
    --task multilingual_gradvac --lang-dict '$WORK/corpus/langs.txt' --lang-pairs '$PAIRS' --encoder-langtok tgt \
    --arch transformer --encoder-layers 2 --decoder-layers 2 --encoder-embed-dim 64 --decoder-embed-dim 64 \
    --optimizer adam --lr 1e-3 --max-tokens 1000 --max-update 4 --gradient-combiner gradvac \
    --combine-granularity all_layer --direction-batching single --fp16 --ddp-backend legacy_ddp --num-workers 0 \
    --no-save --log-format simple --log-interval 1 --distributed-world-size 2 --distributed-no-spawn \
    --distributed-init-method env:// --distributed-rank \$RANK --device-id 0 --save-dir '$WORK/nccl'" \
    > "$WORK/nccl.log" 2>&1
  if grep -q 'num_updates 4\b' "$WORK/nccl.log"; then
    echo "ok: 2 ranks on one GPU trained 4 updates over NCCL"
  elif grep -qi 'duplicate gpu' "$WORK/nccl.log"; then
    echo "NCCL refuses two ranks on one GPU ('Duplicate GPU detected'): multi-worker runs need 2 GPUs"
  else
    echo "FAILED:"; tail -8 "$WORK/nccl.log" | sed 's/^/    /'; FAILED=1
  fi
fi

if [ "$DRY" = 1 ]; then
  OVERHEAD=(--device cpu --quick --reps 2 --max-reps 2 --quiet 100) COMBINE=(--quick --reps 1 --slow-reps 1 --skip torchjd,libmtl)
  KS=8
else
  OVERHEAD=(--device cuda --sizes base --fp16 --reps 15) COMBINE=(--device cuda --reps 15 --skip libmtl)
  KS=8,50
fi
say "3. target tokens per second: stock, split and single batches at K=$KS"
python3 benchmarks/step_overhead.py "${OVERHEAD[@]}" --directions "$KS" 2>&1 | grep -v '^\s*$' | tail -12 || FAILED=1
say "4. combine time of every combiner at K=8 (ratio to one plain sum)"
python3 benchmarks/combine.py "${COMBINE[@]}" --tasks 8 --granularities all_layer 2>&1 | tail -12 || FAILED=1
say "5. one update against stock (ratio per update)"
python3 benchmarks/step_overhead.py "${OVERHEAD[@]}" --variants sum,gradvac 2>&1 | tail -8 || FAILED=1

say "gpu_check: $([ "$FAILED" = 0 ] && echo 'all checks passed' || echo 'SOME CHECKS FAILED (above)')"
exit "$FAILED"
