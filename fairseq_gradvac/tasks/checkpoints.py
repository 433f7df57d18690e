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
previous ``checkpoint_last.pt`` whole. A ``checkpoint_last.pt`` damaged outside the plugin
(a full disk, a copy killed by hand) is named, and the run resumes from the newest intact
checkpoint of the save dir, with a warning.

fairseq makes one update before it checks ``--max-update`` and ``--stop-time-hours``: the
same command rerun after its run finished would train one more update and overwrite the
finished checkpoints. Here a training run that resumes from a finished checkpoint stops at
once, saying so, and changes nothing.
"""
import argparse
import functools
import glob
import logging
import os
import pickle
import sys
import zipfile

import torch
from fairseq import file_io
from fairseq.distributed import utils as distributed_utils

logger = logging.getLogger(__name__)

_training_task = None


def expect_restore(task) -> None:
    """Give ``task`` the combiner state of the checkpoint the trainer resumes from (after
    checking its languages); checkpoints read otherwise in the same process leave it alone."""
    global _training_task
    _training_task = task


def _hand_back(path, state) -> None:
    task = _training_task
    if task is None or task.combiner is None:
        return
    task_state = state.get("task_state") or {}
    task.check_languages(task_state)
    if not getattr(task.args, "reset_dataloader", False):
        history = state.get("optimizer_history") or [{}]
        task.restore_sampling(task_state.get("sampling_schedule"), int(history[-1].get("num_updates", 0)))
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


def _damaged(path) -> bool:
    """Whether ``path`` is not a whole torch checkpoint: empty, or a zip archive (torch's
    format) cut short or with a bad member. Only asked after loading failed: other errors
    (a class weights_only refuses, a missing module) are not damage."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is not None
    except (zipfile.BadZipFile, EOFError, OSError):
        return True


def _load_intact(load, path, *args, **kwargs):
    with torch.serialization.safe_globals(_checkpoint_globals()):
        try:
            return load(path, *args, **kwargs)
        except (EOFError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as e:
            if not _damaged(path):
                raise
            damage = e
    others = sorted((p for p in glob.glob(os.path.join(os.path.dirname(path) or ".", "checkpoint*.pt"))
                     if os.path.abspath(p) != os.path.abspath(path)), key=os.path.getmtime, reverse=True)
    intact = next((p for p in others if not _damaged(p)), None)
    what = f"{path} is damaged ({type(damage).__name__}: {damage})"
    if _training_task is None or not os.path.basename(path).startswith("checkpoint_last"):
        raise ValueError(f"{what}" + (f"; the newest intact checkpoint is {intact}: pass --restore-file {intact}"
                                      if intact else "; no other checkpoint next to it loads")) from None
    if intact is None:
        raise ValueError(f"{what} and no other checkpoint in {os.path.dirname(path)} is intact: "
                         f"remove it to start the run afresh") from None
    logger.warning(f"{what}; resuming from the newest intact checkpoint, {intact}")
    with torch.serialization.safe_globals(_checkpoint_globals()):
        return load(intact, *args, **kwargs)


def _stop_if_finished(state) -> None:
    """End a training run that resumes from a checkpoint its --max-update or
    --stop-time-hours already reached: fairseq would make one more update first."""
    task = _training_task
    if task is None or not isinstance(state, dict) or not state.get("optimizer_history"):
        return
    args = task.args
    if getattr(args, "reset_optimizer", False) or getattr(args, "finetune_from_model", None):
        return  # fairseq restarts the update count
    updates = state["optimizer_history"][-1].get("num_updates", 0)
    hours = (state.get("extra_state") or {}).get("previous_training_time", 0) / 3600
    max_update, stop_hours = getattr(args, "max_update", 0) or 0, getattr(args, "stop_time_hours", 0) or 0
    if max_update > 0 and updates >= max_update:
        why = f"{updates} updates, --max-update {max_update}"
    elif stop_hours > 0 and hours > stop_hours:
        why = f"{hours * 60:.1f} minutes of training, --stop-time-hours {stop_hours:g}"
    else:
        return
    logger.info(f"this run has already finished ({why}): nothing to train, the checkpoints in "
                f"{getattr(args, 'save_dir', '.')} are left as they are; raise the limit to train on")
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    sys.exit(0)


def wrap_load(load):
    @functools.wraps(load)
    def load_checkpoint_to_cpu(path, *args, **kwargs):
        state = _load_intact(load, path, *args, **kwargs)
        # Only the trainer's resume (it passes load_on_all_ranks) can find its run finished;
        # a probe or fairseq-generate reading a finished run's checkpoint goes on.
        resume = "load_on_all_ranks" in kwargs
        if resume and (kwargs["load_on_all_ranks"] or not torch.distributed.is_initialized()):
            _stop_if_finished(state)  # otherwise after the broadcast, on every worker at once
        if resume:  # not another checkpoint read in the same process (a probe, evaluate's options)
            _hand_back(path, state)
        return state

    load_checkpoint_to_cpu.wrapped_by_gradvac = True
    return load_checkpoint_to_cpu


def wrap_broadcast(broadcast):
    @functools.wraps(broadcast)
    def broadcast_object(*args, **kwargs):
        with torch.serialization.safe_globals(_checkpoint_globals()):
            obj = broadcast(*args, **kwargs)
        if isinstance(obj, dict) and "optimizer_history" in obj:  # the checkpoint the trainer resumes from
            _stop_if_finished(obj)
        return obj

    broadcast_object.wrapped_by_gradvac = True
    return broadcast_object


class RenamingPathManager(file_io.PathManager):
    """fairseq's PathManager whose ``copy`` never leaves a partial file at the destination."""

    @staticmethod
    def copy(src_path: str, dst_path: str, overwrite: bool = False):
        if not file_io.PathManager.supports_rename(dst_path):  # remote storage: as fairseq does
            return file_io.PathManager.copy(src_path, dst_path, overwrite)
        tmp = dst_path + ".tmp"
        file_io.PathManager.copy(src_path, tmp, overwrite=True)
        os.replace(tmp, dst_path)
        return dst_path

