"""Parameter groups (Table 1's granularities) laid out in one flat gradient vector.

Every combiner works per group k on the per-task gradients g_ik. The flat layout puts
groups of equal size next to each other, so that the per-group Gram matrices and the
per-group weighted sums are a handful of batched matmuls (one per run of equal-size
groups) instead of a Python loop over groups.
"""
import re
from dataclasses import dataclass
from typing import Iterable, List, Sequence, Tuple

import torch

GRANULARITIES = ("whole_model", "enc_dec", "all_layer", "all_matrix")

# Entries per block of the Gram computation: K x 4096 fp32 is 128 KiB at K = 8 (in L2).
GRAM_BLOCK = 4096

_LAYER = re.compile(r"^(?:.*\.)?((?:encoder|decoder)\.layers\.\d+)\.")


def group_key(name: str, granularity: str) -> str:
    """The group a parameter called ``name`` belongs to at ``granularity``."""
    if granularity == "whole_model":
        return "model"
    if granularity == "all_matrix":
        return name
    top = name.split(".", 1)[0]
    if granularity == "enc_dec":
        return top if top in ("encoder", "decoder") else "other"
    if granularity == "all_layer":
        m = _LAYER.match(name)
        if m:
            return m.group(1)
        if "embed" in name or "output_projection" in name:
            return "embeddings"
        return "other"
    raise ValueError(
        f"unknown granularity {granularity!r}; choose one of {', '.join(GRANULARITIES)}"
    )


def math_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the combiners compute in: fp32, or fp64 for fp64 gradients."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@dataclass(frozen=True)
class _Run:
    """Consecutive groups of equal size: flat[start : start + count * size]."""

    start: int
    count: int
    size: int


class ParameterGroups:
    """Unique parameters, grouped, mapped to and from one flat vector in a fixed order.

    ``names[k]``/``sizes[k]``/``offsets[k]`` describe group k in storage order; the
    parameters of group k occupy ``flat[offsets[k] : offsets[k] + sizes[k]]`` in model
    order. ``model_order`` lists the group names as the model first uses them. Tied parameters (fairseq's --share-all-embeddings) count once.
    """

    def __init__(self, names: Sequence[str], members: Sequence[Sequence[Tuple[str, torch.Tensor]]]):
        if len(names) != len(members) or not names:
            raise ValueError("ParameterGroups needs at least one group")
        sizes = [sum(p.numel() for _, p in ms) for ms in members]
        # Stable sort by size: equal-size groups become adjacent runs.
        self.model_order: List[str] = list(names)
        order = sorted(range(len(names)), key=lambda k: sizes[k])
        self.names: List[str] = [names[k] for k in order]
        self.sizes: List[int] = [sizes[k] for k in order]
        self.param_names: List[str] = []
        self.params: List[torch.Tensor] = []
        self.param_offsets: List[int] = []
        self.offsets: List[int] = []
        offset = 0
        for k in order:
            self.offsets.append(offset)
            for pname, p in members[k]:
                self.param_names.append(pname)
                self.params.append(p)
                self.param_offsets.append(offset)
                offset += p.numel()
        self.numel = offset
        self._runs: List[_Run] = []
        for k, size in enumerate(self.sizes):
            last = self._runs[-1] if self._runs else None
            if last is not None and last.size == size:
                self._runs[-1] = _Run(last.start, last.count + 1, size)
            else:
                self._runs.append(_Run(self.offsets[k], 1, size))

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
        """Groups of the given sizes, without a model (for tests and benchmarks)."""
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

    def param_views(self, flat: torch.Tensor) -> List[torch.Tensor]:
        """Views of ``flat`` (shape [P]) shaped like each parameter, in ``self.params`` order."""
        return [
            flat[o : o + p.numel()].view(p.shape) for o, p in zip(self.param_offsets, self.params)
        ]

    def _check_grads(self, grads: torch.Tensor) -> None:
        if grads.dim() != 2 or grads.shape[1] != self.numel:
            raise ValueError(
                f"expected gradients of shape [K, {self.numel}], got {tuple(grads.shape)}"
            )

    def _segments(self, grads: torch.Tensor):
        """Yield (run, [count, K, size] view/copy of that run of groups in the math dtype).

        fp16/bf16 gradients are upcast to fp32; fp64 gradients keep fp64 (casting them to
        fp32 would throw away precision that fp64 callers, e.g. the exact tests, ask for).
        """
        self._check_grads(grads)
        k = grads.shape[0]
        for run in self._runs:
            seg = grads[:, run.start : run.start + run.count * run.size]
            yield run, seg.reshape(k, run.count, run.size).transpose(0, 1).to(math_dtype(grads.dtype))

    def gram(self, grads: torch.Tensor) -> torch.Tensor:
        """Per-group Gram matrices (fp32; fp64 for fp64 gradients), shape [num_groups, K, K]:
        G_k[i, j] = g_ik . g_jk.

        A group is cut into blocks of GRAM_BLOCK entries, one small [K, K] product per
        block (a batched matmul over all blocks of a run of groups), then the blocks are
        summed. One matmul per group, [K, size] x [size, K], is a GEMM with a huge inner
        dimension that the CPU BLAS runs at half the memory bandwidth; blocks of K x 4096
        stay in cache, give every thread its own blocks, and sum in a pairwise-like order
        (more accurate in fp32 too).
        """
        self._check_grads(grads)
        k, dtype = grads.shape[0], math_dtype(grads.dtype)
        parts = []
        for run in self._runs:
            seg = grads[:, run.start : run.start + run.count * run.size]
            blocks, tail = divmod(run.size, GRAM_BLOCK)
            if blocks == 0:  # small groups: one product per group
                x = seg.reshape(k, run.count, run.size).transpose(0, 1).to(dtype)
                parts.append(torch.bmm(x, x.transpose(1, 2)))
            elif tail == 0:  # every group is whole blocks: one batched matmul for the run
                x = seg.reshape(k, run.count * blocks, GRAM_BLOCK).transpose(0, 1).to(dtype)
                parts.append(torch.bmm(x, x.transpose(1, 2)).view(run.count, blocks, k, k).sum(1))
            else:  # blocks, then the tail, group by group (all views, no copy in fp32)
                for g in range(run.count):
                    o = g * run.size
                    x = seg[:, o : o + blocks * GRAM_BLOCK].reshape(k, blocks, GRAM_BLOCK)
                    x = x.transpose(0, 1).to(dtype)
                    t = seg[:, o + blocks * GRAM_BLOCK : o + run.size].to(dtype)
                    parts.append((torch.bmm(x, x.transpose(1, 2)).sum(0) + t @ t.T).unsqueeze(0))
        return torch.cat(parts)

    def weighted_sum(self, grads: torch.Tensor, weights: torch.Tensor, out: torch.Tensor = None) -> torch.Tensor:
        """sum_m weights[k, m] * g_mk for every group k; weights has shape [num_groups, K]."""
        if out is None:
            out = torch.empty(self.numel, dtype=grads.dtype, device=grads.device)
        k = 0
        for run, seg in self._segments(grads):
            w = weights[k : k + run.count].unsqueeze(1).to(seg.dtype)
            dst = out[run.start : run.start + run.count * run.size].view(run.count, 1, run.size)
            if dst.dtype == seg.dtype:
                torch.bmm(w, seg, out=dst)
            else:  # fp16/bf16 gradients: the sum is taken in fp32, then stored
                dst.copy_(torch.bmm(w, seg))
            k += run.count
        return out
