"""Every change the plugin makes to fairseq's behaviour, in one place (fairseq 0.12.2/0.12.3).

A researcher debugging a run, or porting the plugin to another fairseq version, reads this
list first. Each change is made by a function here (what replaces fairseq's code lives where
it belongs: ``checkpoints.py``, ``data/direction_batches.py``); no other module assigns to
fairseq's modules or to the model (tests/test_layout.py checks).

At import (``install``, called by the package's ``__init__``):

1. The root logger's level is put back after ``import fairseq``: fairseq 0.12's
   ``models/wav2vec/wav2vec2_classification.py`` calls ``logging.basicConfig(level=DEBUG)``
   at import, which floods every tool with matplotlib's debug lines.
2. ``checkpoint_utils.load_checkpoint_to_cpu`` is wrapped (``checkpoints.py``): torch >= 2.6
   loads with ``weights_only``, which rejects the checkpoint's own configuration objects
   (fairseq 0.12 predates it), and fairseq 0.12 gives ``task.state_dict()`` back only when
   loading for generation, not on resume: the wrapper hands the task its combiner state.
3. ``distributed_utils.broadcast_object`` is wrapped the same way: with several workers the
   checkpoint reaches the other ranks through it (another ``torch.load``).
4. ``checkpoint_utils.PathManager`` is replaced by one whose ``copy`` writes a temporary file
   and renames it: fairseq copies ``checkpoint_last.pt`` in place, and a kill during the
   copy leaves a torn checkpoint that the same command cannot resume from.

Per run (called by the task):

5. ``by_direction``: the training set's class, fairseq's ``SampledMultiDataset`` or
   ``SampledMultiEpochDataset``, is swapped for a subclass (``data/direction_batches.py``)
   whose batches hold one direction (or are split by direction): fairseq mixes directions
   in a batch, and a per-direction gradient needs its own backward pass.
6. ``combine_instead_of_all_reduce``: the model's ``all_reduce_grads`` becomes the
   combination of the per-direction gradients. fairseq's trainer calls it (through the
   optimizer) after an update's last micro-batch and before rescaling and clipping, the
   one place where the per-direction gradients can become the update; ``legacy_ddp``'s
   all-reduce of the summed gradient is what it replaces.
7. ``resample``: a sampling schedule (``data/sampling_schedule.py``) gives the training set
   other sampling ratios at an epoch's start (``setup_sampling``, what fairseq's
   ``adjust_sampling`` calls after summing the ratios over workers, which fails on one
   worker: every worker computes the same ratios here) and has it draw that epoch again:
   fairseq's iterator has already called ``set_epoch`` for it with the old ratios, and
   ``set_epoch`` skips an epoch it has drawn.
"""
import logging

from fairseq import checkpoint_utils
from fairseq.distributed import utils as distributed_utils

from ..data import direction_batches
from . import checkpoints


def install(root_level: int) -> None:
    """Changes 1-4; ``root_level``: the root logger's level before ``import fairseq``.
    Idempotent: a second import of the plugin wraps nothing twice."""
    logging.getLogger().setLevel(root_level)
    if not getattr(checkpoint_utils.load_checkpoint_to_cpu, "wrapped_by_gradvac", False):
        checkpoint_utils.load_checkpoint_to_cpu = checkpoints.wrap_load(checkpoint_utils.load_checkpoint_to_cpu)
    if not getattr(distributed_utils.broadcast_object, "wrapped_by_gradvac", False):
        distributed_utils.broadcast_object = checkpoints.wrap_broadcast(distributed_utils.broadcast_object)
    checkpoint_utils.PathManager = checkpoints.RenamingPathManager


def by_direction(dataset, mode: str):
    """Change 5: ``dataset`` batches by direction (``mode``: split or single)."""
    return direction_batches.batch_by_direction(dataset, mode)


def resample(dataset, epoch: int, ratios, virtual_size) -> None:
    """Change 7: ``dataset`` (a SampledMultiDataset) draws ``epoch`` with ``ratios``."""
    dataset.setup_sampling(ratios, virtual_size)
    dataset._cur_epoch = None  # set_epoch(epoch) draws again
    dataset.set_epoch(epoch)


def combine_instead_of_all_reduce(model, combine) -> None:
    """Change 6: ``model.all_reduce_grads()`` calls ``combine()`` instead."""
    model.all_reduce_grads = combine
