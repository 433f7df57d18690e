"""The ``multilingual_gradvac`` task: fairseq's temperature-sampled multilingual task whose
training step computes one gradient per translation direction and combines them.

Data, dictionaries, language tokens, sampling and inference are fairseq's
``translation_multi_simple_epoch``; this task only
1. collates each training minibatch into one batch per direction (data/direction_batches.py),
2. runs the stock forward/backward once per direction, into that direction's row of a
   [K, P] buffer (direction_gradients.py),
3. combines the rows with the chosen method (surgery/) when the trainer reaches its
   gradient all-reduce point, after the last ``--update-freq`` micro-batch and before the
   gradients are rescaled, clipped and applied.
"""
import argparse
import contextlib
import logging
import math
import os
from collections import defaultdict

import torch
from fairseq import metrics
from fairseq.tasks import register_task
from fairseq.tasks.translation_multi_simple_epoch import TranslationMultiSimpleEpochTask

from .. import checkpoints
from ..data.direction_batches import batch_by_direction
from ..direction_gradients import DirectionGradients
from ..surgery import GRANULARITIES, ParameterGroups, available_combiners, build_combiner

logger = logging.getLogger(__name__)


def _directions_option(value):
    return [d.strip() for d in value.split(",") if d.strip()] if value else None


def _finite_option(value):
    """A float option that refuses nan/inf here, where argparse's error names the option
    (the combiners refuse them too, but do not know the option's name)."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {value!r}")
    return number


@register_task("multilingual_gradvac")
class MultilingualGradVacTask(TranslationMultiSimpleEpochTask):
    """Multilingual translation trained with GradVac or one of its baselines."""

    @staticmethod
    def add_args(parser):
        TranslationMultiSimpleEpochTask.add_args(parser)
        # fmt: off
        group = parser.add_argument_group("gradient combination (fairseq_gradvac)")
        group.add_argument("--gradient-combiner", default="gradvac", choices=available_combiners(),
                           help="how the per-direction gradients become one update: sum (plain "
                                "multilingual training), pcgrad, gradvac, mgda or gradnorm")
        group.add_argument("--combine-granularity", default="all_layer", choices=GRANULARITIES,
                           help="parameter groups the combiner works on (Table 1 of the paper)")
        group.add_argument("--gradvac-beta", type=_finite_option, default=1e-2,
                           help="EMA decay of GradVac's similarity targets (paper: 1e-2)")
        group.add_argument("--gradvac-fixed-target", type=_finite_option, default=None,
                           help="use this fixed similarity target instead of the EMA (fixed_obj)")
        group.add_argument("--gradvac-directions", type=_directions_option, default=None,
                           metavar="PAIRS",
                           help="comma-separated directions GradVac/PCGrad modify (default: all), "
                                "e.g. the low-resource ones: en-hi,hi-en")
        group.add_argument("--gradnorm-alpha", type=_finite_option, default=1.5,
                           help="GradNorm's asymmetry alpha")
        group.add_argument("--gradnorm-lr", type=_finite_option, default=0.025,
                           help="learning rate of GradNorm's task weights")
        group.add_argument("--gradnorm-layer", default=None, metavar="NAME",
                           help="the layer whose gradient norms GradNorm balances: a module or "
                                "parameter name, e.g. decoder.layers.0 (default: the last decoder "
                                "layer, the last shared layer as in Chen et al.); the weights "
                                "apply to the whole gradients whatever --combine-granularity")
        # fmt: on

    def __init__(self, args, langs, dicts, training):
        if training and getattr(args, "distributed_world_size", 1) > 1:
            raise ValueError(
                "multilingual_gradvac combines per-direction gradients on one worker; with "
                f"--distributed-world-size {args.distributed_world_size} each worker would "
                "combine only its local gradients. Train with one worker."
            )
        super().__init__(args, langs, dicts, training)
        self.combiner = self._build_combiner(args) if training else None
        self._grads = None  # DirectionGradients, built with the model's parameters
        self._grads_model = None  # ... of this model
        self._losses = defaultdict(float)  # per-direction loss and ntokens of this update
        self._ntokens = defaultdict(float)
        self._report = None  # last combiner report, logged by reduce_metrics
        if training:
            checkpoints.expect_restore(self)

    def _build_combiner(self, args):
        directions = list(self.lang_pairs)
        for pair in directions:
            for lang in pair.split("-"):
                if lang not in self.langs:
                    raise ValueError(
                        f"--lang-pairs names {pair}, but {lang!r} is not in the language "
                        f"list ({', '.join(self.langs)})"
                    )
        chosen = args.gradvac_directions
        if chosen is not None:
            unknown = sorted(set(chosen) - set(directions))
            if unknown:
                raise ValueError(
                    f"--gradvac-directions names {', '.join(unknown)}, which are not training "
                    f"directions (--lang-pairs: {', '.join(directions)})"
                )
        name = args.gradient_combiner
        if name in ("gradvac", "pcgrad"):
            kwargs = dict(apply_to=chosen, seed=args.seed)
            if name == "gradvac":
                kwargs.update(beta=args.gradvac_beta, fixed_target=args.gradvac_fixed_target)
        elif chosen is not None:
            raise ValueError(f"--gradvac-directions applies to gradvac and pcgrad, not {name}")
        elif name == "gradnorm":
            layer = args.gradnorm_layer
            if layer is None:
                if getattr(args, "decoder_layers", None) is None:
                    raise ValueError("--gradnorm-layer: this model has no --decoder-layers; "
                                     "name the layer whose gradient norms GradNorm balances")
                layer = f"decoder.layers.{args.decoder_layers - 1}"
            kwargs = dict(alpha=args.gradnorm_alpha, lr=args.gradnorm_lr, layer=layer)
        else:
            kwargs = {}
        return build_combiner(name, **kwargs)

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        is_train = self.training and split == getattr(self.args, "train_subset", "train")
        if is_train:
            self._check_not_empty(split)
        super().load_dataset(split, epoch=epoch, combine=combine, **kwargs)
        if is_train:
            dataset = self.datasets[split]
            for key, sub in zip(dataset.keys, dataset.datasets):
                if len(sub) == 0:
                    raise ValueError(f"training direction {key} has no examples in {split}")
            batch_by_direction(dataset)

    def build_model(self, args, from_checkpoint=False):
        model = super().build_model(args, from_checkpoint)
        self._model = model  # restore_combiner checks a checkpoint's groups against it
        return model

    def _check_not_empty(self, split):
        """fairseq crashes deep in mmap on an empty binarized file; say which direction it is."""
        for path in self.args.data.split(os.pathsep):
            for pair in self.lang_pairs:
                src, tgt = pair.split("-")
                for a, b in ((src, tgt), (tgt, src)):
                    for lang in (src, tgt):
                        f = os.path.join(path, f"{split}.{a}-{b}.{lang}.bin")
                        if os.path.exists(f) and os.path.getsize(f) == 0:
                            raise ValueError(f"training direction {pair} has no examples: {f} is empty")

    # ---------------------------------------------------------------- training
    def _direction_gradients(self, model):
        if self._grads is None or self._grads_model is not model:
            if hasattr(type(model), "all_reduce_grads"):
                raise TypeError(
                    f"{type(model).__name__} already reduces its own gradients; "
                    "multilingual_gradvac needs the unwrapped model (one worker)"
                )
            groups = ParameterGroups.from_named_parameters(
                model.named_parameters(), self.args.combine_granularity
            )
            self._grads = DirectionGradients(groups, capacity=len(self.lang_pairs))
            self._grads_model = model
            # The trainer calls model.all_reduce_grads() (through the optimizer) after the
            # last micro-batch of an update and before rescaling and clipping: the place
            # where the per-direction gradients become the update.
            model.all_reduce_grads = lambda: self._combine(model)
            logger.info(
                f"{self.combiner.name} on {len(groups)} parameter groups "
                f"({self.args.combine_granularity}), {groups.numel:,} parameters, "
                f"{len(self.lang_pairs)} directions"
            )
        return self._grads

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        grads = self._direction_gradients(model)
        if grads.update_started():
            grads.reset()
            self._losses.clear()
            self._ntokens.clear()
        self._update_num = update_num
        total_loss, total_size, merged = 0.0, 0, defaultdict(float)
        for direction, batch in sample.items():
            grads.select(direction)
            with model.no_sync() if hasattr(model, "no_sync") else contextlib.nullcontext():
                loss, size, log = super().train_step(
                    batch, model, criterion, optimizer, update_num, ignore_grad
                )
            total_loss += loss.detach()
            total_size += size
            for key, value in log.items():
                merged[key] += value
            merged[f"{direction}:loss"] += log.get("loss", 0.0)
            merged[f"{direction}:ntokens"] += log.get("ntokens", 0)
            self._ntokens[direction] += log.get("ntokens", 0)
            if self.combiner.name == "gradnorm":  # kept as tensors: no host sync here
                self._losses[direction] += log.get("loss", 0.0)
        return total_loss, total_size, dict(merged)

    def _combine(self, model):
        if not self._grads.directions:
            return
        losses = None
        if self.combiner.name == "gradnorm":  # per-token loss of each direction
            losses = torch.stack([
                torch.as_tensor(self._losses[d], dtype=torch.float32) / max(self._ntokens[d], 1)
                for d in self._grads.directions
            ])
        ntokens = torch.tensor([self._ntokens[d] for d in self._grads.directions], dtype=torch.float32)
        self._grads.combine(self.combiner, self._update_num, losses=losses, ntokens=ntokens)
        self._report = self.combiner.last_report

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        directions = sorted({k.rsplit(":", 1)[0] for log in logging_outputs for k in log if k.endswith(":ntokens")})
        for d in directions:
            ntokens = sum(log.get(f"{d}:ntokens", 0) for log in logging_outputs)
            loss = sum(log.get(f"{d}:loss", 0) for log in logging_outputs)
            if ntokens > 0:
                metrics.log_scalar(f"loss_{d}", loss / ntokens / math.log(2), ntokens, round=3)
            metrics.log_scalar(f"ntok_{d}", ntokens, round=1)
        report, self._report = self._report, None
        if report is not None and directions:
            self._log_report(report)

    @staticmethod
    def _log_report(report):
        if report.similarity is None:
            return
        sim = report.similarity.float()
        visited = ~torch.isnan(sim)
        mean = torch.where(visited, sim, torch.zeros_like(sim)).sum(-1) / visited.sum(-1).clamp_min(1)
        share = report.corrected.sum() / visited.sum().clamp_min(1)
        mean, counts, share = mean.tolist(), visited.sum(-1).tolist(), share.item()  # one sync
        metrics.log_scalar("corrected", share, round=3)
        for i, a in enumerate(report.tasks):
            for j, b in enumerate(report.tasks):
                if counts[i][j]:
                    metrics.log_scalar(f"cos_{a}_{b}", mean[i][j], round=3)

    # ---------------------------------------------------------------- state
    def state_dict(self):
        return {"combiner": self.combiner.state_dict()} if self.combiner is not None else {}

    def load_state_dict(self, state_dict):
        """Called by fairseq when loading for generation: the combiner is not needed there."""
        if self.combiner is not None and "combiner" in state_dict:
            self.restore_combiner(state_dict["combiner"])

    def restore_combiner(self, state):
        if state.get("combiner") != self.combiner.name:
            raise ValueError(
                f"the checkpoint was trained with --gradient-combiner {state.get('combiner')}, "
                f"this run uses {self.combiner.name}; pass --reset-optimizer to start the "
                "combiner afresh"
            )
        saved_groups = state.get("group_names")
        model = getattr(self, "_model", None)
        if saved_groups is not None and model is not None:
            groups = ParameterGroups.from_named_parameters(
                model.named_parameters(), self.args.combine_granularity
            )
            if saved_groups != groups.names:
                raise ValueError(
                    f"the checkpoint's {state['combiner']} state covers {len(saved_groups)} "
                    f"parameter groups, this run's --combine-granularity "
                    f"{self.args.combine_granularity} gives {len(groups)} (or the model "
                    "differs); pass --reset-optimizer to start the combiner afresh"
                )
        self.combiner.load_state_dict(state)
        logger.info(f"restored {self.combiner.name} state for {len(self.combiner.task_names)} directions")

