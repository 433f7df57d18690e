"""Evaluation: BLEU, chrF and off-target rates of every direction, and the study's tables."""
