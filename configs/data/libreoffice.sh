# The real CPU corpus (scripts/prepare_libreoffice.sh): en<->{fr,cs,tr,hi}, LibreOffice help.
DATA_DIR=${DATA_DIR:-data/libreoffice}
DATA_BIN=$DATA_DIR/bin
LANG_DICT=$DATA_DIR/langs.txt
RAW=$DATA_DIR/raw
POST_PROCESS=sentencepiece
LANG_PAIRS=en-fr,en-cs,en-hi,en-tr,fr-en,cs-en,hi-en,tr-en
ZERO_SHOT=fr-cs,cs-fr,fr-tr,tr-fr,cs-tr,tr-cs,fr-hi,hi-fr
# Resource levels for the data-imbalance table (training rows: fr, cs ~26k; tr ~17k; hi ~4k).
HIGH=fr,cs
MED=tr
LOW=hi
PREPARE="bash scripts/prepare_libreoffice.sh --out $DATA_DIR"
