"""Per-direction gradients written by autograd straight into one [K, P] buffer, and their
combination into the update, on one worker or many (pure PyTorch, no fairseq import).

Row r belongs to training direction r (the same row on every worker). Before a direction's
backward pass every parameter's ``.grad`` is pointed at its slice of that row, so autograd
accumulates there in place: no copy per direction, and ``--update-freq`` micro-batches of
the same direction accumulate in the same row. A row is zeroed at its first use in an
update; rows a worker did not use are zeroed before the exchange.
"""
from typing import List, Optional, Sequence

import torch

from .analysis.similarity import SimilarityGroups, SimilarityRecord
from .gradient_exchange import GradientExchange
from .surgery import Combiner, ParameterGroups
from .surgery.groups import math_dtype


class DirectionGradients:
    def __init__(
        self,
        groups: ParameterGroups,
        directions: Sequence[str],
        exchange: Optional[GradientExchange] = None,
        similarity: Optional[SimilarityGroups] = None,
    ):
        params = groups.params
        kinds = {(p.dtype, p.device) for p in params}
        if len(kinds) != 1:
            raise ValueError(f"all trainable parameters must share dtype and device, got {kinds}")
        if not directions or len(set(directions)) != len(directions):
            raise ValueError(f"training directions must be unique and at least one, got {list(directions)}")
        self.groups = groups
        self.directions: List[str] = list(directions)
        self.exchange = exchange or GradientExchange(1, 0)
        # The groups whose raw cosines combine(record=True) measures (Part I).
        self.similarity = similarity or SimilarityGroups(groups)
        self.last_record: Optional[SimilarityRecord] = None
        self.device = params[0].device
        padded = self.exchange.padded_numel(groups.numel)
        self.buffer = torch.zeros(len(directions), padded, dtype=params[0].dtype, device=self.device)
        self._row_views = [groups.param_views(self.buffer[r, : groups.numel]) for r in range(len(directions))]
        self._touched = [False] * len(directions)  # rows written in this update
        self._present = [False] * len(directions)  # ... by a real batch (not a dummy one)
        self._ntokens = [0.0] * len(directions)
        self._losses = [0.0] * len(directions)  # float or device tensors: no host sync
        # Parameters that some backward pass reached in this update: the others keep
        # .grad None, as in stock fairseq (Adam does not move them).
        self._reached = [False] * len(params)
        self._hooks = [
            p.register_post_accumulate_grad_hook(lambda _, i=i: self._reached.__setitem__(i, True))
            for i, p in enumerate(params)
        ]

    @property
    def capacity(self) -> int:
        return len(self.directions)

    def close(self) -> None:
        """Remove the hooks from the parameters (before building another instance)."""
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def update_started(self) -> bool:
        """True once the trainer cleared the gradients (zero_grad) for a new update."""
        return self.groups.params[0].grad is None

    def reset(self) -> None:
        n = self.capacity
        self._touched, self._present = [False] * n, [False] * n
        self._ntokens, self._losses = [0.0] * n, [0.0] * n
        self._reached = [False] * len(self.groups.params)

    def present_directions(self) -> List[str]:
        """The directions a real batch went into since the last combine()."""
        return [d for d, present in zip(self.directions, self._present) if present]

    def row(self, direction: str) -> int:
        if direction not in self.directions:
            raise ValueError(
                f"{direction!r} is not a training direction ({', '.join(self.directions)})"
            )
        return self.directions.index(direction)

    def select(self, direction: str) -> None:
        """Route the next backward pass into ``direction``'s row."""
        r = self.row(direction)
        if not self._touched[r]:
            self.buffer[r].zero_()
            self._touched[r] = True
        for p, view in zip(self.groups.params, self._row_views[r]):
            p.grad = view

    def record(self, direction: str, loss, ntokens) -> None:
        """A real batch of ``direction`` went into its row (a dummy batch is not recorded):
        its summed loss and token count."""
        r = self.row(direction)
        self._present[r] = True
        self._losses[r] = self._losses[r] + loss
        self._ntokens[r] += float(ntokens)

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
        k, p, dtype = self.capacity, self.groups.numel, math_dtype(self.buffer.dtype)
        for r in range(k):
            if not self._touched[r]:
                self.buffer[r].zero_()
        rows, start = self.exchange.reduce_rows(self.buffer, p)
        n_groups = len(self.groups)
        first = 0 if start is None else start  # rows hold columns [first, first + width)
        # The Gram matrices are summed over workers, so each worker takes its share of the
        # columns: its slice (sharded), or its chunk of the whole rows every worker holds
        # (stacked), not all of them N times.
        share_lo, share_hi = first, first + rows.shape[1]
        if start is None and self.exchange.distributed:
            chunk = -(-p // self.exchange.world_size)
            share_lo = min(p, self.exchange.rank * chunk)
            share_hi = min(p, share_lo + chunk)

        def partial_gram(groups, lo, hi, count):
            lo, hi = max(lo, share_lo), min(hi, share_hi)
            if lo >= hi:
                return torch.zeros(count, k, k, dtype=dtype, device=self.device)
            return groups.gram(rows[:, lo - first : hi - first], start=lo)

        gram = None
        if combiner.needs_gram:  # the part of the combiner's columns in this worker's share
            gram = partial_gram(self.groups, *combiner.gram_columns(self.groups), n_groups)
        sim = partial_gram(self.similarity, 0, p, len(self.similarity.names)) if record else None
        # One small all-reduce: partial Grams (combiner's, recorded), then presence, tokens,
        # losses per direction, then which parameters were reached.
        losses = torch.stack([torch.as_tensor(v, dtype=dtype, device=self.device) for v in self._losses])
        local = torch.tensor(
            [float(x) for x in self._present] + self._ntokens + [float(x) for x in self._reached],
            dtype=dtype, device=self.device,
        )
        grams = [g for g in (gram, sim) if g is not None]
        parts = [g.flatten() for g in grams] + [local[: 2 * k], losses, local[2 * k :]]
        stats = self.exchange.all_reduce_stats(torch.cat(parts))
        reduced = []
        for g in grams:
            reduced.append(stats[: g.numel()].view(g.shape))
            stats = stats[g.numel() :]
        if gram is not None:
            gram = reduced.pop(0)
        if sim is not None:  # the rows were divided by N for fairseq: the record's norms are
            sim = reduced.pop(0) * self.exchange.world_size ** 2  # those of the summed gradients
        present, ntokens, losses, reached = stats[:k], stats[k : 2 * k], stats[2 * k : 3 * k], stats[3 * k :]
        idx = (present > 0).nonzero().flatten().tolist() if self.exchange.distributed else [
            r for r in range(k) if self._present[r]
        ]
        reached = (reached > 0).tolist() if self.exchange.distributed else self._reached
        self.reset()
        if not idx:
            return None
        tasks = [self.directions[r] for r in idx]
        sel = torch.tensor(idx, device=self.device)
        ntokens = ntokens[sel]
        if sim is not None:
            self.last_record = SimilarityRecord(
                step + 1, tasks, self.similarity.names, sim[:, sel][:, :, sel], ntokens.tolist()
            )
        weights = combiner.weigh(
            None if gram is None else gram[:, sel][:, :, sel], tasks, self.groups, step,
            losses=losses[sel] / ntokens.clamp_min(1), ntokens=ntokens,  # loss per token
        )
        full_weights = torch.zeros(n_groups, k, dtype=dtype, device=self.device)
        full_weights[:, sel] = weights.to(dtype)
        width = self.buffer.shape[1] // self.exchange.world_size if start is not None else p
        part = torch.empty(width, dtype=self.buffer.dtype, device=self.device)  # padding: dropped
        if rows.shape[1] > 0:  # (more workers than columns: this worker's slice is padding)
            self.groups.weighted_sum(rows, full_weights, out=part[: rows.shape[1]], start=first)
        combined = self.exchange.gather(part, start, self.buffer.shape[1], p)
        combiner.commit(torch.isfinite(combined).all())
        for param, view, hit in zip(self.groups.params, self.groups.param_views(combined), reached):
            param.grad = view if hit else None
        return combined
