# The demo's corpus (scripts/demo.sh): LibreOffice help, en<->fr and en<->cs only, training
# sentences of at most 25 words, a 4k joint sentencepiece vocabulary, 200 valid and 500 test
# rows per direction (scoring time counts in the demo's budget); fr-cs and cs-fr zero-shot.
DATA_DIR=${DATA_DIR:-data/demo-frcs-w25-v4k}
DATA_BIN=$DATA_DIR/bin
LANG_DICT=$DATA_DIR/langs.txt
RAW=$DATA_DIR/raw
POST_PROCESS=sentencepiece
LANG_PAIRS=en-fr,fr-en,en-cs,cs-en
ZERO_SHOT=fr-cs,cs-fr
HIGH=fr,cs
MED=
LOW=
PREPARE="bash scripts/prepare_libreoffice.sh --out $DATA_DIR --langs fr,cs --max-words 25 --vocab-size 4000 --valid-size 200 --test-size 500"
