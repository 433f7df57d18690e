"""fairseq plugin (``--user-dir fairseq_gradvac``): GradVac and its baselines for
multilingual translation. The algorithms live in ``combiners/`` and need no fairseq: without
fairseq installed this package only skips registering its task. What the plugin changes in
fairseq is listed in ``tasks/fairseq_changes.py``."""
import logging

_root_level = logging.getLogger().level
try:
    import fairseq  # noqa: F401
except ImportError:  # the pure-PyTorch engine (combiners/) stays usable
    fairseq = None

if fairseq is not None:
    from .tasks import fairseq_changes, multilingual_gradvac  # noqa: F401  (registers the task)

    fairseq_changes.install(_root_level)
