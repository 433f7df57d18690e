"""Per-direction gradients written by autograd straight into rows of one buffer, and their
combination into the update, on one worker or many (pure PyTorch, no fairseq import).

A row belongs to the direction whose batch first used it in this update: the buffer has
``rows`` rows (all K with --direction-batching split; min(--update-freq, K) with single,
whose micro-batches hold one direction each), never one per direction per worker. Before a
direction's backward pass every parameter's ``.grad`` is pointed at its slice of that row,
so autograd accumulates there in place: no copy per direction, and ``--update-freq``
micro-batches of the same direction accumulate in the same row. A row is zeroed when it is
taken.

The combination sees the directions present on any worker in training order (row order
and worker count do not change the math): on one worker the rows are read where they
are; with several, exchange.py sums each direction's rows over workers, slice by
slice.
"""
from typing import List, Optional, Sequence

import torch

from .similarity import SimilarityGroups, SimilarityRecord
from .exchange import LocalExchange
from ..combiners import Combiner, ParameterGroups
from ..combiners.groups import math_dtype


class DirectionGradients:
    def __init__(
        self,
        groups: ParameterGroups,
        directions: Sequence[str],
        exchange: Optional[LocalExchange] = None,
        similarity: Optional[SimilarityGroups] = None,
        rows: Optional[int] = None,
    ):
        params = groups.params
        kinds = {(p.dtype, p.device) for p in params}
        if len(kinds) != 1:
            raise ValueError(f"all trainable parameters must share dtype and device, got {kinds}")
        if not directions or len(set(directions)) != len(directions):
            raise ValueError(f"training directions must be unique and at least one, got {list(directions)}")
        rows = len(directions) if rows is None else rows
        if not 1 <= rows <= len(directions):
            raise ValueError(f"rows must be between 1 and the {len(directions)} directions, got {rows}")
        self.groups = groups
        self.directions: List[str] = list(directions)
        self._number = {d: i for i, d in enumerate(self.directions)}
        self.exchange = exchange or LocalExchange()
        # The groups whose raw cosines combine(record=True) measures (Part I).
        self.similarity = similarity or SimilarityGroups(groups)
        self.last_record: Optional[SimilarityRecord] = None
        self.device = params[0].device
        padded = self.exchange.padded_numel(groups.numel)
        self.buffer = torch.zeros(rows, padded, dtype=params[0].dtype, device=self.device)
        self._update: Optional[torch.Tensor] = None  # combine()'s output, made once
        self._row_views = [groups.param_views(self.buffer[r, : groups.numel]) for r in range(rows)]
        # Parameters that some backward pass reached in this update: the others keep
        # .grad None, as in stock fairseq (Adam does not move them).
        self._hooks = [
            p.register_post_accumulate_grad_hook(lambda _, i=i: self._reached.__setitem__(i, True))
            for i, p in enumerate(params)
        ]
        self.reset()

    @property
    def capacity(self) -> int:
        """How many directions one update of this worker can hold."""
        return self.buffer.shape[0]

    def close(self) -> None:
        """Remove the hooks from the parameters (before building another instance)."""
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def update_started(self) -> bool:
        """True once the trainer cleared the gradients (zero_grad) for a new update."""
        return self.groups.params[0].grad is None

    def reset(self) -> None:
        self._row_of = {}  # direction number -> its row in this update
        self._owner: List[int] = []  # direction number of each row taken, in row order
        self._present: List[bool] = []  # ... written by a real batch (not only a dummy one)
        self._ntokens: List[float] = []
        self._losses: list = []  # floats or device tensors: no host sync
        self._reached = [False] * len(self.groups.params)
        # fairseq's divisor of this update on this worker (end_micro_batch), None if unknown
        self._sample_size: Optional[float] = None

    def present_directions(self) -> List[str]:
        """The directions a real batch went into since the last combine(), in training order."""
        return [self.directions[d] for d in sorted(self._row_of) if self._present[self._row_of[d]]]

    def row(self, direction: str) -> Optional[torch.Tensor]:
        """``direction``'s gradient in this update so far ([P], a view), or None."""
        r = self._row_of.get(self._direction_number(direction))
        return None if r is None else self.buffer[r, : self.groups.numel]

    def _direction_number(self, direction: str) -> int:
        if direction not in self._number:
            raise ValueError(
                f"{direction!r} is not a training direction ({', '.join(self.directions)})"
            )
        return self._number[direction]

    def select(self, direction: str) -> None:
        """Route the next backward pass into ``direction``'s row (taken at first use)."""
        d = self._direction_number(direction)
        r = self._row_of.get(d)
        if r is None:
            r = len(self._owner)
            if r == self.capacity:
                held = ", ".join(self.directions[o] for o in self._owner)
                raise RuntimeError(
                    f"{direction} is direction {r + 1} of this update, but this worker keeps "
                    f"rows for {self.capacity} ({held}): with --direction-batching single a "
                    f"worker keeps one row per --update-freq micro-batch, each of one direction"
                )
            self._row_of[d] = r
            self._owner.append(d)
            self._present.append(False)
            self._ntokens.append(0.0)
            self._losses.append(0.0)
            self.buffer[r].zero_()
        for p, view in zip(self.groups.params, self._row_views[r]):
            p.grad = view

    def record(self, direction: str, loss, ntokens) -> None:
        """A real batch of ``direction`` went into its row (a dummy batch is not recorded):
        its summed loss and token count."""
        r = self._row_of.get(self._direction_number(direction))
        if r is None:
            raise RuntimeError(f"record({direction!r}) before select({direction!r})")
        self._present[r] = True
        self._losses[r] = self._losses[r] + loss
        self._ntokens[r] += float(ntokens)

    def end_micro_batch(self, sample_size: float, dummy: bool) -> None:
        """A micro-batch of this update ended. fairseq's trainer divides the update by the
        workers' summed sample sizes, a worker's being zero when its LAST micro-batch was a
        dummy (an epoch's end), though its real ones are in the gradient: the methods defined
        on mean losses (MGDA, GradNorm) scale their update to that divisor."""
        total = (self._sample_size or 0.0) + float(sample_size)
        self._sample_size = 0.0 if dummy else total

    def combine(self, combiner: Combiner, step: int, record: bool = False) -> Optional[torch.Tensor]:
        """Combine this update's rows (summed over workers) and make the result every
        reached parameter's ``.grad``. Returns the combined gradient, or None when no
        worker had a real batch (the gradients stay zero).

        ``record``: also measure the raw cosines of the rows (before any combination) in
        ``self.similarity``'s groups, into ``self.last_record`` (update ``step + 1``); their
        Gram matrices join the one all-reduce."""
        self.last_record = None
        if self.groups.params[0].grad is None:  # the trainer dropped this update (OOM)
            self.reset()
        exchange, p, dtype = self.exchange, self.groups.numel, math_dtype(self.buffer.dtype)
        sent = [r for r in range(len(self._owner)) if self._present[r]]
        labels = exchange.gather_labels([self._owner[r] for r in sent], self.capacity, self.device)
        present = sorted(set().union(*labels))  # on any worker, in training order
        if not present:
            self.reset()
            return None
        k = len(present)
        position = {d: i for i, d in enumerate(present)}
        start, stop = exchange.columns(self.buffer.shape[1], p)
        # the update; with several workers first the receive buffer of the exchange. Kept
        # from update to update like stock fairseq's .grad: a fresh P-vector's first touch
        # of its pages costs most of a plain sum (benchmarks/combine.py --parts)
        if self._update is None:
            self._update = torch.empty(self.buffer.shape[1], dtype=self.buffer.dtype, device=self.device)
        combined = self._update
        # row order[i] of ``rows`` is present direction i's, within this worker's slice
        rows, order = exchange.present_rows(self.buffer[: len(self._owner)], p, sent, labels, present,
                                            [self._row_of.get(d) for d in present], combined)  # (None: not on this worker)

        def partial_gram(groups, lo, hi, count):
            """The Gram matrices of ``groups`` over columns [lo, hi) within this worker's
            slice (they add up over workers), of the present directions."""
            lo, hi = max(lo, start), min(hi, stop)
            if lo >= hi:
                return torch.zeros(count, k, k, dtype=dtype, device=self.device)
            return groups.gram(rows[:, lo - start : hi - start], start=lo)[:, order][:, :, order]

        gram = None
        if combiner.needs_gram:  # the part of the combiner's columns in this worker's slice
            gram = partial_gram(self.groups, *combiner.gram_columns(self.groups), len(self.groups))
        sim = partial_gram(self.similarity, 0, p, len(self.similarity.names)) if record else None
        # One small all-reduce: partial Grams (combiner's, recorded), then tokens and losses
        # per present direction, then which parameters were reached.
        ntokens, losses = [0.0] * k, [0.0] * k
        for r in sent:
            i = position[self._owner[r]]
            ntokens[i], losses[i] = self._ntokens[r], self._losses[r]
        losses = torch.stack([torch.as_tensor(v, dtype=dtype, device=self.device) for v in losses])
        # the workers that know their fairseq sample size, and its sum
        known = [float(self._sample_size is not None), self._sample_size or 0.0]
        local = torch.tensor(ntokens + known + [float(x) for x in self._reached], dtype=dtype, device=self.device)
        grams = [g for g in (gram, sim) if g is not None]
        stats = exchange.all_reduce_stats(torch.cat([g.flatten() for g in grams] + [local[:k], losses, local[k:]]))
        reduced = []
        for g in grams:
            reduced.append(stats[: g.numel()].view(g.shape))
            stats = stats[g.numel() :]
        if gram is not None:
            gram = reduced.pop(0)
        if sim is not None:  # the rows were divided by N for fairseq: the record's norms are
            sim = reduced.pop(0) * exchange.world_size ** 2  # those of the summed gradients
        ntokens, losses = stats[:k], stats[k : 2 * k]
        tail = stats[2 * k :].tolist()  # (one host sync: which parameters were reached)
        sample_size = stats[2 * k + 1] if tail[0] == exchange.world_size else None
        reached = [x > 0 for x in tail[2:]]
        self.reset()
        tasks = [self.directions[d] for d in present]
        if sim is not None:
            self.last_record = SimilarityRecord(step + 1, tasks, self.similarity.names, sim, ntokens.tolist())
        weights = combiner.weigh(
            gram, tasks, self.groups, step,
            losses=losses / ntokens.clamp_min(1), ntokens=ntokens,  # loss per token
            sample_size=sample_size,
        )
        row_weights = torch.zeros(len(self.groups), rows.shape[0], dtype=dtype, device=self.device)
        row_weights[:, order] = weights.to(device=self.device, dtype=dtype)
        mine = combined[start : start + self.buffer.shape[1] // exchange.world_size]
        mine[stop - start :].zero_()  # padding
        if stop > start:  # (more workers than columns: this worker's slice is padding)
            self.groups.weighted_sum(rows, row_weights, out=mine[: stop - start], start=start)
        combined = exchange.gather(combined)[:p]
        combiner.commit(combiner.update_finite(gram, weights, self.groups, combined))
        for param, view, hit in zip(self.groups.params, self.groups.param_views(combined), reached):
            param.grad = view if hit else None
        return combined
