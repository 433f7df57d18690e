"""Raw cosine similarity of the ORIGINAL per-direction gradients (Part I of the paper), per
direction pair and parameter group, from the engine's Gram matrices (pure PyTorch).

The groups are those of a granularity (the combiner's, or a finer one) plus three
aggregates: ``model`` (every parameter), ``encoder_layers`` and ``decoder_layers`` (the
encoder's / decoder's parameters without the embeddings: with shared embeddings the
embedding matrix is also the decoder's output projection, so it belongs to neither). They
are read off the combiner's flat layout, whatever its granularity: the layout is cut into
segments of consecutive parameters that share their recording group and aggregates, the
engine's batched Gram gives one K x K matrix per segment (also on one worker's column
slice: the slices' matrices add up), and each recorded group sums its segments.
"""
import bisect
import math
from dataclasses import dataclass
from functools import cached_property
from typing import List, Optional, Sequence

import torch

from ..combiners.cosine import gram_cosines
from ..combiners.groups import ParameterGroups, group_key
from ..combiners.parameter_names import SIDES, is_embedding, side_of

SIDE_AGGREGATES = {side: f"{side}_layers" for side in SIDES}  # a side's layers, embeddings left out
AGGREGATES = ("model", *SIDE_AGGREGATES.values())

COLUMNS = ("update", "a", "b", "group", "cosine", "norm_a", "norm_b", "ntokens_a", "ntokens_b")


def aggregates_of(name: str) -> List[str]:
    """The aggregates parameter ``name`` counts in."""
    out = ["model"]
    side = side_of(name)
    if side is not None and not is_embedding(name):
        out.append(SIDE_AGGREGATES[side])
    return out


class SimilarityGroups:
    """The recorded groups over a combiner's flat layout ``groups``.

    ``granularity`` None records the combiner's own groups; e.g. ``all_layer`` records per
    layer while the combiner works on the whole model.
    """

    def __init__(self, groups: ParameterGroups, granularity: Optional[str] = None):
        keys = []
        for name, offset in zip(groups.param_names, groups.param_offsets):
            if granularity is None:
                keys.append(groups.names[bisect.bisect_right(groups.offsets, offset) - 1])
            else:
                keys.append(group_key(name, granularity))
        self.names: List[str] = list(dict.fromkeys(keys))
        self.names += [a for a in AGGREGATES if a not in self.names]
        sizes, members = [], []
        for key, name, p in zip(keys, groups.param_names, groups.params):
            member = {self.names.index(key)} | {self.names.index(a) for a in aggregates_of(name)}
            if members and members[-1] == member:
                sizes[-1] += p.numel()
            else:
                sizes.append(p.numel())
                members.append(member)
        self.segments = ParameterGroups.from_sizes(sizes)
        self.membership = torch.zeros(len(self.names), len(sizes))
        for s, member in enumerate(members):
            self.membership[sorted(member), s] = 1.0

    def gram(self, rows: torch.Tensor, start: Optional[int] = None) -> torch.Tensor:
        """[num_recorded_groups, K, K] Gram matrices of the rows [K, P] (or of the columns
        [start, start + L) of them, as ParameterGroups.gram)."""
        seg = self.segments.gram(rows, start=start)
        return torch.einsum("rs,sij->rij", self.membership.to(seg), seg)


@dataclass
class SimilarityRecord:
    """One update's Gram matrices of the recorded groups, for the directions present."""

    update: int
    directions: List[str]
    group_names: List[str]
    gram: torch.Tensor  # [num_groups, K, K]
    ntokens: Sequence[float]

    @cached_property
    def cosines(self):
        """(cosines [num_groups, K, K], norms [num_groups, K]) on the CPU: one host sync
        per record, shared by rows() and summary()."""
        return gram_cosines(self.gram.detach().double().cpu())

    def rows(self) -> List[tuple]:
        """The similarity.csv rows: one per unordered pair (a before b) and group."""
        cos, norms = (t.tolist() for t in self.cosines)
        out = []
        k = len(self.directions)
        for g, group in enumerate(self.group_names):
            for i in range(k):
                for j in range(i + 1, k):
                    out.append((
                        self.update, self.directions[i], self.directions[j], group,
                        cos[g][i][j], norms[g][i], norms[g][j],
                        int(self.ntokens[i]), int(self.ntokens[j]),
                    ))
        return out

    def summary(self):
        """(mean cosine of the whole model over pairs, share of negative cosines over pairs
        and the recorded non-aggregate groups): the console's two numbers, whatever K."""
        cos = self.cosines[0]
        k = cos.shape[-1]
        upper = torch.triu(torch.ones(k, k, dtype=torch.bool), diagonal=1)
        model = cos[self.group_names.index("model")][upper]
        groups = [g for g, n in enumerate(self.group_names) if n not in AGGREGATES] or [
            self.group_names.index("model")
        ]
        per_group = cos[groups][:, upper]
        per_group = per_group[~torch.isnan(per_group)]
        model = model[~torch.isnan(model)]
        mean = model.mean().item() if model.numel() else math.nan
        conflicts = (per_group < 0).double().mean().item() if per_group.numel() else math.nan
        return mean, conflicts
