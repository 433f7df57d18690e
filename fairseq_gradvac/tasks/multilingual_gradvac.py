"""The ``multilingual_gradvac`` task: fairseq's temperature-sampled multilingual task whose
training step computes one gradient per translation direction and combines them.

Data, dictionaries, language tokens, sampling and inference are fairseq's
``translation_multi_simple_epoch``; this task only
1. collates each training minibatch into one batch per direction, or with
   ``--direction-batching single`` batches one direction at a time (data/direction_batches.py),
2. runs the stock forward/backward once per direction, into that direction's row of a
   buffer of per-direction rows (direction_gradients.py),
3. combines the rows with the chosen method (combiners/) when the trainer reaches its
   gradient all-reduce point, after the last ``--update-freq`` micro-batch and before the
   gradients are rescaled, clipped and applied; with several workers the rows are summed
   over workers on the way (gradient_exchange.py), with the math of one worker.
"""
import atexit
import contextlib
import logging
import math
import os
from collections import defaultdict

import numpy as np
import torch
from fairseq import metrics, utils
from fairseq.distributed import utils as distributed_utils
from fairseq.models import BaseFairseqModel
from fairseq.optim.amp_optimizer import AMPOptimizer
from fairseq.tasks import register_task
from fairseq.tasks.translation_multi_simple_epoch import TranslationMultiSimpleEpochTask

from ..combiners import GRANULARITIES, ParameterGroups, available_combiners, combiner_class
from ..combiners.options import add_combiner_args, combiner_from_args
from ..data.direction_batches import DIRECTION_BATCHING, direction_numbers, direction_of, directions
from ..data.sampling_schedule import Cooldown, shares
from ..gradients import similarity
from ..gradients.direction_gradients import DirectionGradients
from ..gradients.exchange import LocalExchange, exchange_for
from . import allocator, checkpoints, fairseq_changes
from .csv_log import CsvLog
from .loss_weights import WeighedUpdate, check_criterion

logger = logging.getLogger(__name__)


