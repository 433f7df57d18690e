"""Methods whose task weights follow from each group's Gram matrix (TorchJD's Weightings).

TorchJD (Quinton & Rey) maps the Gramian J J^T of a task Jacobian J to weights w, the
update being J^T w. Here J is, per parameter group k, the per-task mean-loss gradients
g_ik / n_i: the Gramian is G_k[i, j] / (n_i n_j), from the Gram matrices the engine already
all-reduces across workers (no new communication, and every worker gets the same weights).
The Gramian is divided by its trace (scale-free: below). The combined gradient is

    N sum_i (w_ik / sum_m w_mk) g_ik / n_i,

which fairseq divides by N tokens: a combination of the mean-loss gradients whose weights
sum to 1, as the plain sum's sum_i (n_i / N) grad(L_i / n_i). The direction is the method's,
per group; the scale is the plain sum's, so --lr and --clip-norm mean the same for every
method (K equal gradients give exactly the plain sum: a test). Weights that sum to 0 or less
(a Pareto-stationary group, where CAGrad answers with zeros) give that group no update.
A non-finite Gram matrix gives the plain sum (Combiner.weigh's rule: no solver runs), and
leaves any state untouched.

The solvers run on the host in fp64, group by group (one QP or convex program per group
and step for UPGrad, DualProj, CAGrad, FairGrad, Nash-MTL: docs/methods/README.md has their cost).
"""
import importlib
import logging
import math
from typing import List

import torch

from .combiner import Combiner, StepReport, token_counts

logger = logging.getLogger(__name__)

EXTRA = 'pip install "fairseq-gradvac[methods]" (or bash scripts/setup.sh)'


def _solver_errors():
    """What the solvers raise when a problem defeats them (cvxpy's SolverError, quadprog's
    and scipy's ValueError, torch's LinAlgError, overflow): a failed solve. Anything else is
    a bug, and propagates."""
    errors = [ValueError, ArithmeticError, torch.linalg.LinAlgError]
    try:
        from cvxpy.error import SolverError

        errors.append(SolverError)
    except ImportError:
        pass
    return tuple(errors)


SOLVER_ERRORS = _solver_errors()


def torchjd_weighting(name: str, cls: str, module: str = "aggregation", **kwargs):
    """TorchJD's ``torchjd.<module>.<cls>(**kwargs)`` (a weighting; with module
    "scalarization", a loss weighting's scalarizer), or an ImportError that names the pip
    extra: TorchJD and its solvers (quadprog, cvxpy, ...) are optional dependencies."""
    try:
        return getattr(importlib.import_module(f"torchjd.{module}"), cls)(**kwargs)
    except ImportError as e:
        raise ImportError(
            f"--gradient-combiner {name} needs TorchJD with its solvers ({e}); install them "
            f"with {EXTRA}"
        ) from None


def gram_factor(gram: torch.Tensor) -> torch.Tensor:
    """A K x K matrix L with L L^T = gram (PSD part): the rows of a Jacobian with that Gramian,
    up to a rotation, for the methods TorchJD writes on the Jacobian itself."""
    lam, v = torch.linalg.eigh(gram)
    return v * lam.clamp_min(0).sqrt().unsqueeze(0)


