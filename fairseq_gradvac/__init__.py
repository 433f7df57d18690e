"""fairseq plugin (``--user-dir fairseq_gradvac``): GradVac and its baselines for
multilingual translation. The algorithms live in ``surgery/`` and need no fairseq: without
fairseq installed this package only skips registering its task."""
try:
    import fairseq  # noqa: F401
except ImportError:  # the pure-PyTorch engine (surgery/) stays usable
    fairseq = None

if fairseq is not None:
    from . import checkpoints
    from .tasks import multilingual_gradvac  # noqa: F401  (registers the task)

    checkpoints.install()
