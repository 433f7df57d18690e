"""How the per-direction gradient rows of N workers become one combined gradient, with
exactly the math of one worker that saw every worker's batches (torch.distributed only).

Every worker holds rows [K, P] (one per training direction, zeros where its batch lacked
the direction). A combiner needs only the per-group K x K Gram matrices of the rows summed
over workers, plus a weighted sum of those rows. The sharded exchange (default):
1. reduce-scatter the rows: worker r holds all K summed rows of its 1/N slice of P;
2. the partial Gram matrices of the slice, and the small per-direction statistics, go
   through ONE all-reduce of a few kilobytes (partial Grams add up; groups cut by slice
   boundaries are fine), so every worker computes the same combination weights;
3. each worker forms the weighted sum of its slice; one all-gather gives the P-vector.
Per worker a ring moves (N-1)/N (K P + P) elements, against stock DDP's all-reduce of the
sum, 2 (N-1)/N P: (K+1)/2 times as much, where all-reducing the stacked [K, P] rows
moves K times as much. The Gram and weighted-sum work is split N ways too.

The stacked exchange (one all-reduce of [K, P], then everything on every worker) is kept
only as the reference the tests and benchmarks compare against.
"""
from typing import Optional, Tuple

import torch
import torch.distributed as dist

EXCHANGES = ("sharded", "stacked")


class GradientExchange:
    """The collectives of one worker among ``world_size`` (torch.distributed; NCCL or gloo).

    Rows are divided by ``world_size`` before they are summed, as fairseq's legacy_ddp does:
    the trainer multiplies the update by world_size / sample_size afterwards.
    """

    def __init__(self, world_size: int, rank: int, group=None, mode: str = "sharded"):
        if mode not in EXCHANGES:
            raise ValueError(f"unknown gradient exchange {mode!r}; choose one of {', '.join(EXCHANGES)}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad rank {rank} of world size {world_size}")
        self.world_size = world_size
        self.rank = rank
        self.group = group
        self.mode = mode

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def padded_numel(self, numel: int) -> int:
        """Columns of the row buffer: P rounded up to a multiple of N (equal slices)."""
        return -(-numel // self.world_size) * self.world_size if self.mode == "sharded" else numel

    def reduce_rows(self, rows: torch.Tensor, numel: int) -> Tuple[torch.Tensor, Optional[int]]:
        """Sum ``rows`` [K, padded P] over workers. Returns (summed rows, start): all P
        columns and start None, or (sharded) this worker's slice of columns
        [start, start + L) of the first ``numel``."""
        if not self.distributed:
            return rows[:, :numel], None
        n, k = self.world_size, rows.shape[0]
        if self.mode == "stacked":
            rows.div_(n)
            dist.all_reduce(rows, group=self.group)
            return rows[:, :numel], None
        width = rows.shape[1] // n
        # [N, K, width]: the chunk for worker r is every row's slice r, contiguous.
        chunks = torch.empty(n, k, width, dtype=rows.dtype, device=rows.device)
        torch.div(rows.view(k, n, width).transpose(0, 1), n, out=chunks)
        mine = torch.empty(k, width, dtype=rows.dtype, device=rows.device)
        dist.reduce_scatter_tensor(mine, chunks.view(n * k, width), group=self.group)
        start = self.rank * width
        stop = min(start + width, numel)
        if stop <= start:  # more workers than columns: this slice is all padding
            return mine[:, :0], start
        return mine[:, : stop - start], start

    def all_reduce_stats(self, stats: torch.Tensor) -> torch.Tensor:
        """Sum the small per-step statistics (partial Grams, counts) over workers, in place."""
        if self.distributed:
            dist.all_reduce(stats, group=self.group)
        return stats

    def gather(self, part: torch.Tensor, start: Optional[int], padded: int, numel: int) -> torch.Tensor:
        """The combined P-vector from every worker's part (sharded), or ``part`` itself."""
        if start is None:
            return part
        width = padded // self.world_size
        mine = part.new_zeros(width)
        mine[: part.numel()] = part
        full = part.new_empty(padded)
        dist.all_gather_into_tensor(full, mine, group=self.group)
        return full[:numel]
