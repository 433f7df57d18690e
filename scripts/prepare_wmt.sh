#!/usr/bin/env bash
# The paper's WMT setting (English <-> fr, cs, hi, tr) in the same layout as
# scripts/prepare_libreoffice.py, so the same training/eval commands work on it.
#
# Usage:  scripts/prepare_wmt.sh TRAIN_DIR [OUT=data/wmt]
#
# TRAIN_DIR: plain-text (detokenized) parallel training data that YOU download (WMT
# training corpora are large, some need registration), one sentence per line, named
#     train.en-fr.en train.en-fr.fr    train.en-cs.en train.en-cs.cs
#     train.en-hi.en train.en-hi.hi    train.en-tr.en train.en-tr.tr
# (a missing pair is skipped; LANGS="fr cs" restricts the languages). If TRAIN_DIR
# also holds valid.en-XX.{en,XX}, those replace the dev set below.
#
# Valid/test sets come from sacrebleu (`sacrebleu -t SET -l en-XX --echo src|ref`;
# needs internet once, cached in ~/.sacrebleu). Defaults, overridable by environment:
#     TEST_fr=wmt14  TEST_cs=wmt18  TEST_hi=wmt14  TEST_tr=wmt18
#     VALID_fr=wmt12 VALID_cs=wmt17 VALID_tr=wmt17 VALID_hi=""  (sacrebleu has no
#     en-hi dev set: without TRAIN_DIR/valid.en-hi.* the last $HI_DEV lines (1000) of
#     the en-hi training data become the dev set and leave training).
# Zero-shot: newstest2012/2013 are multi-way (cs, de, en, es, fr, ru), so valid/test
# fr-cs come from the cs and fr references of wmt12/wmt13 (used only when their
# English sides are identical line by line). WMT has no multi-way hi or tr sets, so
# there are no zero-shot pairs with hi or tr here (the LibreOffice data has them).
#
# Training pairs with an empty side or more than MAX_WORDS (250) words are dropped.
# Unlike prepare_libreoffice.py this does NOT remove test sentences from the
# training data (WMT test sets are from later years' news).
#
# The second half (one joint sentencepiece model, one shared dictionary, fairseq
# binaries, langs.txt, sizes.json; cached by a stamp) is
#     python scripts/prepare_libreoffice.py encode --out OUT ...
# with VOCAB (32000), SPM_LINES (1000000 per language) and WORKERS from the environment.
set -euo pipefail

TRAIN_DIR=${1:?usage: $0 TRAIN_DIR [OUT]}
OUT=${2:-data/wmt}
LANGS=${LANGS:-fr cs tr hi}
VOCAB=${VOCAB:-32000}
SPM_LINES=${SPM_LINES:-1000000}
WORKERS=${WORKERS:-$(nproc)}
MAX_WORDS=${MAX_WORDS:-250}
HI_DEV=${HI_DEV:-1000}
PYTHON=${PYTHON:-python3}
declare -A TEST=([fr]=${TEST_fr:-wmt14} [cs]=${TEST_cs:-wmt18} [hi]=${TEST_hi:-wmt14} [tr]=${TEST_tr:-wmt18})
declare -A VALID=([fr]=${VALID_fr:-wmt12} [cs]=${VALID_cs:-wmt17} [hi]=${VALID_hi:-} [tr]=${VALID_tr:-wmt17})

RAW=$OUT/raw
mkdir -p "$RAW"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# only rewrite a file when its content changes, so the encode stamp stays valid
put() { if ! cmp -s "$1" "$2"; then mv "$1" "$2"; else rm -f "$1"; fi; }
echo_set() {  # SET PAIR src|ref DEST
  sacrebleu -t "$1" -l "$2" --echo "$3" > "$TMP/echo"
  put "$TMP/echo" "$4"
}

KEPT=""
for l in $LANGS; do
  src=$TRAIN_DIR/train.en-$l.en tgt=$TRAIN_DIR/train.en-$l.$l
  if [[ ! -f $src || ! -f $tgt ]]; then echo "skip en-$l: no $src / $tgt" >&2; continue; fi
  KEPT="$KEPT $l"
  paste "$src" "$tgt" | awk -F'\t' -v m="$MAX_WORDS" \
    'NF==2 && $1 ~ /[^ ]/ && $2 ~ /[^ ]/ && split($1,a," ")<=m && split($2,b," ")<=m' \
    > "$TMP/train.tsv"
  if [[ -f $TRAIN_DIR/valid.en-$l.en && -f $TRAIN_DIR/valid.en-$l.$l ]]; then
    cp "$TRAIN_DIR/valid.en-$l.en" "$TMP/v.en"; cp "$TRAIN_DIR/valid.en-$l.$l" "$TMP/v.$l"
  elif [[ -n ${VALID[$l]} ]]; then
    sacrebleu -t "${VALID[$l]}" -l "en-$l" --echo src > "$TMP/v.en"
    sacrebleu -t "${VALID[$l]}" -l "en-$l" --echo ref > "$TMP/v.$l"
  else  # no dev set: hold out the tail of the training data
    tail -n "$HI_DEV" "$TMP/train.tsv" | cut -f1 > "$TMP/v.en"
    tail -n "$HI_DEV" "$TMP/train.tsv" | cut -f2 > "$TMP/v.$l"
    head -n -"$HI_DEV" "$TMP/train.tsv" > "$TMP/t.tsv" && mv "$TMP/t.tsv" "$TMP/train.tsv"
  fi
  cut -f1 "$TMP/train.tsv" > "$TMP/x" && put "$TMP/x" "$RAW/train.en-$l.en"
  cut -f2 "$TMP/train.tsv" > "$TMP/x" && put "$TMP/x" "$RAW/train.en-$l.$l"
  put "$TMP/v.en" "$RAW/valid.en-$l.en"
  put "$TMP/v.$l" "$RAW/valid.en-$l.$l"
  echo_set "${TEST[$l]}" "en-$l" src "$RAW/test.en-$l.en"
  echo_set "${TEST[$l]}" "en-$l" ref "$RAW/test.en-$l.$l"
done

# zero-shot fr-cs from the multi-way newstest2012 (valid) / newstest2013 (test)
if [[ " $KEPT " == *" fr "* && " $KEPT " == *" cs "* ]]; then
  for split_set in valid:wmt12 test:wmt13; do
    split=${split_set%%:*} set=${split_set#*:}
    sacrebleu -t "$set" -l en-fr --echo src > "$TMP/en1"
    sacrebleu -t "$set" -l en-cs --echo src > "$TMP/en2"
    if cmp -s "$TMP/en1" "$TMP/en2"; then
      echo_set "$set" en-fr ref "$RAW/$split.fr-cs.fr"
      echo_set "$set" en-cs ref "$RAW/$split.fr-cs.cs"
    else
      echo "warning: $set en-fr and en-cs English sides differ; no $split.fr-cs" >&2
    fi
  done
fi

# the LibreOffice order (en fr cs tr hi) restricted to the languages present
ORDERED=""
for l in fr cs tr hi; do if [[ " $KEPT " == *" $l "* ]]; then ORDERED="$ORDERED$l,"; fi; done
[[ -n $ORDERED ]] || { echo "no training pairs found in $TRAIN_DIR" >&2; exit 1; }
exec "$PYTHON" "$(dirname "$0")/prepare_libreoffice.py" encode --out "$OUT" \
  --langs "${ORDERED%,}" --vocab-size "$VOCAB" --spm-max-lines-per-lang "$SPM_LINES" \
  --workers "$WORKERS"
