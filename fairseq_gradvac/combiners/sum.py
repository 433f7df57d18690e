"""The plain sum (multilingual training) and the static scalarization."""
import math
from typing import Dict, Optional

import torch

from .combiner import Combiner, StepReport, register_combiner
from .options import direction_weights


@register_combiner("sum")
class SumCombiner(Combiner):
    """Plain multilingual training: the update is the sum of the task gradients; with
    ``direction_weights`` (task name -> w, others 1) the static scalarization
    sum_i w_i g_i that Xin et al. (NeurIPS 2022) tune as the baseline of every method."""

    needs_gram = False

    def __init__(self, direction_weights: Optional[Dict[str, float]] = None):
        super().__init__()
        weights = dict(direction_weights or {})
        bad = {d: w for d, w in weights.items() if not (math.isfinite(w) and w >= 0)}
        if bad:
            raise ValueError(f"direction weights must be finite and >= 0, got {bad}")
        self.direction_weights = weights

    @classmethod
    def add_args(cls, parser):
        parser.add_argument("--direction-weights", type=direction_weights, default=None, metavar="W",
                            help="static scalarization (Xin et al., 2022): fixed weights of the "
                                 "directions' losses, e.g. en-hi:2,hi-en:2 (the others: 1)")

    @classmethod
    def from_args(cls, args, directions):
        weights = args.direction_weights or {}
        unknown = sorted(set(weights) - set(directions))
        if unknown:
            raise ValueError(
                f"--direction-weights names {', '.join(unknown)}, which are not training "
                f"directions ({', '.join(directions)})"
            )
        if directions and all(weights.get(d, 1.0) == 0 for d in directions):
            raise ValueError(
                f"--direction-weights gives every training direction ({', '.join(directions)}) "
                "weight 0: every update would be zero; give at least one a positive weight"
            )
        return cls(weights)

    def _weigh(self, gram, tasks, groups, step, losses, ntokens):
        # Any NaN/Inf in the input reaches the sum, which commit() checks. No Gram: the
        # weights go where the step's token counts are (the rows' device).
        like = next((t for t in (gram, ntokens, losses) if t is not None), None)
        device = like.device if like is not None else None
        self.last_report = StepReport(tasks, groups.names)
        if not self.direction_weights:
            return torch.ones(len(groups), len(tasks), device=device)
        w = torch.tensor([self.direction_weights.get(t, 1.0) for t in tasks], device=device)
        self.last_report.weights = w
        return w.expand(len(groups), -1)
