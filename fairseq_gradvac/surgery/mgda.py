"""MGDA (Sener & Koltun, 2018): the min-norm point of the convex hull of the task gradients."""
import torch

from .combiner import Combiner, StepReport, register_combiner


def min_norm_weights(gram: torch.Tensor, iterations: int) -> torch.Tensor:
    """Frank-Wolfe on the Gram matrices [n, K, K], all groups at once; returns alpha [n, K].

    alpha lies on the simplex and minimizes ||sum_i alpha_i g_i||^2. A fixed number of
    iterations (no convergence test) keeps the device from syncing with the host.
    """
    n, k, _ = gram.shape
    alpha = gram.new_full((n, k), 1.0 / k)
    diag = gram.diagonal(dim1=1, dim2=2)
    eye = torch.eye(k, dtype=gram.dtype, device=gram.device)
    for _ in range(iterations):
        ga = torch.bmm(gram, alpha.unsqueeze(-1)).squeeze(-1)  # (G alpha)_m = x . g_m
        t = ga.argmin(-1, keepdim=True)  # the vertex g_t most opposed to x
        xx = (alpha * ga).sum(-1)
        xt = ga.gather(1, t).squeeze(1)
        tt = diag.gather(1, t).squeeze(1)
        dist = xx - 2 * xt + tt  # ||x - g_t||^2
        # Exact line search for min_gamma ||(1 - gamma) x + gamma g_t||^2 on [0, 1].
        gamma = torch.where(dist > 0, (xx - xt) / dist.clamp_min(torch.finfo(gram.dtype).tiny), 0.0)
        gamma = gamma.clamp(0, 1).unsqueeze(-1)
        alpha = (1 - gamma) * alpha + gamma * eye[t.squeeze(1)]
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

    def _combine(self, grads, tasks, groups, step, losses):
        gram = groups.gram(grads)
        finite = torch.isfinite(gram).all()
        gram = torch.where(finite, gram, torch.zeros_like(gram))
        # Frank-Wolfe is scale-free; normalizing the Gram keeps fp32 away from overflow.
        scale = gram.diagonal(dim1=1, dim2=2).amax(-1).clamp_min(torch.finfo(gram.dtype).tiny)
        alpha = min_norm_weights(gram / scale[:, None, None], self.iterations)
        weights = torch.where(finite, alpha, torch.ones_like(alpha))
        self.last_report = StepReport(tasks, groups.names, finite, weights=weights)
        return groups.weighted_sum(grads, weights)
