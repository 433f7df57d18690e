"""How the per-direction gradient rows of N workers become one combined gradient, with
exactly the math of one worker that saw every worker's batches (torch.distributed only).

Each worker holds rows only for the directions its own batches of this update had (S of
them; all K with --direction-batching split, at most min(--update-freq, K) with single),
each row a direction's gradient over the flat parameter layout, padded to N equal slices.
A combiner needs only the per-group Gram matrices of the rows summed over workers, plus a
weighted sum of those rows. Per update:
1. the direction labels of every worker's rows, a few bytes, are all-gathered;
2. one all-to-all per row index: each worker sends slice r of its s-th row to worker r
   (a row is laid out slice by slice: nothing is staged to send);
   worker r sums what it receives by direction into [K_present, P/N] (one round's receive
   buffer holds one slice from each worker: P values, the memory of step 4's P-vector);
3. the partial Gram matrices of the slice and the small per-direction statistics go through
   ONE all-reduce of a few kilobytes (partial Grams add up; groups cut by slice boundaries
   are fine), so every worker computes the same combination weights;
4. each worker writes the weighted sum of its slice into its part of the P-vector; one
   all-gather (in place) completes it.
Per worker that moves (N-1)/N (S P + P) values, against stock DDP's ring all-reduce of the
sum, 2 (N-1)/N P: (S+1)/2 times as much, 1.0x at S = 1 whatever K. Memory: the S rows, and
while combining K_present P / N + P more: the summed slices, and the P-vector.
"""
from typing import List, Sequence, Tuple

import torch
import torch.distributed as dist


class LocalExchange:
    """One worker: the rows stay where they are, and nothing is sent. The interface every
    exchange has, so that the combination reads the same for one worker and for N."""

    world_size, rank, distributed = 1, 0, False

    def padded_numel(self, numel: int) -> int:
        """Columns of a row: P rounded up to a multiple of N (equal slices)."""
        return -(-numel // self.world_size) * self.world_size

    def columns(self, padded: int, numel: int) -> Tuple[int, int]:
        """This worker's slice [start, stop) of the first ``numel`` columns of rows of
        ``padded`` columns (empty when there are more workers than columns)."""
        width = padded // self.world_size
        start = self.rank * width
        return start, max(start, min(start + width, numel))

    def gather_labels(self, labels: Sequence[int], capacity: int, device) -> List[List[int]]:
        """Every worker's row labels (direction numbers, in the order its rows are sent)."""
        return [list(labels)]

    def present_rows(self, rows: torch.Tensor, numel: int, sent: Sequence[int], labels: List[List[int]],
                     present: Sequence[int], local: Sequence[int], received: torch.Tensor
                     ) -> Tuple[torch.Tensor, List[int]]:
        """The rows of the present directions within this worker's slice, and which of them
        holds present direction i. ``rows`` [S, padded]: this worker's rows; ``local[i]``:
        the row of present direction i here; the other arguments as in sum_rows()."""
        return rows[:, :numel], list(local)

    def all_reduce_stats(self, stats: torch.Tensor) -> torch.Tensor:
        """Sum the small per-step statistics (partial Grams, counts) over workers, in place."""
        return stats

    def gather(self, combined: torch.Tensor) -> torch.Tensor:
        """Complete the padded P-vector whose slice ``rank`` this worker wrote, in place."""
        return combined


class GradientExchange(LocalExchange):
    """The collectives of one worker among ``world_size`` (torch.distributed; NCCL or gloo).

    Each received slice is divided by ``world_size`` before it is added, as fairseq's
    legacy_ddp divides before its all-reduce (the trainer multiplies the update by
    world_size / sample_size afterwards): N finite fp16 slices then sum to a finite fp16
    result wherever stock DDP's does, so the loss scale settles where stock's does.
    """

    distributed = True

    def __init__(self, world_size: int, rank: int, group=None):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad rank {rank} of world size {world_size}")
        self.world_size = world_size
        self.rank = rank
        self.group = group

    def gather_labels(self, labels: Sequence[int], capacity: int, device) -> List[List[int]]:
        """Every worker's row labels (direction numbers, in the order its rows are sent)."""
        mine = torch.full((capacity,), -1, dtype=torch.int64, device=device)
        mine[: len(labels)] = torch.tensor(list(labels), dtype=torch.int64, device=device)
        every = torch.empty(self.world_size * capacity, dtype=torch.int64, device=device)
        dist.all_gather_into_tensor(every, mine, group=self.group)
        return [[d for d in row if d >= 0] for row in every.view(self.world_size, capacity).tolist()]

    def present_rows(self, rows, numel, sent, labels, present, local, received):
        """Every worker's rows of the present directions, summed (sum_rows), in the order of
        ``present``."""
        start, stop = self.columns(rows.shape[1], numel)
        return self.sum_rows(rows, sent, labels, present, received)[:, : stop - start], list(range(len(present)))

    def sum_rows(self, rows: torch.Tensor, sent: Sequence[int], labels: List[List[int]],
                 present: Sequence[int], received: torch.Tensor) -> torch.Tensor:
        """This worker's slice of every present direction's row divided by N and summed over
        workers: [len(present), padded / N], in the order of ``present``.

        ``rows`` [S, padded]: this worker's rows; ``sent``: the indices of the rows it sends,
        whose labels are ``labels[rank]``; ``labels``: every worker's (gather_labels);
        ``received``: [padded] scratch for one slice from each worker (the P-vector that
        gather() completes later: no buffer of its own)."""
        n = self.world_size
        width = rows.shape[1] // n
        position = {d: i for i, d in enumerate(present)}
        summed = rows.new_zeros(len(present), width)
        rounds = max(len(row) for row in labels)
        for s in range(rounds):
            senders = [q for q in range(n) if len(labels[q]) > s]
            sends = s < len(sent)
            out = received[: len(senders) * width]
            dist.all_to_all_single(
                out, rows[sent[s]] if sends else rows.new_empty(0),
                output_split_sizes=[width if q in senders else 0 for q in range(n)],
                input_split_sizes=[width if sends else 0] * n, group=self.group,
            )
            # divided first (stock's order: no fp16 overflow of the sum), then in worker
            # order, one add at a time: the same sum on every run
            out.div_(n)
            for q, chunk in zip(senders, out.view(len(senders), width)):
                summed[position[labels[q][s]]] += chunk
        return summed

    def all_reduce_stats(self, stats: torch.Tensor) -> torch.Tensor:
        """Sum the small per-step statistics (partial Grams, counts) over workers, in place."""
        dist.all_reduce(stats, group=self.group)
        return stats

    def gather(self, combined: torch.Tensor) -> torch.Tensor:
        """Complete the padded P-vector whose slice ``rank`` this worker wrote, in place."""
        width = combined.numel() // self.world_size
        mine = combined[self.rank * width : (self.rank + 1) * width]
        dist.all_gather_into_tensor(combined, mine, group=self.group)
        return combined


def exchange_for(world_size: int, rank: int, group=None) -> LocalExchange:
    """The exchange of one worker among ``world_size``."""
    return GradientExchange(world_size, rank, group) if world_size > 1 else LocalExchange()
