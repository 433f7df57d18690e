"""The alpha-fair condition of Nash-MTL and FairGrad, its residual, and an exact solve.

Nash-MTL (Navon et al., ICML 2022, Eq. 2 and Claim 3.1) and FairGrad (Ban & Ji, ICML 2024,
Eq. 4) look for weights w > 0 with

    G w = w^(-1/alpha)      (elementwise; alpha = 1: Nash-MTL, G w = 1 / w),

G the tasks' Gramian. These are the stationary points of the strictly convex

    F(w) = 1/2 w^T G w - sum_i h(w_i),   h'(w) = w^(-1/alpha)
    (h = log w for alpha = 1, w^(1 - 1/alpha) / (1 - 1/alpha) otherwise),

so a solution is unique when it exists, and damped Newton on F finds it from any w > 0
(F is self-concordant for alpha = 1). It exists when no nonzero w >= 0 has G w = 0 on its
support; a task whose gradient is zero in the group (a zero row of G) leaves none.
TorchJD's solvers (a sequence of convex programs for Nash-MTL, scipy's least squares for
FairGrad) stop without saying whether they reached it; ``residual`` says.
"""
import math
from typing import Optional

import torch

# The largest residual max_i |w_i^(1/alpha) (G w)_i - 1| taken as solved. TorchJD's Nash-MTL
# programs reach 1e-8 to 2e-5 when they converge (K = 2..16, conflicting rows); the Newton
# solve below reaches 1e-12.
TOLERANCE = 1e-4


def _power(w: torch.Tensor, alpha: float) -> torch.Tensor:
    return w.reciprocal() if alpha == 1 else w.pow(-1.0 / alpha)


def residual(gram: torch.Tensor, w: torch.Tensor, alpha: float = 1.0) -> float:
    """max_i |w_i^(1/alpha) (G w)_i - 1|, the condition task by task: 0 at the solution,
    scale-free (w of a G scaled by s solves it scaled by s^(-alpha / (alpha + 1))); inf where
    w is not > 0 and finite. (A norm of G w - w^(-1/alpha) relative to that of w^(-1/alpha)
    would pass a w running off to infinity on a task whose gradient is zero.)"""
    w = w.double()
    if not bool(torch.isfinite(w).all() & (w > 0).all()):
        return math.inf
    return float(((gram.double() @ w) / _power(w, alpha) - 1).abs().max())


def _objective(gram, w, alpha):
    h = w.log() if alpha == 1 else w.pow(1 - 1 / alpha) / (1 - 1 / alpha)
    return 0.5 * w @ gram @ w - h.sum()


def solve(gram: torch.Tensor, alpha: float = 1.0, start: Optional[torch.Tensor] = None,
          iterations: int = 100) -> torch.Tensor:
    """Damped Newton on F from ``start`` (> 0; None: 1 / sqrt of the mean of G's diagonal,
    the solution's size for alpha = 1): Armijo backtracking keeps w > 0 and F falling. Returns
    the last iterate, fp64; where no solution exists it runs off (``residual`` tells)."""
    g = gram.double()
    k = g.shape[0]
    if start is not None and bool(torch.isfinite(start).all() & (start > 0).all()):
        w = start.double().clone()
    else:
        scale = g.diagonal().mean().clamp_min(torch.finfo(g.dtype).tiny)
        w = torch.full((k,), float(scale.rsqrt()), dtype=g.dtype, device=g.device)
    f = _objective(g, w, alpha)
    for _ in range(iterations):
        grad = g @ w - _power(w, alpha)
        hess = g + torch.diag(_power(w, alpha) / (alpha * w))  # h''(w) = -(1/alpha) w^(-1/alpha - 1)
        step = -torch.linalg.solve(hess, grad)
        decrement = float(-(grad @ step))  # the Newton decrement squared
        if not decrement > 1e-24:  # (NaN too)
            break
        t = 1.0
        while True:
            moved = w + t * step
            if bool((moved > 0).all()):
                f_moved = _objective(g, moved, alpha)
                if f_moved <= f - 0.25 * t * decrement:
                    break
            t *= 0.5
            if t < 1e-20:
                return w
        w, f = moved, f_moved
    return w
