"""fairseq plugin (``--user-dir fairseq_gradvac``): GradVac and its baselines for
multilingual translation. The algorithms live in ``surgery/`` and need no fairseq: without
fairseq installed this package only skips registering its task."""
import logging

_root_level = logging.getLogger().level
try:
    import fairseq  # noqa: F401
except ImportError:  # the pure-PyTorch engine (surgery/) stays usable
    fairseq = None
# Importing fairseq sets the root logger to DEBUG (fairseq/models/wav2vec/
# wav2vec2_classification.py calls logging.basicConfig(level=DEBUG)), which floods our own
# tools (figures, evaluate) with matplotlib's debug lines: undo it.
logging.getLogger().setLevel(_root_level)

if fairseq is not None:
    from . import checkpoints
    from .tasks import multilingual_gradvac  # noqa: F401  (registers the task)

    checkpoints.install()
