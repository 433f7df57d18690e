"""Per-direction gradients written by autograd straight into one [K, P] buffer.

Before direction d's backward pass every parameter's ``.grad`` is pointed at its slice of
row d, so autograd accumulates there in place: no copy per direction, and ``--update-freq``
micro-batches of the same direction accumulate in the same row. Only a row's first use in
an update zeroes it. Pure PyTorch, no fairseq import.
"""
from typing import List, Optional

import torch

from .surgery import Combiner, ParameterGroups


class DirectionGradients:
    def __init__(self, groups: ParameterGroups, capacity: int):
        params = groups.params
        kinds = {(p.dtype, p.device) for p in params}
        if len(kinds) != 1:
            raise ValueError(f"all trainable parameters must share dtype and device, got {kinds}")
        self.groups = groups
        self.buffer = torch.zeros(capacity, groups.numel, dtype=params[0].dtype, device=params[0].device)
        self._row_views = [groups.param_views(self.buffer[r]) for r in range(capacity)]
        self.directions: List[str] = []  # directions of the update in progress, by row

    @property
    def capacity(self) -> int:
        return self.buffer.shape[0]

    def update_started(self) -> bool:
        """True once the trainer cleared the gradients (zero_grad) for a new update."""
        return self.groups.params[0].grad is None

    def reset(self) -> None:
        self.directions = []

    def select(self, direction: str) -> None:
        """Route the next backward pass into ``direction``'s row."""
        if direction not in self.directions:
            if len(self.directions) == self.capacity:
                raise ValueError(
                    f"more directions in one update than the {self.capacity} declared: "
                    f"{self.directions + [direction]}"
                )
            self.directions.append(direction)
            self.buffer[len(self.directions) - 1].zero_()
        row = self.directions.index(direction)
        for p, view in zip(self.groups.params, self._row_views[row]):
            p.grad = view

    def combine(
        self,
        combiner: Combiner,
        step: int,
        losses: Optional[torch.Tensor] = None,
        ntokens: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Combine the rows of this update and make the result every parameter's ``.grad``."""
        k = len(self.directions)
        combined = combiner.combine(
            self.buffer[:k], self.directions, self.groups, step, losses=losses, ntokens=ntokens
        )
        for p, view in zip(self.groups.params, self.groups.param_views(combined)):
            p.grad = view
        self.directions = []
        return combined
