# The paper's WMT setting (scripts/prepare_wmt.sh): en<->{fr,cs,hi,tr}; needs internet and a GPU.
DATA_DIR=${DATA_DIR:-data/wmt}
DATA_BIN=$DATA_DIR/bin
LANG_DICT=$DATA_DIR/langs.txt
RAW=$DATA_DIR/raw
POST_PROCESS=sentencepiece
LANG_PAIRS=en-fr,en-cs,en-hi,en-tr,fr-en,cs-en,hi-en,tr-en
ZERO_SHOT=fr-cs,cs-fr
HIGH=fr,cs
MED=tr
LOW=hi
PREPARE="bash scripts/prepare_wmt.sh ${WMT_TRAIN_DIR:-data/wmt-train} $DATA_DIR"
