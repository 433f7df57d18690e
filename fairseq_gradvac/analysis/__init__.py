"""Part I of the paper: the geometry of per-direction gradients.

Recording during training and probing of checkpoints write ``similarity.csv`` (raw cosines
of the original per-direction gradients, per direction pair and parameter group, from the
engine's Gram matrices); the figures and statistics read it.
"""