class GramianWeighting(Combiner):
    """Base of the methods that weigh the mean-loss gradients from their Gram matrix alone;
    a subclass gives ``group_weights``, the method's weights for one group."""

    mean_losses = True
    tolerance = 0.0  # the largest residual() taken as solved
    # True: the method's rescaled weights concentrate on a direction whose gradient in the
    # group shrinks, so the group's update shrinks with it (benchmarks/scale.py); where that
    # gradient is exactly zero the group gets the limit, a zero update, not a jump
    shrinks_to_zero = False

    def __init__(self):
        super().__init__()
        self.zeroed_groups = 0  # groups given a zero update by the limit rule (shrinks_to_zero)

    def group_weights(self, gram: torch.Tensor, group: int, rows: List[int]) -> torch.Tensor:
        """The method's weights [K] for one group's mean-loss Gramian [K, K] (fp64, host,
        trace 1, K >= 2); ``rows``: the tasks' state rows (for stateful methods)."""
        raise NotImplementedError

    def residual(self, gram: torch.Tensor, w: torch.Tensor) -> float:
        """How far ``w`` (group_weights' answer, before scale()) is from the condition the
        method solves, relative; solved at most ``tolerance`` (methods that solve: ``solves``)."""
        raise NotImplementedError

    def fallback_weights(self, gram: torch.Tensor, group: int, rows: List[int]) -> torch.Tensor:
        """A failed solve's weights (``fallback`` says them): uniform, the group's mean gradient."""
        return torch.ones(len(rows), dtype=torch.float64, device=gram.device)

    def _note_zero_group(self, group: str, tasks: List[str], step: int) -> None:
        """A group the limit rule zeroed: counted; the first one is a warning (its update is
        zero, which freezes those parameters for the update)."""
        if not self.zeroed_groups:
            logger.warning(
                f"{self.name}: {', '.join(tasks)} has an exactly zero gradient in {group} at update "
                f"{step + 1}: that group's update is zero, the limit of {self.name}'s weights as a "
                "gradient vanishes (docs/methods/README.md); further ones are counted (zeroed_groups)"
            )
        self.zeroed_groups += 1

    def _solve(self, gram: torch.Tensor, group: int, rows: List[int]):
        """(weights, residual) of one group: the method's answer if it meets its condition,
        else its fallback with the failed answer's residual (inf where the solver raised)."""
        if not self.solves:
            return self.group_weights(gram, group, rows).double(), 0.0
        try:
            w = self.group_weights(gram, group, rows).double()
            r = self.residual(gram, w)
        except SOLVER_ERRORS as e:  # a solver that gave up (cvxpy, quadprog, scipy): a failed solve
            self.solve_error = f"{type(e).__name__}: {e}"
            w, r = None, math.inf
        if not r <= self.tolerance:  # (NaN too)
            w = self.fallback_weights(gram, group, rows)
        return w, r

    def scale(self, w: torch.Tensor) -> torch.Tensor:
        """Weights [num_groups, K] rescaled to sum to 1 per group (0 where they sum to <= 0)."""
        total = w.sum(-1, keepdim=True)
        positive = total > 0
        return torch.where(positive, w / torch.where(positive, total, torch.ones_like(total)), torch.zeros_like(w))

    def prepare(self, rows: List[int], num_groups: int) -> None:
        """Called once per step before group_weights (stateful methods grow their state)."""

    def _weigh(self, gram, tasks, groups, step, losses, ntokens):
        rows = self._rows(tasks)
        n = token_counts(ntokens, len(tasks), gram)
        if not bool(self.gram_finite):  # no solver on a zeroed Gram (a host sync: the solvers' anyway)
            self.last_report = StepReport(tasks, groups.names)
            return torch.ones(len(groups), len(tasks), dtype=gram.dtype, device=gram.device)
        self.prepare(rows, len(groups))
        host = (gram.double() / (n[:, None] * n[None, :]).double()).cpu()
        # Each Gramian divided by its trace (TorchJD's own normalization): every method's
        # direction is independent of G's scale, and so become the solvers' tolerances and
        # Nash-MTL's state (its alpha scales as 1 / sqrt of G's), whatever the loss scale or
        # the number of workers (the exchange averages the rows over workers).
        trace = host.diagonal(dim1=1, dim2=2).sum(-1)
        host = host / torch.where(trace > 0, trace, torch.ones_like(trace))[:, None, None]
        weights, residuals = [], []
        for k in range(len(groups)):
            zero = host[k].diagonal() == 0 if self.shrinks_to_zero else None
            if len(tasks) == 1 or not trace[k] > 0:
                # Nothing to solve: one task's update is its gradient; a group where every
                # gradient is zero gets a zero update whatever the weights (the mean's).
                w, r = torch.ones(len(tasks), dtype=torch.float64, device=host.device), 0.0
            elif zero is not None and bool(zero.any()):
                w, r = zero.double(), 0.0  # the weights' limit: all on the zero gradients
                self._note_zero_group(groups.names[k], [tasks[i] for i in zero.nonzero().flatten().tolist()], step)
            else:
                w, r = self._solve(host[k], k, rows)
            weights.append(w)
            residuals.append(r)
        w = self.scale(torch.stack(weights)).to(gram.device, gram.dtype)
        self.last_report = StepReport(tasks, groups.names, weights=w)
        if self.solves:
            residual = torch.tensor(residuals, dtype=torch.float64, device=host.device)
            self.last_report.residual = residual
            self.last_report.solved = residual <= self.tolerance  # (NaN: failed)
        return w * (self._divisor(n) / n)


class TorchJDWeighting(GramianWeighting):
    """A stateless TorchJD ``*Weighting`` applied to each group's Gramian."""

    def __init__(self, weighting):
        super().__init__()
        self.weighting = weighting

    def group_weights(self, gram, group, rows):
        return self.weighting(gram)

    def __repr__(self) -> str:
        return f"{self.name}({self.weighting!r})"


def check_number(method: str, option: str, value: float, low: float, strict: bool):
    """A method's number above ``low`` (or at it, unless ``strict``), or a ValueError that
    names the option."""
    if not (value > low if strict else value >= low):
        raise ValueError(f"{option}: {method} needs a number {'>' if strict else '>='} {low}, got {value}")
