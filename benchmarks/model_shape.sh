#!/usr/bin/env bash
# Which small transformer learns fastest per CPU second here? Trains the multilingual row
# (T=5) with each shape for the same wall-clock budget, two shapes side by side with one
# thread each (as the CPU comparison runs), and prints the validation loss each reached:
# the lowest loss wins. Shapes differ from configs/models/small_cpu.args (d128, 3+3 layers,
# ffn 4d) in width only.
#
#   MINUTES=8 SHAPES="d64 d128 d192 d256" bash benchmarks/model_shape.sh
#
# Environment: DATA [libreoffice_small] (configs/data/DATA.sh or a path), MINUTES [8],
# SHAPES [d64 d128 d192 d256] (an even number: an odd last shape would run alone, faster),
# OUT [runs/model_shape]. Re-running prints the table of the runs already in OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-libreoffice_small} MINUTES=${MINUTES:-8} OUT=${OUT:-runs/model_shape}
read -r -a SHAPES <<< "${SHAPES:-d64 d128 d192 d256}"
for s in "${SHAPES[@]}"; do
  [[ $s =~ ^d[0-9]+$ ]] || { echo "shape '$s' is not dN (model width N)" >&2; exit 2; }
done
[ $(( ${#SHAPES[@]} % 2 )) -eq 0 ] || { echo "give an even number of shapes (they run in pairs)" >&2; exit 2; }
mkdir -p "$OUT"
train() {  # train SHAPE
  local d=${1#d}
  OMP_NUM_THREADS=1 MINUTES=$MINUTES bash scripts/train.sh "$DATA" multilingual t5 small_cpu "$OUT/$1" \
    --encoder-embed-dim "$d" --decoder-embed-dim "$d" \
    --encoder-ffn-embed-dim $((4 * d)) --decoder-ffn-embed-dim $((4 * d)) > "$OUT/$1.out" 2>&1
}
for ((i = 0; i < ${#SHAPES[@]}; i += 2)); do
  echo "[model_shape] ${SHAPES[i]} and ${SHAPES[i+1]}, $MINUTES minutes each, side by side"
  train "${SHAPES[i]}" & first=$!
  train "${SHAPES[i+1]}" & second=$!
  wait $first && wait $second || { echo "a run failed: see $OUT/*.out" >&2; exit 1; }
done
echo "| shape | parameters | updates | target tokens/s | valid loss at the end |"
echo "|---|---:|---:|---:|---:|"
for s in "${SHAPES[@]}"; do
  log=$OUT/$s/train.log
  params=$(grep -o 'num. shared model params: [0-9,]*' "$log" | tail -1 | grep -o '[0-9,]*$')
  last=$(grep "valid on 'valid' subset" "$log" | tail -1)
  updates=$(grep -o 'num_updates [0-9]*' <<< "$last" | grep -o '[0-9]*$')
  loss=$(grep -o '| loss [0-9.]*' <<< "$last" | grep -o '[0-9.]*$')
  wpb=$(grep '| train |' "$log" | tail -1 | grep -o '| wps [0-9.]*' | grep -o '[0-9.]*$')
  echo "| $s | $params | $updates | ${wpb:--} | $loss |"
done
