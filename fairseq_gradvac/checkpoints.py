"""fairseq checkpoints under torch >= 2.6, the combiner state's way back on resume, and
checkpoint copies a crash cannot tear.

fairseq 0.12 saves ``task.state_dict()`` in every checkpoint but gives it back only when
loading for generation, not on ``--restore-file``. Every checkpoint fairseq reads goes
through ``checkpoint_utils.load_checkpoint_to_cpu``; wrapped here, it (1) unpickles the
checkpoint's own configuration objects that torch's ``weights_only`` default rejects,
without turning the safety check off for anything else, and (2) hands the training task
its combiner state from the checkpoint the trainer resumes from. With several workers
fairseq loads the checkpoint on rank 0 and sends it to the others through
``distributed_utils.broadcast_object``, which unpickles with ``torch.load`` too: wrapped
the same way (1).

fairseq writes a checkpoint through a temporary file and a rename, then copies it to
``checkpoint_last.pt`` (and ``checkpoint_best.pt``) in place: a kill during that copy
leaves a truncated ``checkpoint_last.pt`` and the same command then fails to resume. Here
``checkpoint_utils`` copies through a temporary file and a rename too: a kill leaves the
previous ``checkpoint_last.pt`` whole.
"""
import argparse
import functools
import logging
import os

import torch
from fairseq import checkpoint_utils, file_io
from fairseq.distributed import utils as distributed_utils

logger = logging.getLogger(__name__)

_training_task = None


def expect_restore(task) -> None:
    """Give ``task`` the combiner state of the checkpoint the trainer loads next (after
    checking its languages)."""
    global _training_task
    _training_task = task


def _hand_back(path, state) -> None:
    task = _training_task
    if task is None or task.combiner is None:
        return
    task_state = state.get("task_state") or {}
    task.check_languages(task_state)
    saved = task_state.get("combiner")
    args = task.args
    if getattr(args, "finetune_from_model", None) and str(path) == str(args.finetune_from_model):
        logger.info(f"fine-tuning from {path}: the combiner starts afresh")
    elif saved is None:
        logger.warning(f"{path} holds no combiner state: {task.combiner.name} starts afresh")
    elif getattr(args, "reset_optimizer", False):
        logger.info(f"--reset-optimizer: {task.combiner.name} state in {path} is not restored")
    else:
        task.restore_combiner(saved)


def _checkpoint_globals():
    """Types a fairseq checkpoint pickles besides tensors: its argparse/omegaconf config,
    and (broadcast to other workers) fairseq's placeholders for the tensors sent apart."""
    import typing
    from collections import defaultdict

    from omegaconf import DictConfig, ListConfig
    from omegaconf.base import ContainerMetadata, Metadata
    from omegaconf.nodes import AnyNode

    return [argparse.Namespace, DictConfig, ListConfig, ContainerMetadata, Metadata, AnyNode,
            typing.Any, dict, list, int, defaultdict, distributed_utils._TensorPlaceholder]


def _wrap(load):
    @functools.wraps(load)
    def load_checkpoint_to_cpu(path, *args, **kwargs):
        with torch.serialization.safe_globals(_checkpoint_globals()):
            state = load(path, *args, **kwargs)
        _hand_back(path, state)
        return state

    load_checkpoint_to_cpu.wrapped_by_gradvac = True
    return load_checkpoint_to_cpu


def _wrap_broadcast(broadcast):
    @functools.wraps(broadcast)
    def broadcast_object(*args, **kwargs):
        with torch.serialization.safe_globals(_checkpoint_globals()):
            return broadcast(*args, **kwargs)

    broadcast_object.wrapped_by_gradvac = True
    return broadcast_object


class _RenamingPathManager(file_io.PathManager):
    """fairseq's PathManager whose ``copy`` never leaves a partial file at the destination."""

    @staticmethod
    def copy(src_path: str, dst_path: str, overwrite: bool = False):
        if not file_io.PathManager.supports_rename(dst_path):  # remote storage: as fairseq does
            return file_io.PathManager.copy(src_path, dst_path, overwrite)
        tmp = dst_path + ".tmp"
        file_io.PathManager.copy(src_path, tmp, overwrite=True)
        os.replace(tmp, dst_path)
        return dst_path


def install() -> None:
    if not getattr(checkpoint_utils.load_checkpoint_to_cpu, "wrapped_by_gradvac", False):
        checkpoint_utils.load_checkpoint_to_cpu = _wrap(checkpoint_utils.load_checkpoint_to_cpu)
    if not getattr(distributed_utils.broadcast_object, "wrapped_by_gradvac", False):
        distributed_utils.broadcast_object = _wrap_broadcast(distributed_utils.broadcast_object)
    checkpoint_utils.PathManager = _RenamingPathManager
