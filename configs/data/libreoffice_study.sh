# The data-imbalance study (scripts/study_imbalance.sh, issue 16): the LibreOffice corpus's
# 8 directions en<->{fr,cs,tr,hi} with the imbalance kept (no cap on training rows; hi
# low-resource, tr medium), shrunk as the demo's corpus is to fit a CPU budget: training
# sentences of at most 25 words, a 4k joint sentencepiece vocabulary. Multi-way valid
# (500) and test (1000) rows held out first, so every zero-shot direction is scored on the
# same sentences.
DATA_DIR=${DATA_DIR:-data/lo-study-w25-v4k}
DATA_BIN=$DATA_DIR/bin
LANG_DICT=$DATA_DIR/langs.txt
RAW=$DATA_DIR/raw
POST_PROCESS=sentencepiece
LANG_PAIRS=en-fr,fr-en,en-cs,cs-en,en-tr,tr-en,en-hi,hi-en
ZERO_SHOT=fr-cs,cs-fr,fr-tr,tr-fr,fr-hi,hi-fr,cs-tr,tr-cs,cs-hi,hi-cs,tr-hi,hi-tr
HIGH=fr,cs
MED=tr
LOW=hi
PREPARE="bash scripts/prepare_libreoffice.sh --out $DATA_DIR --max-words 25 --vocab-size 4000 --workers ${WORKERS:-1}"
