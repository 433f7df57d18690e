"""Parameter groups (Table 1's granularities) laid out in one flat gradient vector.

Every combiner works per group k on the per-task gradients g_ik. The flat layout follows
the order of the groups (a model's layers in order); consecutive groups of equal size (a
transformer's layers) make one batched matmul for the weighted sums, instead of a Python
loop over groups; the Gram matrices are one batched matmul over blocks of all columns.
Both also work on a column range of the flat layout (one worker's shard in the distributed
exchange).
"""
import bisect
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import torch

from .parameter_names import is_embedding, layer_of, side_of

GRANULARITIES = ("whole_model", "enc_dec", "all_layer", "all_matrix")

# Entries per block of the Gram computation: K x 4096 fp32 is 128 KiB at K = 8 (in L2).
GRAM_BLOCK = 4096
# fp16/bf16 rows, and rows of more than 16 tasks, are read in pieces of L/PIECE entries (K rows
# x L/(PIECE K) columns of a range of L columns): the fp32 copy of a piece, and its per-block
# K x K products (K^2 / GRAM_BLOCK per column: ten times the columns at K = 200) stay a small
# fixed fraction of P whatever K and the groups; the price is PIECE x K pieces per pass.
PIECE = 64

def group_key(name: str, granularity: str) -> str:
    """The group a parameter called ``name`` belongs to at ``granularity``."""
    if granularity == "whole_model":
        return "model"
    if granularity == "all_matrix":
        return name
    if granularity == "enc_dec":
        return side_of(name) or "other"
    if granularity == "all_layer":
        return layer_of(name) or ("embeddings" if is_embedding(name) else "other")
    raise ValueError(
        f"unknown granularity {granularity!r}; choose one of {', '.join(GRANULARITIES)}"
    )


def math_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the combiners compute in: fp32, or fp64 for fp64 gradients."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def all_finite(x: torch.Tensor) -> torch.Tensor:
    """Whether every entry of ``x`` is finite: its min and max are (NaN propagates through
    both, and an infinity is one of them). One pass, no temporary, no sum that could
    overflow (an ``isfinite`` mask is a temporary the size of ``x``, and fp64 sums of its
    chunks were slower than a plain sum of K rows: ``benchmarks/combine.py --parts``)."""
    low, high = x.aminmax()
    return torch.isfinite(low) & torch.isfinite(high)


@dataclass(frozen=True)
class _Run:
    """Consecutive groups of equal size inside a column range: the range's columns
    [start : start + count * size] hold groups first .. first + count - 1 (or the parts of
    them that fall inside the range)."""

    start: int
    first: int
    count: int
    size: int


