# The CPU comparison of docs/results.md: the LibreOffice corpus shrunk to fit a CPU budget
# (sentences of at most 25 words, at most 10k training rows per pair, 4k sentencepiece
# vocabulary) and to the En->Any directions only.
DATA_DIR=${DATA_DIR:-data/lo-small}
DATA_BIN=$DATA_DIR/bin
LANG_DICT=$DATA_DIR/langs.txt
RAW=$DATA_DIR/raw
POST_PROCESS=sentencepiece
LANG_PAIRS=en-fr,en-cs,en-tr,en-hi
ZERO_SHOT=
HIGH=fr,cs
MED=tr
LOW=hi
PREPARE="bash scripts/prepare_libreoffice.sh --out $DATA_DIR --max-words 25 --vocab-size 4000 --max-train-per-pair 10000"
