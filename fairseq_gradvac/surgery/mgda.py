"""MGDA (Sener & Koltun, 2018): the min-norm point of the convex hull of the task gradients."""
import torch

from .combiner import Combiner, StepReport, register_combiner


def min_norm_weights(gram: torch.Tensor, iterations: int) -> torch.Tensor:
    """Frank-Wolfe with away steps on the Gram matrices [n, K, K], all groups at once;
    returns alpha [n, K].

    alpha lies on the simplex and minimizes ||sum_i alpha_i g_i||^2. Plain Frank-Wolfe
    (Sener & Koltun's Algorithm 2) can only shrink a weight towards 0 by moving towards
    another vertex, so when the minimum lies on a face of the simplex it converges as
    O(1/t) and 100 iterations can leave the norm several % above the minimum. The away
    step (move weight off the worst vertex of the support) converges linearly. A fixed
    number of iterations (no convergence test) keeps the device from syncing with the host.
    """
    n, k, _ = gram.shape
    tiny = torch.finfo(gram.dtype).tiny
    alpha = gram.new_full((n, k), 1.0 / k)
    diag = gram.diagonal(dim1=1, dim2=2)
    eye = torch.eye(k, dtype=gram.dtype, device=gram.device)
    for _ in range(iterations):
        ga = (gram * alpha.unsqueeze(1)).sum(-1)  # (G alpha)_m = x . g_m (no tiny bmm: see vaccinate)
        xx = (alpha * ga).sum(-1)  # ||x||^2
        t = ga.argmin(-1, keepdim=True)  # Frank-Wolfe vertex: the g_t most opposed to x
        a = ga.masked_fill(alpha <= 0, -float("inf")).argmax(-1, keepdim=True)  # away vertex
        xt, xa = ga.gather(1, t).squeeze(1), ga.gather(1, a).squeeze(1)
        alpha_a = alpha.gather(1, a).squeeze(1)
        away = (ga.gather(1, a).squeeze(1) - xx) > (xx - xt)  # the larger duality gap
        # Direction d = e_t - alpha (towards g_t) or alpha - e_a (away from g_a):
        # slope <grad/2, d> and curvature d^T G d, then the exact line search on [0, max].
        slope = torch.where(away, xx - xa, xt - xx)
        curve = torch.where(
            away, xx - 2 * xa + diag.gather(1, a).squeeze(1), xx - 2 * xt + diag.gather(1, t).squeeze(1)
        )
        limit = torch.where(away, alpha_a / (1 - alpha_a).clamp_min(tiny), torch.ones_like(xx))
        gamma = torch.where(curve > 0, -slope / curve.clamp_min(tiny), torch.zeros_like(xx))
        gamma = torch.minimum(gamma.clamp_min(0), limit).unsqueeze(-1)
        direction = torch.where(away.unsqueeze(-1), alpha - eye[a.squeeze(1)], eye[t.squeeze(1)] - alpha)
        alpha = alpha + gamma * direction
        # a full away step removes g_a from the support: make its weight exactly 0
        dropped = away.unsqueeze(-1) & (gamma >= limit.unsqueeze(-1)) & (eye[a.squeeze(1)] > 0)
        alpha = torch.where(dropped, torch.zeros_like(alpha), alpha).clamp_min(0)
        alpha = alpha / alpha.sum(-1, keepdim=True)
    return alpha


@register_combiner("mgda")
class MGDA(Combiner):
    """The update is sum_i alpha_i g_i with alpha the min-norm weights, per parameter group.

    As in Sener & Koltun and torchjd, the weights sum to 1 (not K); with Adam, as in the
    paper, the overall scale of the update does not matter.
    """

    def __init__(self, iterations: int = 100):
        super().__init__()
        if iterations < 1:
            raise ValueError(f"MGDA needs at least one Frank-Wolfe iteration, got {iterations}")
        self.iterations = iterations

    def _weigh(self, gram, tasks, groups, step, losses, ntokens):
        finite = torch.isfinite(gram).all()
        gram = torch.where(finite, gram, torch.zeros_like(gram))
        # Frank-Wolfe is scale-free; normalizing the Gram keeps fp32 away from overflow.
        scale = gram.diagonal(dim1=1, dim2=2).amax(-1).clamp_min(torch.finfo(gram.dtype).tiny)
        alpha = min_norm_weights(gram / scale[:, None, None], self.iterations)
        weights = torch.where(finite, alpha, torch.ones_like(alpha))
        self.last_report = StepReport(tasks, groups.names, finite, weights=weights)
        return weights
