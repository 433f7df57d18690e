"""The stateless methods TorchJD implements as Gramian weightings, one registration each.

Each maps a group's mean-loss Gramian to task weights with TorchJD's own class; the scale and
per-token normalisation are the adapter's (gramian.py), the non-finite fallback every
method's (Combiner.weigh).
"""
import math

import torch

from . import alpha_fair
from .combiner import register_combiner
from .gramian import SOLVER_ERRORS, TorchJDWeighting, check_number, torchjd_weighting
from .options import finite_float


def regularized(gram: torch.Tensor, weighting) -> torch.Tensor:
    """The Gramian TorchJD's QP solves on: trace 1 (as given here) plus reg_eps I, which keeps
    it positive definite (UPGrad's and DualProj's projector)."""
    return gram + weighting.projector.reg_eps * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)


def dual_cone_residual(gram: torch.Tensor, w: torch.Tensor) -> float:
    """The largest negative cosine between the update J^T w and a task's gradient,
    -(G w)_i / (sqrt(G_ii) sqrt(w^T G w)), or 0: how far the update is outside the dual cone
    {v: g_i . v >= 0 for every i}, which UPGrad's and DualProj's QPs project into."""
    gw = gram @ w
    norm = float((w @ gw).clamp_min(0).sqrt())
    if not math.isfinite(norm):
        return math.inf
    lengths = gram.diagonal().clamp_min(0).sqrt()
    cosines = gw / (lengths * norm).clamp_min(torch.finfo(gram.dtype).tiny)
    return max(0.0, float(-cosines.min())) if norm > 0 else 0.0


FALLBACK = "those groups get the mean of their gradients (uniform weights)"
# quadprog's answers are in the dual cone of the Gramian it is given to rounding; a QP
# stopped short is further out
DUAL_CONE_TOLERANCE = 1e-6


@register_combiner("upgrad")
class UPGrad(TorchJDWeighting):
    """UPGrad (Quinton & Rey, 2024): each gradient projected onto the dual cone of all the
    task gradients (a QP per task), the projections averaged: no task's loss goes up."""

    solves = True
    tolerance = DUAL_CONE_TOLERANCE
    fallback = FALLBACK

    def __init__(self):
        super().__init__(torchjd_weighting(self.name, "UPGradWeighting"))

    def residual(self, gram, w):
        return dual_cone_residual(regularized(gram, self.weighting), w)


@register_combiner("dualproj")
class DualProj(TorchJDWeighting):
    """DualProj (Quinton & Rey, 2024): the mean gradient projected onto the dual cone of the
    task gradients (one QP)."""

    solves = True
    tolerance = DUAL_CONE_TOLERANCE
    fallback = FALLBACK

    def __init__(self):
        super().__init__(torchjd_weighting(self.name, "DualProjWeighting"))

    def residual(self, gram, w):
        return dual_cone_residual(regularized(gram, self.weighting), w)


