"""MGDA (Sener & Koltun, 2018): the min-norm point of the convex hull of the task gradients."""
import torch

from .combiner import Combiner, StepReport, register_combiner, token_counts

# Wolfe's stopping test, relative to the group's largest ||g_i||^2: x is optimal once no
# g_m lies more than this below the plane through x orthogonal to x. The duality gap then
# bounds ||x||^2 - min ||x||^2 by 2 * TOLERANCE * max_i ||g_i||^2; below that, fp64 rounding
# can make a vertex look better than it is, and the algorithm would go on forever.
TOLERANCE = 1e-12
# The largest duality_gap taken as solved: the stopping test's TOLERANCE, with room for the
# rounding of the eigenvalue clipping below (a change of the size of fp64's rounding).
GAP_TOLERANCE = 1e-10
# Iterations between the host's looks at convergence: each look is a sync on a GPU, and lets
# the groups that are done leave the batch (with 252 groups of K=16, half of them finish
# between 16 and 24 iterations: benchmarks/min_norm.py).
CHECK_EVERY = 8
# The iterations allowed per task: only a guard (Wolfe's algorithm terminates, after about
# 1.5 K iterations); a group still iterating then keeps its last iterate, reported unsolved.
ITERATIONS_PER_TASK = 100


def min_norm_weights(gram: torch.Tensor) -> torch.Tensor:
    """Wolfe's nearest-point algorithm (1976) on the Gram matrices [n, K, K], all groups at
    once; returns alpha [n, K] in fp64.

    alpha lies on the simplex and minimizes ||x||^2 = alpha^T G alpha, x = sum_i alpha_i g_i.
    Frank-Wolfe (Sener & Koltun's Algorithm 2) only approaches a minimum on a face of the
    simplex: after 100 iterations it was up to 17x the minimum on hard cases (docs/testing.md).
    Wolfe's algorithm is exact in finitely many steps. It keeps a corral S of vertices whose
    affine hull's point nearest to 0 is x, and alternates
    - major step: j = argmin_m x . g_m. If x . g_j >= ||x||^2 - tol, x is optimal (the KKT
      conditions: (G alpha)_m >= alpha^T G alpha for every m, equality on the support);
      otherwise S gets j.
    - minor step: y = the affine minimizer of S, min y^T G_S y subject to sum_i y_i = 1,
      from the bordered system [[G_S, 1], [1^T, 0]] [y; -lambda] = [0; 1]. If y > 0 on S,
      alpha = y (next: a major step; y sums to 1 by the last row); otherwise alpha moves
      towards y until a weight reaches 0, that vertex leaves S, and the minor step repeats.
    One loop iteration is one minor step (after a major step where alpha is settled) of every
    group, with one batched (K+1)-square solve; solve_ex checks no error (no host sync).
    All groups are done after about 1.5 K iterations (K=8: 11, K=40: 66); the host looks at
    convergence once per min(K, CHECK_EVERY) iterations, and the groups that are done leave
    the batch (eigh's error check syncs once more).
    """
    n, k, _ = gram.shape
    g = gram.double()
    diag = g.diagonal(dim1=1, dim2=2)
    # Scale-free: divide by the largest ||g_i||^2 so that TOLERANCE is relative.
    g = g / diag.amax(-1).clamp_min(torch.finfo(g.dtype).tiny)[:, None, None]
    # A rounded singular Gram matrix (K above the rank: a group smaller than K, gradients
    # in few dimensions) has eigenvalues a little below 0. On such a saddle, the affine
    # minimizer is not a minimum and the algorithm cycles: clip them to 0 (the nearest PSD
    # matrix, a change of the size of the rounding).
    lam, v = torch.linalg.eigh(g)
    g = (v * lam.clamp_min(0).unsqueeze(1)) @ v.transpose(1, 2)
    eye = torch.eye(k, dtype=torch.bool, device=g.device)
    corral = eye[g.diagonal(dim1=1, dim2=2).argmin(-1)]  # start at the shortest g_i
    alpha = corral.to(g.dtype)
    settled = torch.ones(n, dtype=torch.bool, device=g.device)  # alpha is S's affine minimizer
    active = torch.arange(n, device=g.device)  # the groups not done yet
    block = min(k, CHECK_EVERY)
    for _ in range(-(-ITERATIONS_PER_TASK * k // block)):
        done = _iterate(g[active], alpha, corral, settled, active, eye, block)
        if bool(done.all()):
            break
        # Done groups leave: the next solves are of the groups still iterating only.
        active, settled = active[~done], settled[~done]
    return alpha


def duality_gap(gram: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Wolfe's optimality test of alpha [n, K] on the simplex, relative to each group's largest
    ||g_i||^2: alpha^T G alpha - min_m (G alpha)_m, which bounds ||x||^2 - min ||x||^2 from
    above and is 0 at the min-norm point (the KKT conditions); [n], fp64."""
    g = gram.double()
    scale = g.diagonal(dim1=1, dim2=2).amax(-1).clamp_min(torch.finfo(g.dtype).tiny)
    ga = (g * alpha.double().unsqueeze(1)).sum(-1)
    return ((alpha.double() * ga).sum(-1) - ga.amin(-1)) / scale


def _iterate(g, alpha_all, corral_all, settled, active, eye, iterations):
    """``iterations`` iterations of the groups ``active`` (their Gram matrices g, their alpha
    and corral written back into alpha_all and corral_all, settled updated in place);
    returns which of them are done."""
    m, k, _ = g.shape
    alpha, corral = alpha_all[active], corral_all[active]
    border = torch.zeros(m, k + 1, k + 1, dtype=g.dtype, device=g.device)
    rhs = torch.zeros(m, k + 1, 1, dtype=g.dtype, device=g.device)
    rhs[:, k] = 1
    done = torch.zeros_like(settled)
    for _ in range(iterations):
        # major step, for the settled groups
        ga = (g * alpha.unsqueeze(1)).sum(-1)  # (G alpha)_m = x . g_m (no tiny bmm: see vaccinate)
        xx = (alpha * ga).sum(-1)
        j = ga.masked_fill(corral, float("inf")).argmin(-1)
        improves = ga.gather(1, j.unsqueeze(1)).squeeze(1) < xx - TOLERANCE
        done = done | (settled & ~improves)
        corral = corral | ((settled & improves).unsqueeze(1) & eye[j])
        # minor step: the affine minimizer y of S (rows and columns outside S: identity)
        # (a product of 0/1 masks: a broadcast bool AND of [m, K, K] was a third of the time)
        in_s = corral.to(g.dtype)
        border[:, :k, :k] = g * (in_s.unsqueeze(1) * in_s.unsqueeze(2)) + torch.diag_embed(1 - in_s)
        border[:, :k, k] = corral
        border[:, k, :k] = corral
        y = torch.linalg.solve_ex(border, rhs)[0][:, :k, 0]
        # largest step t in [0, 1] along y - alpha that keeps every weight >= 0
        shrinks = corral & (y <= 0)
        limit = torch.where(shrinks, alpha / (alpha - y).clamp_min(torch.finfo(g.dtype).tiny), 2.0)
        t = limit.amin(-1, keepdim=True).clamp(max=1)
        moved = alpha + t * (y - alpha)
        leaves = shrinks & (limit <= t)  # the vertices whose weight reached 0
        moved = torch.where(leaves | ~corral, 0.0, moved.clamp_min(0))
        alpha = torch.where(done.unsqueeze(1), alpha, moved)
        corral = corral & ~(leaves & ~done.unsqueeze(1))
        settled.copy_(done | ~shrinks.any(-1))
    alpha_all[active], corral_all[active] = alpha, corral
    return done


@register_combiner("mgda")
class MGDA(Combiner):
    """MGDA on the per-task mean losses (Sener & Koltun), per parameter group.

    Row g_i is the gradient of task i's token-summed loss, so its norm grows with the
    task's token count n_i; MGDA's min-norm weights would then follow the batch's
    composition. alpha is the min-norm point of the mean-loss gradients g_i / n_i (Gram
    entries G_ij / (n_i n_j)), and the update is

        N sum_i alpha_i g_i / n_i,   N = sum_i n_i.

    fairseq divides the update by the sample size, N tokens, which leaves sum_i alpha_i
    grad(L_i / n_i) (where fairseq's divisor is not N, at an epoch's end, N is that
    divisor: Combiner._divisor): MGDA's update, a convex combination of the per-task mean-loss
    gradients, as the plain sum becomes sum_i (n_i / N) grad(L_i / n_i). Same scale as the
    sum, so --clip-norm and the learning rate keep their meaning. Without token counts
    (ntokens None) the rows count as mean-loss gradients: the weights K alpha_i sum to K.
    A task without tokens has a zero gradient, which is the min-norm point: the update is
    then 0, as MGDA defines it; leave such tasks out.

    Each group's alpha is checked by Wolfe's test (duality_gap <= GAP_TOLERANCE): a group
    the iteration guard stopped keeps its last iterate (a point of the simplex), reported.
    """

    mean_losses = True
    solves = True
    fallback = "those groups keep the last iterate of Wolfe's algorithm"

    def _weigh(self, gram, tasks, groups, step, losses, ntokens):
        n = token_counts(ntokens, len(tasks), gram)
        mean_gram = gram / (n[:, None] * n[None, :])
        alpha = min_norm_weights(mean_gram)
        weights = alpha.to(gram.dtype)
        self.last_report = StepReport(tasks, groups.names, weights=weights)
        if bool(self.gram_finite):  # (a non-finite Gram: the plain sum, nothing solved; a host sync)
            gap = duality_gap(mean_gram, alpha)
            self.last_report.residual, self.last_report.solved = gap, gap <= GAP_TOLERANCE
        return weights * (self._divisor(n) / n)