class ParameterGroups:
    """Unique parameters, grouped, mapped to and from one flat vector in a fixed order.

    ``names[k]``/``sizes[k]``/``offsets[k]`` describe group k; the groups are laid out in
    the order given (a model's order of first use), and the parameters of group k occupy
    ``flat[offsets[k] : offsets[k] + sizes[k]]`` in model order. Consecutive groups of
    equal size (a transformer's layers) are batched together. Tied parameters (fairseq's
    --share-all-embeddings) count once.
    """

    def __init__(self, names: Sequence[str], members: Sequence[Sequence[Tuple[str, torch.Tensor]]]):
        if len(names) != len(members) or not names:
            raise ValueError("ParameterGroups needs at least one group")
        if len(set(names)) != len(names):
            raise ValueError(f"parameter group names must be unique, got {list(names)}")
        self.names: List[str] = list(names)
        self.sizes: List[int] = [sum(p.numel() for _, p in ms) for ms in members]
        self.param_names: List[str] = []
        self.params: List[torch.Tensor] = []
        self.param_offsets: List[int] = []
        self.offsets: List[int] = []
        offset = 0
        for ms in members:
            self.offsets.append(offset)
            for pname, p in ms:
                self.param_names.append(pname)
                self.params.append(p)
                self.param_offsets.append(offset)
                offset += p.numel()
        self.numel = offset
        self._runs_cache = {}
        self._grid_cache = {}

    @classmethod
    def from_named_parameters(
        cls, named_parameters: Iterable[Tuple[str, torch.Tensor]], granularity: str = "all_layer"
    ) -> "ParameterGroups":
        """Group a model's trainable parameters; a tensor seen twice (tied) is kept once."""
        seen = set()
        keys: List[str] = []
        members = {}
        for name, p in named_parameters:
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            key = group_key(name, granularity)
            if key not in members:
                keys.append(key)
                members[key] = []
            members[key].append((name, p))
        if not keys:
            raise ValueError("the model has no trainable parameters")
        return cls(keys, [members[k] for k in keys])

    @classmethod
    def from_sizes(cls, sizes: Sequence[int]) -> "ParameterGroups":
        """Groups of the given sizes, laid out in the order given (for callers without a
        model: group k is ``flat[offsets[k] : offsets[k] + sizes[k]]``)."""
        if any(int(s) <= 0 for s in sizes):
            raise ValueError(f"group sizes must be positive, got {list(sizes)}")
        members = [[(f"group{k}", torch.empty(int(s), device="meta"))] for k, s in enumerate(sizes)]
        return cls([f"group{k}" for k in range(len(sizes))], members)

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        if name not in self.names:
            raise ValueError(f"no parameter group {name!r}; groups are {self.names}")
        return self.names.index(name)

    def columns(self, prefix: str) -> Tuple[int, int]:
        """The column range [start, stop) of the parameters called ``prefix`` or
        ``prefix.*`` (one parameter, or a module such as ``decoder.layers.5``); they must
        be contiguous in the flat layout (a module inside one group, or whole groups)."""
        spans = sorted(
            (o, o + p.numel())
            for name, p, o in zip(self.param_names, self.params, self.param_offsets)
            if name == prefix or name.startswith(prefix + ".")
        )
        if not spans:
            raise ValueError(f"no parameter is called {prefix!r} or {prefix + '.*'!r}")
        start, stop = spans[0][0], spans[-1][1]
        if sum(b - a for a, b in spans) != stop - start:
            raise ValueError(
                f"the parameters {prefix + '.*'!r} are not contiguous in the flat layout (they "
                "lie in groups with parameters of other modules): choose a module inside one group"
            )
        return start, stop

    def param_views(self, flat: torch.Tensor) -> List[torch.Tensor]:
        """Views of ``flat`` (shape [P]) shaped like each parameter, in ``self.params`` order."""
        return [
            flat[o : o + p.numel()].view(p.shape) for o, p in zip(self.param_offsets, self.params)
        ]

    def flatten(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """One flat vector [P] from tensors shaped like ``self.params``, in that order."""
        if len(tensors) != len(self.params):
            raise ValueError(f"expected {len(self.params)} tensors, got {len(tensors)}")
        for name, t, p in zip(self.param_names, tensors, self.params):
            if t.shape != p.shape:
                raise ValueError(f"{name}: expected shape {tuple(p.shape)}, got {tuple(t.shape)}")
        return torch.cat([t.reshape(-1) for t in tensors])

    def unflatten(self, flat: torch.Tensor) -> List[torch.Tensor]:
        """The inverse of flatten: views of ``flat`` shaped like ``self.params``."""
        if flat.shape != (self.numel,):
            raise ValueError(f"expected a flat vector of shape [{self.numel}], got {tuple(flat.shape)}")
        return self.param_views(flat)

    def _runs(self, start: int, stop: int) -> List[_Run]:
        """The groups' parts inside columns [start, stop), as runs of equal-size parts.

        A group cut by the range's ends contributes its part inside; the full range
        (0, numel) gives every group whole. Runs are in range-local coordinates.
        """
        key = (start, stop)
        if key not in self._runs_cache:
            runs: List[_Run] = []
            for k, (o, s) in enumerate(zip(self.offsets, self.sizes)):
                lo, hi = max(o, start), min(o + s, stop)
                if lo >= hi:
                    continue
                last = runs[-1] if runs else None
                if last is not None and last.size == hi - lo and last.first + last.count == k:
                    runs[-1] = _Run(last.start, last.first, last.count + 1, last.size)
                else:
                    runs.append(_Run(lo - start, k, 1, hi - lo))
            self._runs_cache[key] = runs
        return self._runs_cache[key]

    def _columns(self, grads: torch.Tensor, start: Optional[int]) -> Tuple[int, int]:
        """The column range [start, stop) that [K, L] ``grads`` holds: the whole layout when
        ``start`` is None, else columns [start, start + L) of it."""
        whole = start is None
        start = 0 if whole else start
        stop = start + (grads.shape[1] if grads.dim() == 2 else -1)
        if grads.dim() != 2 or (whole and stop != self.numel) or not 0 <= start < stop <= self.numel:
            raise ValueError(
                f"expected gradients of shape [K, {self.numel}]"
                + ("" if whole else f" or a range of those columns, from column {start}")
                + f", got {tuple(grads.shape)}"
            )
        return start, stop

    def _grid(self, start: int, stop: int):
        """gram()'s plan for columns [start, stop): blocks of GRAM_BLOCK columns on one grid
        from the range's first column, whatever the groups. Returns (blocks, spans, pieces):
        ``spans`` (group, first block, end block) of the consecutive blocks inside one group,
        ``pieces`` (group, lo, hi) of the blocks across a group boundary and of the tail,
        in range-local columns."""
        key = (start, stop)
        if key not in self._grid_cache:
            length = stop - start
            blocks = length // GRAM_BLOCK
            ends = [o + s - start for o, s in zip(self.offsets, self.sizes)]  # range-local group ends
            spans, cut = [], []
            for b in range(blocks):  # g, h: the groups of the block's first and last column
                g = bisect.bisect_right(ends, b * GRAM_BLOCK)
                h = bisect.bisect_right(ends, b * GRAM_BLOCK + GRAM_BLOCK - 1)
                if g != h:
                    cut.append((b * GRAM_BLOCK, b * GRAM_BLOCK + GRAM_BLOCK))
                elif spans and spans[-1][0] == g and spans[-1][2] == b:
                    spans[-1][2] = b + 1
                else:
                    spans.append([g, b, b + 1])
            if length % GRAM_BLOCK:
                cut.append((blocks * GRAM_BLOCK, length))
            pieces = []
            for lo, hi in cut:
                g = bisect.bisect_right(ends, lo)
                while lo < hi:
                    end = min(hi, ends[g])
                    pieces.append((g, lo, end))
                    lo, g = end, g + 1
            self._grid_cache[key] = (blocks, [tuple(x) for x in spans], pieces)
        return self._grid_cache[key]

    @staticmethod
    def _pieces(run: _Run, k: int, limit: int):
        """(group offset in the run, groups, first column, last column) pieces of ``run``
        whose [K, groups, columns] copy holds at most ``limit`` entries: several whole small
        groups at a time, or a large group in column stretches (of whole blocks when they fit)."""
        if k * run.size <= limit:
            n = max(1, limit // (k * run.size))
            for g in range(0, run.count, n):
                yield g, min(n, run.count - g), 0, run.size
        else:
            width = max(1, limit // k)
            if width >= GRAM_BLOCK:
                width -= width % GRAM_BLOCK
            for g in range(run.count):
                for lo in range(0, run.size, width):
                    yield g, 1, lo, min(lo + width, run.size)

    @staticmethod
    def _piece_limit(grads: torch.Tensor, start: int, stop: int) -> Optional[int]:
        """Entries of one piece, or None where whole runs at once stay small: rows in the
        math dtype (no copy) of at most 16 tasks (block products of at most 1/16 of the
        columns)."""
        k = grads.shape[0]
        if grads.dtype == math_dtype(grads.dtype) and k * k * 16 <= GRAM_BLOCK:
            return None
        return ParameterGroups._piece_entries(start, stop)

    @staticmethod
    def _piece_entries(start: int, stop: int) -> int:
        """Entries of one piece of columns [start, stop): L/PIECE, at least one block."""
        return max((stop - start) // PIECE, GRAM_BLOCK)

    def _gram_pieces(self, seg, dst, run, dtype, limit):
        """gram() of one run of columns, piece by piece in ``dtype``."""
        k = seg.shape[0]
        groups = seg.reshape(k, run.count, run.size)
        dst.zero_()
        for g, n, lo, hi in self._pieces(run, k, limit):
            x = groups[:, g : g + n, lo:hi]
            blocks, tail = divmod(hi - lo, GRAM_BLOCK)
            if blocks:
                y = x[:, :, : blocks * GRAM_BLOCK].reshape(k, n * blocks, GRAM_BLOCK).transpose(0, 1).to(dtype)
                dst[g : g + n] += torch.bmm(y, y.transpose(1, 2)).view(n, blocks, k, k).sum(1)
            if tail:
                t = x[:, :, blocks * GRAM_BLOCK :].transpose(0, 1).to(dtype)
                dst[g : g + n] += torch.bmm(t, t.transpose(1, 2))

    def gram(self, grads: torch.Tensor, start: Optional[int] = None) -> torch.Tensor:
        """Per-group Gram matrices (fp32; fp64 for fp64 gradients), shape [num_groups, K, K]:
        G_k[i, j] = g_ik . g_jk.

        With ``start``, ``grads`` holds only the columns [start, start + L) of the flat layout (one
        worker's shard): then G_k covers the part of group k inside that range (zero for
        groups outside it), and the shards' Gram matrices add up to the whole one.

        The columns are cut into blocks of GRAM_BLOCK entries on one grid, one small [K, K]
        product per block (one batched matmul over all blocks), and each group sums its
        blocks; a block across a group boundary is split there. One matmul per group,
        [K, size] x [size, K], is a GEMM with a huge inner dimension that the CPU BLAS runs
        at half the memory bandwidth; blocks of K x 4096 stay in cache, give every thread its
        own blocks, and sum block by block (more accurate in fp32 too). fp16/bf16 rows, and
        rows of more than 16 tasks, go group by group, L/PIECE entries at a time.
        """
        start, stop = self._columns(grads, start)
        k, dtype = grads.shape[0], math_dtype(grads.dtype)
        out = torch.zeros(len(self), k, k, dtype=dtype, device=grads.device)
        limit = self._piece_limit(grads, start, stop)
        if limit is not None:
            for run in self._runs(start, stop):
                seg = grads[:, run.start : run.start + run.count * run.size]
                self._gram_pieces(seg, out[run.first : run.first + run.count], run, dtype, limit)
            return out
        # One grid of blocks over the whole range, one batched matmul for all of them (a view
        # of the rows, no copy), whatever the groups: per-group or per-run products were
        # hundreds of small matmuls at all_matrix. The blocks inside a group are summed into
        # it in block order (deterministic on every device); the blocks across a group
        # boundary, and the tail, are added piece by piece.
        blocks, spans, pieces = self._grid(start, stop)
        if blocks:
            x = grads[:, : blocks * GRAM_BLOCK].reshape(k, blocks, GRAM_BLOCK).transpose(0, 1)
            products = torch.bmm(x, x.transpose(1, 2))
            for g, a, b in spans:
                out[g] += products[a:b].sum(0)
        for g, lo, hi in pieces:
            t = grads[:, lo:hi]
            out[g].addmm_(t, t.T)
        return out

    def weighted_sum(
        self,
        grads: torch.Tensor,
        weights: torch.Tensor,
        out: Optional[torch.Tensor] = None,
        start: Optional[int] = None,
    ) -> torch.Tensor:
        """sum_m weights[k, m] * g_mk for every group k; weights has shape [num_groups, K].

        With ``start``, as in gram(), ``grads`` holds the columns [start, start + L) only; the result then
        covers those columns. The sum is taken in the math dtype and stored in the
        gradients' dtype (fp16/bf16 rows piece by piece, as in gram()).
        """
        start, stop = self._columns(grads, start)
        k, dtype = grads.shape[0], math_dtype(grads.dtype)
        if out is None:
            out = torch.empty(stop - start, dtype=grads.dtype, device=grads.device)
        weights = weights.to(grads.device)
        low = grads.dtype != dtype or out.dtype != dtype
        limit = self._piece_entries(start, stop)
        for run in self._runs(start, stop):
            seg = grads[:, run.start : run.start + run.count * run.size].reshape(k, run.count, run.size)
            w = weights[run.first : run.first + run.count].unsqueeze(1).to(dtype)
            dst = out[run.start : run.start + run.count * run.size].view(run.count, 1, run.size)
            if not low:
                # one GEMV per group on the [size, K] column-major view: faster than the
                # plain sum of the rows (K = 8, 60.5M: 0.74-0.87x), where a batched
                # [1, K] x [K, size] matmul was 1.1-1.8x (benchmarks/combine.py)
                for j in range(run.count):
                    torch.mv(seg[:, j].T, w[j, 0], out=dst[j, 0])
                continue
            for g, n, lo, hi in self._pieces(run, k, limit):  # the sum in fp32, then stored
                dst[g : g + n, :, lo:hi].copy_(torch.bmm(w[g : g + n], seg[:, g : g + n, lo:hi].transpose(0, 1).to(dtype)))
        return out
