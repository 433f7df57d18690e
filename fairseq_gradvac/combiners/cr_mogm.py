"""CR-MOGM (Zhou et al., NeurIPS 2022): another Gramian method's weights, smoothed by an
exponential moving average across updates (TorchJD's ``CRMOGMWeighting``).

    lambda_t = alpha lambda_(t-1) + (1 - alpha) lambda_hat_t

per parameter group and per direction NAME, lambda_hat the wrapped method's weights for the
group's mean-loss Gramian (before their rescaling to sum 1, as TorchJD smooths the wrapped
weighting's output); a direction's first weights start its average (lambda_0 = lambda_hat_1,
TorchJD's default). The directions present change from update to update (single-direction
batches, small ones): each keeps its own average, and the present directions' averages are
rescaled to sum 1 as every method's weights are (gramian.py). The wrapped method's solve is
checked and reported as its own; a failed solve's fallback weights enter the average.
"""
import math

import torch

from .combiner import combiner_class, register_combiner
from .gramian import GramianWeighting, TorchJDWeighting
from .options import finite_float

# the stateless Gramian methods that can be wrapped (Nash-MTL keeps a state of its own)
BASES = ("upgrad", "dualproj", "cagrad", "imtl_g", "aligned_mtl", "fairgrad")


@register_combiner("cr_mogm")
class CRMOGM(GramianWeighting):
    """An EMA of another Gramian method's weights, per group and direction."""

    state_per_group = True

    def __init__(self, base: str = "upgrad", alpha: float = 0.9, **base_kwargs):
        super().__init__()
        if base not in BASES:
            raise ValueError(f"--cr-mogm-base must be one of {', '.join(BASES)}, got {base!r}")
        if not (math.isfinite(alpha) and 0 <= alpha <= 1):
            raise ValueError(f"--cr-mogm-alpha must be in [0, 1], got {alpha}")
        self.base: TorchJDWeighting = combiner_class(base)(**base_kwargs)
        self.alpha = alpha
        self.solves, self.tolerance, self.fallback = self.base.solves, self.base.tolerance, self.base.fallback
        self.shrinks_to_zero = self.base.shrinks_to_zero
        self.ema = torch.zeros(0, 0, dtype=torch.float64, device="cpu")  # [groups, task names], NaN: not seen yet
        self._pending = {}  # group -> (rows, new averages) of the last weigh()

    @classmethod
    def add_args(cls, parser):
        parser.add_argument("--cr-mogm-base", choices=BASES, default="upgrad",
                            help="the Gramian method whose weights CR-MOGM averages (its own options apply)")
        parser.add_argument("--cr-mogm-alpha", type=finite_float, default=0.9, metavar="A",
                            help="CR-MOGM's EMA coefficient on the previous weights (0: the base method; 1: "
                                 "frozen at the first weights)")

    @classmethod
    def wrapped(cls, args):
        return [args.cr_mogm_base]

    @classmethod
    def from_args(cls, args, directions):
        base = combiner_class(args.cr_mogm_base).from_args(args, directions)
        combiner = cls(args.cr_mogm_base, args.cr_mogm_alpha)
        combiner.base = base
        return combiner

    def prepare(self, rows, num_groups):
        n = len(self.task_names)
        if self.ema.shape != (num_groups, n):
            grown = torch.full((num_groups, n), math.nan, dtype=torch.float64, device="cpu")  # (host math)
            old = self.ema
            grown[: old.shape[0], : old.shape[1]] = old
            self.ema = grown
        self._pending = {}

    def group_weights(self, gram, group, rows):
        return self.base.group_weights(gram, group, rows)

    def residual(self, gram, w):
        return self.base.residual(gram, w)

    def fallback_weights(self, gram, group, rows):
        return self.base.fallback_weights(gram, group, rows)

    def _solve(self, gram, group, rows):
        w, r = super()._solve(gram, group, rows)  # the base's answer, checked (or its fallback)
        previous = self.ema[group, rows]
        previous = torch.where(torch.isnan(previous), w, previous)
        smoothed = self.alpha * previous + (1 - self.alpha) * w
        self._pending[group] = (list(rows), smoothed)
        return smoothed, r

    def _commit(self, finite):
        if bool(finite):
            for group, (rows, smoothed) in self._pending.items():
                self.ema[group, rows] = smoothed
        self._pending = {}

    def state_dict(self):
        state = super().state_dict()
        state.update(base=self.base.name, alpha=self.alpha, ema=self.ema.clone())
        return state

    def _check_state(self, state):
        super()._check_state(state)
        if state.get("base") != self.base.name:
            raise ValueError(f"the checkpoint's CR-MOGM averages {state.get('base')}'s weights, this run "
                             f"{self.base.name}'s; pass --reset-optimizer to start it afresh")

    def _load(self, state):
        self.ema = state["ema"].clone().double()
