"""scripts/prepare_libreoffice.py's steps, one module each: download, extract, align,
holdout, spm (sentencepiece), binarize; encode runs the last two on any raw corpus."""