@register_combiner("cagrad")
class CAGrad(TorchJDWeighting):
    """CAGrad (Liu et al., NeurIPS 2021): the update that maximizes the worst task's
    improvement within a ball of radius c ||g_0|| around the mean gradient g_0."""

    solves = True
    # CLARABEL's answers had gaps of 5e-6 to 2.6e-4 relative to ||g_0||^2 (K = 2..16,
    # conflicting rows; at most 1.1e-4 at K = 50, 3.9e-5 at K = 200): the gap bounds the
    # objective's error from above, loosely
    tolerance = 1e-3
    fallback = FALLBACK

    def __init__(self, c: float = 0.4):
        check_number("cagrad", "--cagrad-c", c, 0.0, strict=False)
        super().__init__(torchjd_weighting(self.name, "CAGradWeighting", c=c))
        self.c = c

    def residual(self, gram, w):
        """The Frank-Wolfe duality gap of CAGrad's program, relative to ||g_0||^2: x on the
        simplex minimizing F(x) = x^T G b + c ||g_0|| sqrt(x^T G x) (b uniform, g_0 = J^T b),
        read back from TorchJD's weights b + c ||g_0|| x / ||J^T x||; the gap
        x . grad F(x) - min_j grad F(x)_j bounds F(x) - min F (F is convex)."""
        k = w.shape[0]
        b = torch.full_like(w, 1.0 / k)
        g0 = float(b @ gram @ b)
        x = w - b
        if self.c == 0 or g0 <= 0 or not bool(x.any()) or not bool(w.any()):
            return 0.0  # nothing solved: the mean, or TorchJD's Pareto-stationary answer (zeros)
        x = x / x.sum()
        if not bool(torch.isfinite(x).all()) or float(x.min()) < -1e-9:
            return math.inf
        gx = gram @ x
        grad = gram @ b + self.c * g0 ** 0.5 * gx / float(x @ gx).__pow__(0.5)
        return float(x @ grad - grad.min()) / g0

    @classmethod
    def add_args(cls, parser):
        parser.add_argument("--cagrad-c", type=finite_float, default=0.4,
                            help="CAGrad's radius c >= 0 (0: the mean gradient; paper: 0.4)")

    @classmethod
    def from_args(cls, args, directions):
        return cls(c=args.cagrad_c)


@register_combiner("imtl_g")
class IMTLG(TorchJDWeighting):
    """IMTL-G (Liu et al., ICLR 2021): the update whose projections on every unit task
    gradient are equal (weights summing to 1, possibly negative)."""

    shrinks_to_zero = True

    def __init__(self):
        super().__init__(torchjd_weighting(self.name, "IMTLGWeighting"))


@register_combiner("aligned_mtl")
class AlignedMTL(TorchJDWeighting):
    """Aligned-MTL (Senushkin et al., CVPR 2023): the task gradients made orthogonal with
    equal norms (the Gramian's eigendecomposition) before they are summed."""

    shrinks_to_zero = True

    def __init__(self):
        super().__init__(torchjd_weighting(self.name, "AlignedMTLWeighting"))


@register_combiner("fairgrad")
class FairGrad(TorchJDWeighting):
    """FairGrad (Ban & Ji, ICML 2024): alpha-fair utility maximization, G w = w^(-1/alpha)
    (alpha = 1: proportional fairness, Nash-MTL's solution; alpha -> inf: max-min)."""

    shrinks_to_zero = True

    solves = True
    tolerance = alpha_fair.TOLERANCE
    fallback = FALLBACK

    def __init__(self, alpha: float = 1.0):
        check_number("fairgrad", "--fairgrad-alpha", alpha, 0.0, strict=True)
        super().__init__(torchjd_weighting(self.name, "FairGradWeighting", alpha=alpha))
        self.alpha = alpha

    def group_weights(self, gram, group, rows):
        """TorchJD's least squares; where it stopped short, the exact solve of the same
        condition (alpha_fair.solve). (Where no solution exists, the fallback: gramian.py.)"""
        try:
            w = self.weighting(gram).double()
        except SOLVER_ERRORS as e:  # (the exact solve below answers for it)
            self.solve_error = f"TorchJD: {type(e).__name__}: {e}"
            w = torch.full((gram.shape[0],), math.nan, dtype=torch.float64, device=gram.device)
        if not self.residual(gram, w) <= self.tolerance:
            w = alpha_fair.solve(gram, self.alpha)
        return w

    def residual(self, gram, w):
        return alpha_fair.residual(gram, w, self.alpha)

    @classmethod
    def add_args(cls, parser):
        parser.add_argument("--fairgrad-alpha", type=finite_float, default=1.0,
                            help="FairGrad's fairness alpha > 0 (1: proportional fairness)")

    @classmethod
    def from_args(cls, args, directions):
        return cls(alpha=args.fairgrad_alpha)