def _destroy_process_group():
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


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
                                "multilingual training), gradvac, pcgrad, mgda, gradnorm, one "
                                "of TorchJD's Gramian methods, or a loss weighting (famo, uw, dwa, "
                                "rlw, imtl_l, stch, geometric_mean) (docs/methods/README.md)")
        group.add_argument("--combine-granularity", default="all_layer", choices=GRANULARITIES,
                           help="parameter groups the combiner works on (Table 1 of the paper)")
        add_combiner_args(group)
        group.add_argument("--direction-batching", default="auto", choices=("auto",) + DIRECTION_BATCHING,
                           help="auto: split for the gradient methods, mixed for the loss weightings; "
                                "split: fairseq's mixed minibatches, "
                                "each split into one batch per direction (K passes of 1/K of the "
                                "batch; every worker keeps K rows); single: every minibatch holds "
                                "one direction (full-size passes; a worker keeps min(--update-freq, "
                                "K) rows, and with N workers the exchange sends (S+1)/2 times stock "
                                "DDP's bytes, S the rows a worker holds: 1.0x at --update-freq 1); "
                                "mixed (only the loss weightings): "
                                "fairseq's own mixed minibatches, each row's loss weighed by its "
                                "direction, one pass")
        group = parser.add_argument_group("sampling schedule (fairseq_gradvac)")
        group.add_argument("--cooldown-temperature", type=float, default=None, metavar="T",
                           help="Cooldown (Li et al., NAACL 2025): sample at --sampling-temperature, "
                                "then at T from the first epoch that starts at or after "
                                "--cooldown-update (paper: 5, then 1 at half of training)")
        group.add_argument("--cooldown-update", type=int, default=None, metavar="U",
                           help="the update after which Cooldown's next epoch samples at "
                                "--cooldown-temperature")
        group = parser.add_argument_group("CPU memory (fairseq_gradvac)")
        group.add_argument("--malloc-keep-mb", type=int, default=allocator.DEFAULT_MB, metavar="MB",
                           help="glibc's malloc keeps freed blocks up to MB (its mmap threshold) "
                                "and never trims its heap, so an update reuses the last one's pages "
                                "instead of having the kernel fault them in afresh (the logits and "
                                "their gradients); 0: glibc's own thresholds (docs/performance.md)")
        group = parser.add_argument_group("gradient similarity (fairseq_gradvac, Part I)")
        group.add_argument("--similarity-interval", type=int, default=0, metavar="N",
                           help="every N updates, write the raw cosine of every pair of "
                                "directions' gradients (before any combination), per parameter "
                                "group, to SAVE_DIR/similarity.csv (0: off); any combiner")
        group.add_argument("--similarity-granularity", default=None, choices=GRANULARITIES,
                           help="the groups recorded (default: --combine-granularity's), e.g. "
                                "all_layer while combining whole_model; the aggregates model, "
                                "encoder_layers and decoder_layers are always recorded")
        # fmt: on

    def __init__(self, args, langs, dicts, training):
        world_size = getattr(args, "distributed_world_size", 1)
        backend = getattr(args, "ddp_backend", "legacy_ddp")
        rows = combiner_class(args.gradient_combiner).needs_rows if training else True
        if getattr(args, "direction_batching", "auto") in ("auto", None):
            args.direction_batching = "split" if rows else "mixed"
        if training and rows and args.direction_batching == "mixed":
            raise ValueError(
                f"--direction-batching mixed keeps fairseq's mixed batches with one backward pass for all "
                f"directions; {args.gradient_combiner} combines each direction's own gradient: use "
                f"--direction-batching split or single")
        if training and rows and world_size > 1 and backend != "legacy_ddp":
            raise ValueError(
                f"multilingual_gradvac exchanges the per-direction gradients itself at the "
                f"point where fairseq's legacy_ddp all-reduces; with --ddp-backend {backend} "
                f"every backward pass would all-reduce. Train with --ddp-backend legacy_ddp "
                f"(on GPUs and CPUs alike; its all-reduce is replaced, not added to)."
            )
        launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if training and launched > 1 and world_size == 1:
            # fairseq's default world size is the number of CUDA devices: on CPUs each of
            # torchrun's processes would train alone, racing on one --save-dir
            raise ValueError(
                f"torchrun (or another launcher) started WORLD_SIZE={launched} processes, but this "
                f"one trains alone (--distributed-world-size {world_size}). Pass "
                f"--distributed-world-size {launched}; on CPUs also --cpu --distributed-backend gloo "
                f"--distributed-no-spawn --distributed-init-method env:// --distributed-rank $RANK "
                f"(torchrun --no-python bash -c '...', as in the README)"
            )
        if getattr(args, "similarity_interval", 0) < 0:
            raise ValueError(f"--similarity-interval must be >= 0 (0: off), got {args.similarity_interval}")
        self.sampling_schedule = self._build_schedule(args) if training else None
        if training:
            logger.info(allocator.keep_freed_memory(getattr(args, "malloc_keep_mb", allocator.DEFAULT_MB)))
        super().__init__(args, langs, dicts, training)
        self.combiner = self._build_combiner(args) if training else None
        self._updates_done = 0  # updates before the next epoch's sample (the schedule's clock)
        self._sampled_at = None  # the temperature the training set was last sampled at
        self._grads = None  # DirectionGradients, built with the model's parameters
        self._grads_model = None  # ... of this model
        self._report = None  # last combiner report, logged by reduce_metrics
        self._record = None  # last similarity record, logged by reduce_metrics
        self._logs = None  # {"similarity": CsvLog, "direction_losses": CsvLog} on rank 0
        self._weighed = None  # WeighedUpdate: the loss weightings' update in progress
        self._token_shares = None  # each direction's share of the epoch's target tokens (loss weightings)
        self._exchange = None  # the loss weightings' exchange of per-direction losses
        if training:
            checkpoints.expect_restore(self)

    @property
    def training_directions(self):
        """Every training direction once: --lang-pairs, then those only in --extra-lang-pairs.

        The order of fairseq's training datasets; a direction's rows from all of its
        datasets form one batch (data/direction_batches.py), and the combiners see the
        directions present in an update in this order, on every worker.
        """
        split = getattr(self.args, "train_subset", "train")
        return list(dict.fromkeys(f"{src}-{tgt}" for _, _, src, tgt in self._datasets(split)))

    def _datasets(self, split):
        """(data category, its path(s), src, tgt) of each data set fairseq loads for ``split``."""
        paths, pairs = self.data_manager.get_data_paths_and_lang_pairs(split)
        for category in paths:
            for pair in pairs.get(category, ()):
                langs = pair.split("-")
                yield category, paths[category], langs[0], langs[-1]  # monolingual "xx": xx-xx

    def _build_combiner(self, args):
        named = {"--lang-pairs": list(self.lang_pairs)}
        for category, pairs in (args.extra_lang_pairs or {}).items():
            named[f"--extra-lang-pairs {category}"] = pairs.split(",")
        for option, pairs in named.items():
            repeated = sorted({p for p in pairs if pairs.count(p) > 1})
            if repeated:  # fairseq keys data sets by direction: a repeat breaks its sampling
                raise ValueError(f"{option} names {', '.join(repeated)} more than once")
        directions = self.training_directions
        for pair in directions:
            for lang in pair.split("-"):
                if lang not in self.langs:
                    raise ValueError(
                        f"training direction {pair} names {lang!r}, which is not in the "
                        f"language list ({', '.join(self.langs)})"
                    )
        return combiner_from_args(args, directions)

    @staticmethod
    def _build_schedule(args):
        """The sampling schedule of --cooldown-temperature/--cooldown-update, or None."""
        given = [o for o, v in (("--cooldown-temperature", args.cooldown_temperature),
                                ("--cooldown-update", args.cooldown_update)) if v is not None]
        if not given:
            return None
        if len(given) == 1:
            raise ValueError(f"Cooldown needs both --cooldown-temperature and --cooldown-update, got only {given[0]}")
        if args.sampling_method != "temperature":
            raise ValueError(f"Cooldown changes the sampling temperature: it needs --sampling-method "
                             f"temperature, not {args.sampling_method}")
        if getattr(args, "virtual_epoch_size", None) is not None:
            raise ValueError("Cooldown resamples at an epoch's start; with --virtual-epoch-size fairseq draws "
                             "the sample of several epochs at once: leave --virtual-epoch-size out")
        if getattr(args, "sampling_weights", None) or getattr(args, "sampling_weights_from_file", None):
            raise ValueError("Cooldown sets the sampling by temperature; --sampling-weights would override it")
        return Cooldown(args.sampling_temperature, args.cooldown_temperature, args.cooldown_update)

    def create_batch_sampler_func(self, *args, **kwargs):
        """fairseq's per-epoch batch sampler, after the sampling schedule has given the
        training set its epoch's temperature (fairseq samples an epoch as it starts)."""
        construct = super().create_batch_sampler_func(*args, **kwargs)

        def construct_batch_sampler(dataset, epoch):
            training = dataset is self.datasets.get(getattr(self.args, "train_subset", "train"))
            if self.sampling_schedule is not None and epoch is not None and training:
                self._schedule_epoch(dataset, epoch)
            batches = construct(dataset, epoch)
            if training and self.combiner is not None and not self.combiner.needs_rows:
                self._token_shares = self._shares_of_tokens(dataset, batches)
            return batches

        return construct_batch_sampler

    def _shares_of_tokens(self, dataset, batches):
        """Each training direction's share of the target tokens in the epoch's batches (the
        loss weightings' pi: their multipliers are c_i / pi_i)."""
        indices = np.concatenate([np.asarray(b, dtype=np.int64) for b in batches]) if len(batches) else np.zeros(0, np.int64)
        sizes = np.asarray(dataset.sizes)
        tokens = (sizes[:, 1] if sizes.ndim == 2 else sizes)[indices].astype(np.float64)
        names = directions(dataset)
        per = np.bincount(direction_numbers(dataset, indices), weights=tokens, minlength=len(names))
        shares = dict(zip(names, per / max(per.sum(), 1.0)))
        ratios = ", ".join(f"{d} {100 * shares.get(d, 0.0):.1f}%" for d in self.training_directions)
        logger.info(f"{self.combiner.name}: the epoch's target tokens by direction (pi): {ratios}")
        return torch.tensor([shares.get(d, 0.0) for d in self.training_directions], dtype=torch.float64)

    def _schedule_epoch(self, dataset, epoch):
        temperature = self.sampling_schedule.temperature(epoch, self._updates_done)
        if temperature == self._sampled_at:
            return
        ratios = shares([len(d) for d in dataset.datasets], temperature)
        if temperature != self.sampling_schedule.start or self._sampled_at is not None:
            # (the data manager sampled the first epoch at --sampling-temperature already)
            fairseq_changes.resample(dataset, epoch, ratios, self.args.virtual_data_size)
        self._sampled_at = temperature
        table = ", ".join(f"{direction_of(k)} {100 * r:.1f}%" for k, r in zip(dataset.keys, ratios))
        logger.info(f"sampling: epoch {epoch} (after {self._updates_done} updates) at temperature "
                    f"{temperature:g}: {table}")

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        is_train = self.training and split == getattr(self.args, "train_subset", "train")
        self._check_files(split)
        super().load_dataset(split, epoch=epoch, combine=combine, **kwargs)
        if is_train:
            dataset = self.datasets[split]
            self._sampled_at = None  # a new training set, sampled at --sampling-temperature
            for key, sub in zip(dataset.keys, dataset.datasets):
                if len(sub) == 0:
                    raise ValueError(f"training direction {key} has no examples in {split}")
            fairseq_changes.by_direction(dataset, self.args.direction_batching)
            # a mixed batch's row direction numbers (the dataset's order) -> training order
            self._row_direction = torch.tensor([self.training_directions.index(d) for d in directions(dataset)])

    def build_criterion(self, args):
        criterion = super().build_criterion(args)
        if self.combiner is not None and not self.combiner.needs_rows:
            check_criterion(criterion, self.args.direction_batching)
        return criterion

    def build_model(self, args, from_checkpoint=False):
        model = super().build_model(args, from_checkpoint)
        self._model = model  # restore_combiner checks a checkpoint's groups against it
        if self.combiner is not None:
            self.combiner.check_groups(
                ParameterGroups.from_named_parameters(model.named_parameters(), args.combine_granularity)
            )
        return model

    def _check_files(self, split):
        """Say which direction's files are missing or empty: fairseq fails with a bare
        KeyError on the first and deep in mmap on the second."""
        found = self.data_manager.get_split_num_data_shards(split)
        for category, paths, src, tgt in self._datasets(split):
            if self.data_manager.get_dataset_key(category, src, tgt) not in found:
                raise ValueError(
                    f"{src}-{tgt} ({category} data) has no {split} files in {paths}: neither "
                    f"{split}.{src}-{tgt}.{src}.idx nor {split}.{tgt}-{src}.{src}.idx"
                )
            for path in utils.split_paths(paths):
                for a, b in ((src, tgt), (tgt, src)):
                    for lang in (src, tgt):
                        f = os.path.join(path, f"{split}.{a}-{b}.{lang}.bin")
                        if os.path.exists(f) and os.path.getsize(f) == 0:
                            raise ValueError(f"direction {src}-{tgt} has no examples: {f} is empty")

    # ---------------------------------------------------------------- training
    def _direction_gradients(self, model):
        if self._grads is None or self._grads_model is not model:
            # fairseq wraps the model for several workers (ModuleProxyWrapper around
            # LegacyDistributedDataParallel); the groups are the model's own.
            inner = model
            while not isinstance(inner, BaseFairseqModel) and hasattr(inner, "module"):
                inner = inner.module
            groups = ParameterGroups.from_named_parameters(
                inner.named_parameters(), self.args.combine_granularity
            )
            exchange = self._new_exchange(groups.params[0].device)
            if self._grads is not None:
                self._grads.close()
            directions = self.training_directions
            rows = len(directions)
            if self.args.direction_batching == "single":  # one direction per micro-batch
                rows = min(rows, max(getattr(self.args, "update_freq", None) or [1]))
            self._grads = DirectionGradients(
                groups, directions, exchange,
                similarity.SimilarityGroups(groups, self.args.similarity_granularity), rows=rows,
            )
            self._grads_model = model
            # the per-direction gradients become the update where legacy_ddp would all-reduce
            fairseq_changes.combine_instead_of_all_reduce(model, self._combine)
            logger.info(
                f"{self.combiner.name} on {len(groups)} parameter groups "
                f"({self.args.combine_granularity}), {groups.numel:,} parameters "
                f"({str(groups.params[0].dtype).replace('torch.', '')} rows), "
                f"{len(directions)} directions, {self.args.direction_batching} batches, "
                f"rows for {rows} per worker"
                + (f", exchanged over {exchange.world_size} workers" if exchange.distributed else "")
            )
        return self._grads

    def _new_exchange(self, device):
        """This worker's exchange (fairseq's data-parallel group, or one worker's); with
        several workers every one first gets rank 0's combiner state."""
        if not torch.distributed.is_initialized():
            return LocalExchange()
        exchange = exchange_for(
            distributed_utils.get_data_parallel_world_size(),
            distributed_utils.get_data_parallel_rank(),
            distributed_utils.get_data_parallel_group(),
        )
        if exchange.distributed:
            self._share_combiner_state(exchange, device)
            # fairseq exits without destroying its process group; gloo's threads then
            # sometimes abort the finished process ("terminate called without an
            # active exception", exit -6). Destroying it is local to this worker.
            atexit.register(_destroy_process_group)
        return exchange

    def _share_combiner_state(self, exchange, device):
        """Give every worker rank 0's combiner state before the first update: fairseq loads
        a checkpoint on rank 0 only and broadcasts it, so only rank 0 restored it."""
        state = distributed_utils.broadcast_object(
            self.combiner.state_dict() if exchange.rank == 0 else None,
            src_rank=0, group=exchange.group, dist_device=device,
        )
        if exchange.rank != 0:
            self.combiner.load_state_dict(state)

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        if not self.combiner.needs_rows:
            return self._weighed_train_step(sample, model, criterion, optimizer, update_num, ignore_grad)
        grads = self._direction_gradients(model)
        if self._logs is None:
            self._open_logs(update_num)
        if grads.update_started():
            grads.reset()
        self._update_num = update_num
        self._updates_done = update_num + 1  # (read when the next epoch starts, after this update)
        total_loss, total_size, merged = 0.0, 0, defaultdict(float)
        # Every worker's log has the same keys, in the same order and of the same types
        # (losses: tensors on the model's device): fairseq sums the workers' logs by
        # position in one all-reduce per kind.
        zero = torch.zeros((), device=grads.device)
        per_direction = {}
        for d in grads.directions:
            per_direction[f"{d}:loss"], per_direction[f"{d}:ntokens"] = zero, 0
        for direction, batch in sample.items():
            grads.select(direction)
            with model.no_sync() if hasattr(model, "no_sync") else contextlib.nullcontext():
                loss, size, log = super().train_step(
                    batch, model, criterion, optimizer, update_num, ignore_grad
                )
            if not ignore_grad:  # a dummy batch adds zeros and is not a direction's batch
                grads.record(direction, log.get("loss", 0.0), log.get("ntokens", 0))
            total_loss += loss.detach()
            total_size += size
            for key, value in log.items():
                merged[key] += value
            per_direction[f"{direction}:loss"] = per_direction[f"{direction}:loss"] + log.get("loss", 0.0)
            per_direction[f"{direction}:ntokens"] += log.get("ntokens", 0)
        grads.end_micro_batch(total_size, dummy=ignore_grad)
        merged.update(per_direction)
        return total_loss, total_size, dict(merged)

    def _weighed_train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad):
        """A micro-batch of a loss weighting: one forward and backward (per direction batch
        with split), each direction's loss multiplied by the update's m_i."""
        if self._logs is None:
            self._open_logs(update_num)
        params = [p for p in model.parameters() if p.requires_grad]
        first = params[0]
        update = self._weighed
        # a new update: the last one was stepped (optimizer_step clears it), or fairseq
        # cleared every gradient since (zero_grad after an overflow, an AMP retry)
        if update is None or update.update_num != update_num or all(p.grad is None for p in params):
            if self._token_shares is None:
                raise RuntimeError("the epoch's token shares are unknown: the training set's batches were not built by this task")
            self._loss_exchange(first.device)  # (first: every worker then weighs with rank 0's restored state)
            multipliers = self.combiner.multipliers(update_num, self._token_shares)
            update = self._weighed = WeighedUpdate(
                update_num, multipliers.to(first.device), keep_batches=self.combiner.post_step_losses)
            self._criterion = criterion
        self._update_num = update_num
        self._updates_done = update_num + 1
        directions = self.training_directions
        if self.args.direction_batching == "mixed":
            parts = [(self._row_direction.to(sample["direction"].device)[sample["direction"]], sample)]
        else:
            parts = [(directions.index(d), batch) for d, batch in sample.items()]
        total_loss, total_size, merged = 0.0, 0, defaultdict(float)
        losses = torch.zeros(len(directions), dtype=torch.float64, device=first.device)
        ntokens = torch.zeros_like(losses)
        for i, (rows, batch) in enumerate(parts):
            l, n, log = update.train(model, criterion, optimizer, batch, rows, ignore_grad, sync=i == len(parts) - 1)
            losses += l.double()
            ntokens += n
            total_loss += log["loss"]
            total_size += log.get("sample_size", 0)
            for key, value in log.items():
                merged[key] += value
        # per-direction logs with the same keys and types on every worker (tensors: losses,
        # token counts), as in the gradient path
        for i, d in enumerate(directions):
            merged[f"{d}:loss"], merged[f"{d}:ntokens"] = losses[i], ntokens[i]
        return total_loss, total_size, dict(merged)

    def optimizer_step(self, optimizer, model, update_num):
        """fairseq's step; then, for a loss weighting whose update was applied (an AMP
        overflow skips it: its loss scale falls), its state moves with the update's losses."""
        if self.combiner is None or self.combiner.needs_rows:
            return super().optimizer_step(optimizer, model, update_num)
        scaler = optimizer.scaler if isinstance(optimizer, AMPOptimizer) else None
        scale = scaler.get_scale() if scaler is not None else None
        super().optimizer_step(optimizer, model, update_num)
        update, self._weighed = self._weighed, None
        if update is None or (scaler is not None and scaler.get_scale() < scale):
            return
        stats = [update.losses, update.ntokens]
        if self.combiner.post_step_losses:
            stats += update.losses_after_step(model, self._criterion, amp=scaler is not None)
        k = update.losses.numel()
        stats = self._loss_exchange(update.losses.device).all_reduce_stats(torch.cat(stats)).cpu()
        losses, ntokens = stats[:k], stats[k : 2 * k]
        post = (stats[2 * k : 3 * k], stats[3 * k :]) if self.combiner.post_step_losses else (None, None)
        interval = self.args.similarity_interval
        log = "loss_weights" in self._logs and interval > 0 and (update_num + 1) % interval == 0
        rows = self._loss_weights_rows(update_num, losses, ntokens) if log else None
        if self.combiner.observe(losses, ntokens, *post) and log:
            self._logs["loss_weights"].write(update_num + 1, rows)

    def _loss_weights_rows(self, update_num, losses, ntokens):
        """loss_weights.csv's rows (before the state moves): per direction the weight c_i
        applied, c_i at the update's own losses (``exact``: what the paper's method would
        have used), the weight the update gave grad l_i, c_i n_i / (N pi_i), and the
        update's loss per token."""
        applied = self.combiner.weights(update_num)
        exact = self.combiner.weights(update_num, self.combiner.current(losses, ntokens))
        effective = applied * (ntokens / ntokens.sum().clamp_min(1)) / self._token_shares.clamp_min(1e-300)
        mean = losses / ntokens.clamp_min(1)
        return [(update_num + 1, d, float(applied[i]), float(exact[i]), float(effective[i]),
                 float(mean[i]) if ntokens[i] > 0 else math.nan)
                for i, d in enumerate(self.training_directions)]

    def _loss_exchange(self, device):
        """The loss weightings' all-reduce of per-direction losses (one small one per update)."""
        if self._exchange is None:
            self._exchange = self._new_exchange(device)
        return self._exchange

    def begin_epoch(self, epoch, model):
        super().begin_epoch(epoch, model)
        if self.combiner is not None and not self.combiner.needs_rows:
            self.combiner.begin_epoch(epoch)

    def _open_logs(self, update_num):
        """The per-update CSV logs in the save dir, written by the first worker; opened for
        a run that has done ``update_num`` updates (what a resumed run redoes goes)."""
        self._logs = {}
        other_worker = torch.distributed.is_initialized() and distributed_utils.get_data_parallel_rank() != 0
        if other_worker or not getattr(self.args, "save_dir", None):
            return
        if self.args.similarity_interval > 0:
            self._logs["similarity"] = CsvLog(
                os.path.join(self.args.save_dir, "similarity.csv"), similarity.COLUMNS
            )
        if getattr(self.combiner, "solves", False):
            self._logs["solves"] = CsvLog(
                os.path.join(self.args.save_dir, "solves.csv"), ("update", "groups", "failed", "max_residual")
            )
        if self.args.similarity_interval > 0 and not self.combiner.needs_rows:
            self._logs["loss_weights"] = CsvLog(
                os.path.join(self.args.save_dir, "loss_weights.csv"),
                ("update", "direction", "weight", "exact", "effective", "loss"),
            )
        self._logs["direction_losses"] = CsvLog(
            os.path.join(self.args.save_dir, "direction_losses.csv"),
            ("update", "direction", "loss", "ntokens"),
        )
        for log in self._logs.values():
            log.open(update_num)

    def _combine(self):
        interval = self.args.similarity_interval
        record = interval > 0 and (self._update_num + 1) % interval == 0
        combined = self._grads.combine(self.combiner, self._update_num, record=record)
        self._report = self.combiner.last_report if combined is not None else None
        self._record = self._grads.last_record
        if self._record is not None and "similarity" in self._logs:
            self._logs["similarity"].write(self._record.update, self._record.rows())

    def reduce_metrics(self, logging_outputs, criterion):
        """fairseq's metrics, plus a summary whose length does not grow with the number of
        directions: ``cos_mean`` and ``conflicts`` (mean whole-model cosine over pairs; share
        of negative per-group cosines) at --similarity-interval updates, GradVac/PCGrad's
        ``corrected`` share, the solving methods' ``solve_fails`` (failed group solves over
        the log interval). Per-direction losses go to SAVE_DIR/direction_losses.csv, each
        update's solves to SAVE_DIR/solves.csv."""
        super().reduce_metrics(logging_outputs, criterion)
        directions = list(dict.fromkeys(
            k[: -len(":ntokens")] for log in logging_outputs for k in log if k.endswith(":ntokens")
        ))
        if not directions:  # validation
            return
        if self._logs and "direction_losses" in self._logs:
            rows = []
            for d in directions:
                # (tensors or numbers: several workers' logs arrive all-reduced as tensors)
                ntokens = float(sum(log.get(f"{d}:ntokens", 0) for log in logging_outputs))
                loss = float(sum(log.get(f"{d}:loss", 0) for log in logging_outputs))
                if ntokens > 0:
                    bits = loss / ntokens / math.log(2)
                    rows.append((self._update_num + 1, d, round(bits, 4), int(ntokens)))
            self._logs["direction_losses"].write(self._update_num + 1, rows)
        report, self._report = self._report, None
        if report is not None and report.solved is not None:
            # the solves of this update (the methods that solve: MGDA, Nash-MTL, ...); the
            # first failure is also a warning, from the combiner
            failed = report.failed_solves
            metrics.log_scalar_sum("solve_fails", failed, round=0)
            if "solves" in self._logs:
                worst = float(report.residual.max()) if report.residual is not None else math.nan
                self._logs["solves"].write(self._update_num + 1, [(self._update_num + 1, len(report.solved), failed, worst)])
        if report is not None and report.corrected is not None:
            visited = ~torch.isnan(report.phi)
            share = report.corrected.sum() / visited.sum().clamp_min(1)
            metrics.log_scalar("corrected", share.item(), round=3)
        record, self._record = self._record, None
        if record is not None:
            mean, conflicts = record.summary()
            if not math.isnan(mean):
                metrics.log_scalar("cos_mean", mean, round=3)
            if not math.isnan(conflicts):
                metrics.log_scalar("conflicts", conflicts, round=3)

    # ---------------------------------------------------------------- state
    def state_dict(self):
        state = {"langs": list(self.langs)}  # the order that gives language tokens their ids
        if self.combiner is not None:
            state["combiner"] = self.combiner.state_dict()
        if self.sampling_schedule is not None:
            state["sampling_schedule"] = self.sampling_schedule.state_dict()
        return state

    def restore_sampling(self, state, updates_done):
        """The schedule's state and clock from the checkpoint a training run resumes from."""
        self._updates_done = updates_done
        if self.sampling_schedule is None:
            if state is not None:
                logger.warning("the checkpoint was trained with a sampling schedule, this run has none")
            return
        if state is None:
            raise ValueError("the checkpoint was trained without a sampling schedule, this run has "
                             "--cooldown-temperature/--cooldown-update; pass --reset-dataloader to start it afresh")
        self.sampling_schedule.load_state_dict(state)
    def load_state_dict(self, state_dict):
        """Called by fairseq when loading for generation: the combiner is not needed there
        (and the generation command need not repeat the training's combiner options), so
        only the languages are checked. Training resumes its combiner through
        ``checkpoints.expect_restore``."""
        self.check_languages(state_dict)

    def check_languages(self, state):
        """Language token ids follow the language list: a model read with another list (no
        --lang-dict: the languages of --lang-pairs, sorted) is told the wrong target language."""
        saved = state.get("langs")
        if saved is not None and saved != list(self.langs):
            raise ValueError(
                f"the model was trained with the languages {', '.join(saved)} (in this order), "
                f"this run has {', '.join(self.langs)}: its language tokens would name other "
                "languages; pass the --lang-dict it was trained with"
            )

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

