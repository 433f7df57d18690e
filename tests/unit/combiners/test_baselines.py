"""The baselines of Table 1 (sum, MGDA, GradNorm) and the combiner registry."""
import io
import itertools

import pytest
import torch

from fairseq_gradvac.combiners import mgda as mgda_module
from fairseq_gradvac.combiners import (
    MGDA,
    GradNorm,
    ParameterGroups,
    SumCombiner,
    available_combiners,
    build_combiner,
    min_norm_weights,
)

from tests.helpers.reference_algorithm1 import TinyTransformer
from tests.helpers.tolerance import assert_near

torchjd_aggregation = pytest.importorskip("torchjd.aggregation")


# ---------------------------------------------------------------------------------------
# Registry and input checks.


def test_registry_lists_every_combiner():
    assert {"sum", "pcgrad", "gradvac", "mgda", "gradnorm"} <= set(available_combiners())
    with pytest.raises(ValueError) as error:
        build_combiner("gradvaccine")
    message = str(error.value)
    assert "gradvaccine" in message
    for name in available_combiners():
        assert name in message
    assert isinstance(build_combiner("sum"), SumCombiner)


@pytest.mark.parametrize("name", ["sum", "pcgrad", "gradvac", "mgda", "gradnorm"])
def test_bad_shapes_raise(name):
    groups = ParameterGroups.from_sizes([3, 5])
    c = build_combiner(name)
    losses = torch.ones(2)
    bad = [
        (torch.zeros(8), ["a"]),  # not [K, P]
        (torch.zeros(2, 7), ["a", "b"]),  # P does not match the groups
        (torch.zeros(3, 8), ["a", "b"]),  # K does not match the task names
        (torch.zeros(0, 8), []),  # no task
        (torch.zeros(2, 8), ["a", "a"]),  # duplicate names
    ]
    for grads, tasks in bad:
        with pytest.raises(ValueError):
            c.combine(grads, tasks, groups, 0, losses=losses[: len(tasks)])


@pytest.mark.parametrize("name", ["sum", "pcgrad", "gradvac", "mgda", "gradnorm"])
def test_a_state_with_duplicate_task_names_is_refused(name):
    """Rows are looked up by task name: a second row for the same name would never be used."""
    groups = ParameterGroups.from_sizes([3, 5])
    c = build_combiner(name)
    c.combine(torch.randn(2, 8), ["a", "b"], groups, 0, losses=torch.ones(2))
    state = c.state_dict()
    before = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in state.items()}
    broken = dict(state, task_names=["a", "a"])
    with pytest.raises(ValueError, match=r"duplicate task names \['a'\]"):
        build_combiner(name).load_state_dict(broken)
    with pytest.raises(ValueError, match="duplicate task names"):
        c.load_state_dict(broken)
    for key, value in c.state_dict().items():  # a failed load changes nothing
        assert torch.equal(value, before[key]) if torch.is_tensor(value) else value == before[key]


@pytest.mark.parametrize("name", ["sum", "pcgrad", "gradvac", "mgda", "gradnorm"])
def test_one_task_keeps_its_gradient(name):
    """A step with one direction (common under temperature sampling) is that direction's
    gradient, whatever the method and the token count."""
    groups = ParameterGroups.from_sizes([3, 5])
    grads = torch.randn(1, 8, dtype=torch.float64)
    c = build_combiner(name)
    for step in range(3):
        out = c.combine(grads, ["a"], groups, step, losses=torch.ones(1) / (step + 1),
                        ntokens=torch.tensor([17.0]))
        assert_near(out, grads[0])


@pytest.mark.parametrize("name", ["sum", "pcgrad", "gradvac", "mgda", "gradnorm"])
def test_weigh_checks_its_input(name):
    """weigh() is what the distributed exchange calls, without combine()'s checks."""
    groups = ParameterGroups.from_sizes([3, 5])
    c = build_combiner(name)
    gram = torch.eye(2).expand(2, 2, 2).contiguous()
    losses = torch.ones(2)
    with pytest.raises(ValueError, match="unique and at least one"):
        c.weigh(gram, ["a", "a"], groups, 0, losses=losses)
    with pytest.raises(ValueError, match="unique and at least one"):
        c.weigh(gram[:, :0, :0], [], groups, 0, losses=losses[:0])
    if c.needs_gram:
        with pytest.raises(ValueError, match=r"Gram matrices of shape \[2, 2, 2\]"):
            c.weigh(gram[:1], ["a", "b"], groups, 0, losses=losses)
    with pytest.raises(ValueError, match="one token count per task"):
        c.weigh(gram, ["a", "b"], groups, 0, losses=losses, ntokens=torch.ones(3))
    assert c.weigh(gram, ["a", "b"], groups, 0, losses=losses).shape == (2, 2)


def test_sum():
    groups = ParameterGroups.from_sizes([3, 5])
    grads = torch.randn(3, 8)
    c = build_combiner("sum")
    assert not c.needs_gram  # the exchange skips the Gram matrices: the sum costs a sum
    assert torch.equal(c.combine(grads, ["a", "b", "c"], groups, 0), grads.sum(0))
    assert bool(c.last_report.finite)
    grads[1, 2] = float("inf")
    assert not torch.isfinite(c.combine(grads, ["a", "b", "c"], groups, 1)).all()
    assert not bool(c.last_report.finite)


# ---------------------------------------------------------------------------------------
# MGDA.


def norm2(weights, gram):
    return (weights @ gram @ weights).item()


def brute_force_min_norm(grams):
    """min alpha^T G alpha over the simplex, for Gram matrices [n, K, K], by enumerating the
    supports S: some optimum is the affine minimizer of an affinely independent support
    (Caratheodory), solved from the bordered KKT system in fp64; infeasible (negative) or
    singular supports are skipped. Shares nothing with the engine's solver."""
    n, K, _ = grams.shape
    best = torch.full((n,), float("inf"), dtype=torch.float64)
    for r in range(1, K + 1):
        for support in itertools.combinations(range(K), r):
            s = list(support)
            g_s = grams[:, s][:, :, s]
            system = torch.zeros(n, r + 1, r + 1, dtype=torch.float64)
            system[:, :r, :r] = g_s
            system[:, :r, r] = 1
            system[:, r, :r] = 1
            rhs = torch.zeros(n, r + 1, dtype=torch.float64)
            rhs[:, r] = 1
            solution, info = torch.linalg.solve_ex(system, rhs)
            y = solution[:, :r]
            feasible = (info == 0) & torch.isfinite(y).all(1) & (y >= 0).all(1)
            value = torch.einsum("ni,nij,nj->n", y, g_s, y)
            best = torch.where(feasible, torch.minimum(best, value), best)
    return best


def opposed_pair_cases(gen, count, K=8, P=40):
    """Norms log-uniform over 10^+-1 and one pair at cos -0.99: Frank-Wolfe's weak spot."""
    g = torch.randn(count, K, P, generator=gen, dtype=torch.float64)
    g = g / g.norm(dim=2, keepdim=True)
    u = g[:, 0]
    w = g[:, 1] - (g[:, 1] * u).sum(1, keepdim=True) * u
    g[:, 1] = -0.99 * u + (1 - 0.99**2) ** 0.5 * w / w.norm(dim=1, keepdim=True)
    g = g * 10 ** (2 * torch.rand(count, K, 1, generator=gen, dtype=torch.float64) - 1)
    return g @ g.transpose(1, 2)


def degenerate_cases(gen, count, K=6, P=30):
    """Gradients in a subspace of dimension 1 to 3, one in three with a duplicate direction:
    singular Gram matrices, ties, the origin on or near the hull."""
    grams = []
    for c in range(count):
        rank = int(torch.randint(1, 4, (), generator=gen))
        g = torch.randn(K, rank, generator=gen, dtype=torch.float64) @ torch.randn(
            rank, P, generator=gen, dtype=torch.float64)
        if c % 3 == 0:
            g[3] = 2 * g[2]
        grams.append(g @ g.T)
    return torch.stack(grams)


def assert_min_norm_certificate(alpha, grams, tolerance=1e-11):
    """The KKT conditions of min alpha^T G alpha on the simplex: alpha >= 0, sum 1, and no
    vertex below x's plane, (G alpha)_m >= alpha^T G alpha for every m (up to tolerance,
    relative to max ||g_i||^2); together they prove alpha optimal."""
    scale = grams.diagonal(dim1=1, dim2=2).amax(1)
    assert (alpha >= 0).all()
    torch.testing.assert_close(alpha.sum(1), torch.ones(len(alpha), dtype=alpha.dtype), rtol=0, atol=1e-12)
    ga = torch.einsum("nij,nj->ni", grams, alpha)
    xx = (alpha * ga).sum(1)
    assert (ga.amin(1) >= xx - tolerance * scale).all()


def counting_solves(monkeypatch):
    """Count the batched solves of min_norm_weights (one per iteration): their batch sizes."""
    calls = []
    solve_ex = torch.linalg.solve_ex

    def counted(system, *args, **kwargs):
        calls.append(len(system))
        return solve_ex(system, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "solve_ex", counted)
    return calls


@pytest.mark.parametrize("family", [opposed_pair_cases, degenerate_cases])
def test_mgda_is_exact_on_hard_cases(family, monkeypatch):
    """Frank-Wolfe (100 iterations) ended up to 2.2x the minimum on the first family and 17x
    on the second (docs/testing.md); all cases as groups of one call, done within 2K
    iterations (the host checks every K)."""
    grams = family(torch.Generator().manual_seed(0), 100)
    solves = counting_solves(monkeypatch)
    alpha = min_norm_weights(grams)
    assert len(solves) <= 2 * grams.shape[1]
    assert alpha.dtype == torch.float64
    assert_min_norm_certificate(alpha, grams)
    value = torch.einsum("ni,nij,nj->n", alpha, grams, alpha)
    best = brute_force_min_norm(grams)
    scale = grams.diagonal(dim1=1, dim2=2).amax(1)
    assert (value <= best * (1 + 1e-9) + 1e-13 * scale).all()
    assert (best <= value * (1 + 1e-9) + 1e-13 * scale).all()  # the enumeration agrees


def test_mgda_stops_solving_the_groups_that_are_done(monkeypatch):
    """Groups with a zero gradient are done at once (0 is the min-norm point): after the
    host's first look, only the other groups are solved; the result is still exact."""
    gen = torch.Generator().manual_seed(5)
    g = torch.randn(40, 16, 30, generator=gen, dtype=torch.float64)
    g[:, 1] -= 1.5 * g[:, 0]
    g[10:, 3] = 0  # 30 of the 40 groups: done at the first major step
    grams = g @ g.transpose(1, 2)
    solves = counting_solves(monkeypatch)
    alpha = min_norm_weights(grams)
    assert_min_norm_certificate(alpha, grams)
    assert (alpha[10:, 3] == 1).all()
    assert solves[0] == 40 and len(solves) > mgda_module.CHECK_EVERY
    assert max(solves[mgda_module.CHECK_EVERY:]) <= 10


@pytest.mark.parametrize("K", [16, 40])
def test_mgda_is_exact_for_many_tasks(K, monkeypatch):
    """Too many supports to enumerate: the KKT certificate alone, on conflicting gradients of
    spread norms, some of them in few dimensions."""
    gen = torch.Generator().manual_seed(K)
    g = torch.randn(30, K, 60, generator=gen, dtype=torch.float64)
    g[:10, :, 5:] = 0  # 10 groups whose gradients span 5 dimensions
    g[:, 1] -= 1.5 * g[:, 0]
    g = g * 10 ** (2 * torch.rand(30, K, 1, generator=gen, dtype=torch.float64) - 1)
    grams = g @ g.transpose(1, 2)
    solves = counting_solves(monkeypatch)
    assert_min_norm_certificate(min_norm_weights(grams), grams)
    assert len(solves) <= 2 * K
    # fp32 Gram matrices: optimal up to their rounding (which can make a singular Gram
    # matrix slightly indefinite, as in a group smaller than K: a LayerNorm bias)
    rounded = grams.float().double()
    assert_min_norm_certificate(min_norm_weights(grams.float()), rounded, 8 * torch.finfo(torch.float32).eps)


def test_mgda_two_tasks_closed_form():
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        g = torch.randn(1, 2, 30, generator=gen, dtype=torch.float64)
        g[0, 1] *= float(torch.empty(()).uniform_(0.1, 10, generator=gen))
        gram = g @ g.transpose(1, 2)
        g1, g2 = g[0]
        a = (torch.dot(g2 - g1, g2) / torch.dot(g1 - g2, g1 - g2)).clamp(0, 1).item()
        alpha = min_norm_weights(gram)[0]
        assert alpha.tolist() == pytest.approx([a, 1 - a], abs=1e-12)


@pytest.mark.parametrize("K", [2, 3])
def test_mgda_min_norm_property(K):
    """No convex combination found by a fine grid or random search has a smaller norm."""
    gen = torch.Generator().manual_seed(K)
    groups = ParameterGroups.from_sizes([20, 20, 50])
    c = MGDA()
    for step in range(10):
        grads = torch.randn(K, groups.numel, generator=gen, dtype=torch.float64)
        grads[1] -= float(torch.rand((), generator=gen)) * 2 * grads[0]  # often conflicting
        out = c.combine(grads, ["a", "b", "c"][:K], groups, step)
        weights = c.last_report.weights
        assert (weights >= 0).all()
        assert_near(weights.sum(1), torch.ones(len(groups), dtype=weights.dtype))
        # no token counts: the rows are the mean-loss gradients, weights K alpha (sum K)
        assert_near(out, groups.weighted_sum(grads, K * weights))
        ticks = torch.linspace(0, 1, 201, dtype=torch.float64)
        if K == 2:
            candidates = torch.stack([ticks, 1 - ticks], 1)
        else:
            grid = [(a, b) for a, b in itertools.product(ticks.tolist(), repeat=2) if a + b <= 1]
            candidates = torch.tensor([(a, b, 1 - a - b) for a, b in grid], dtype=torch.float64)
        random = torch.distributions.Dirichlet(torch.ones(K, dtype=torch.float64)).sample((2000,))
        candidates = torch.cat([candidates, random, torch.eye(K, dtype=torch.float64)])
        for k, gram in enumerate(groups.gram(grads)):
            best = norm2(weights[k].double(), gram)
            searched = torch.einsum("ci,ij,cj->c", candidates, gram, candidates).min().item()
            assert best <= searched * (1 + 1e-6) + 1e-12


@pytest.mark.parametrize("K", [2, 3, 5, 8])
def test_mgda_matches_torchjd(K):
    gen = torch.Generator().manual_seed(10 + K)
    groups = ParameterGroups.from_sizes([200])
    for _ in range(3):
        grads = torch.randn(K, 200, generator=gen, dtype=torch.float64)
        grads[-1] -= 1.2 * grads[0]
        out = MGDA().combine(grads, [str(i) for i in range(K)], groups, 0) / K  # weights sum K
        # torchjd's plain Frank-Wolfe converges as O(1/t) when the minimum lies on a face of
        # the simplex: run it to convergence.
        expected = torchjd_aggregation.MGDA(epsilon=1e-12, max_iters=20000)(grads)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-5 * expected.norm().item())
        # and with torchjd's defaults (stop when the step is below 1e-3), never a smaller norm
        assert out.norm() <= torchjd_aggregation.MGDA()(grads).norm() * (1 + 1e-9)


def test_mgda_weighs_mean_loss_gradients():
    """Two unit per-token gradients at 120 degrees: MGDA's weights are 0.5 / 0.5 whatever the
    token counts; on the rows of the token-summed losses (100 vs 400 tokens) they would be
    6/7 and 1/7. The update is N sum_i alpha_i g_i / n_i, N = 500 tokens."""
    groups = ParameterGroups.from_sizes([2])
    u = torch.tensor([[1.0, 0.0], [-0.5, 3**0.5 / 2]], dtype=torch.float64)
    for counts in ([100.0, 400.0], [400.0, 100.0], [250.0, 250.0]):
        n = torch.tensor(counts, dtype=torch.float64)
        grads = n[:, None] * u  # gradients of the token-summed losses
        c = MGDA()
        out = c.combine(grads, ["a", "b"], groups, 0, ntokens=n)
        assert_near(c.last_report.weights, torch.tensor([[0.5, 0.5]], dtype=torch.float64))
        assert_near(out, 500 * 0.5 * u.sum(0))
    c.combine(torch.tensor([100.0, 400.0], dtype=torch.float64)[:, None] * u, ["a", "b"], groups, 0)
    assert_near(c.last_report.weights, torch.tensor([[6 / 7, 1 / 7]], dtype=torch.float64))


def test_mgda_token_counts_in_general():
    """alpha is the min-norm point of the mean-loss gradients g_i / n_i in every group, the
    row weights are N alpha_i / n_i, and equal counts change nothing."""
    groups = ParameterGroups.from_sizes([30, 30, 12])
    gen = torch.Generator().manual_seed(3)
    grads = torch.randn(4, groups.numel, generator=gen, dtype=torch.float64)
    grads[1] -= 1.3 * grads[0]
    n = torch.tensor([50.0, 700.0, 0.5, 120.0], dtype=torch.float64)  # any positive counts
    c = MGDA()
    out = c.combine(grads, ["a", "b", "c", "d"], groups, 0, ntokens=n)
    alpha = c.last_report.weights
    mean_grads = grads / n[:, None]
    assert_min_norm_certificate(alpha, groups.gram(mean_grads))
    assert_near(out, groups.weighted_sum(grads, alpha * n.sum() / n))
    assert_near(out, n.sum() * groups.weighted_sum(mean_grads, alpha))
    plain = MGDA().combine(grads, ["a", "b", "c", "d"], groups, 0)
    equal = MGDA().combine(grads, ["a", "b", "c", "d"], groups, 0, ntokens=torch.full((4,), 37.0))
    assert_near(equal, plain)
    with pytest.raises(ValueError, match="one token count per task"):
        c.combine(grads, ["a", "b", "c", "d"], groups, 0, ntokens=n[:3])


def test_mgda_non_finite_and_zero_gradients():
    groups = ParameterGroups.from_sizes([10, 10])
    c = MGDA()
    out = c.combine(torch.zeros(3, 20), ["a", "b", "c"], groups, 0)
    assert torch.equal(out, torch.zeros(20))
    # a task without tokens (a zero row, count 0): no NaN; its zero gradient is the minimum
    grads = 10 * torch.randn(3, 20)
    grads[1] = 0
    for ntokens in (None, torch.tensor([3.0, 0.0, 5.0])):
        out = c.combine(grads, ["a", "b", "c"], groups, 0, ntokens=ntokens)
        assert torch.equal(out, torch.zeros(20))
        assert c.last_report.weights.tolist() == [[0.0, 1.0, 0.0]] * 2
    grads = torch.randn(3, 20)
    grads[2, 3] = float("nan")
    assert not torch.isfinite(c.combine(grads, ["a", "b", "c"], groups, 1)).all()
    assert not bool(c.last_report.finite)


# ---------------------------------------------------------------------------------------
# GradNorm.


def test_gradnorm_needs_losses():
    groups = ParameterGroups.from_sizes([4])
    c = build_combiner("gradnorm")
    with pytest.raises(ValueError, match="losses"):
        c.combine(torch.ones(2, 4), ["a", "b"], groups, 0)
    with pytest.raises(ValueError, match="losses"):
        c.combine(torch.ones(2, 4), ["a", "b"], groups, 0, losses=torch.ones(3))


@pytest.mark.parametrize("kwargs,message", [
    ({"alpha": float("nan")}, "alpha must be a finite number >= 0, got nan"),
    ({"alpha": float("inf")}, "alpha must be a finite number >= 0, got inf"),
    ({"alpha": -0.5}, "alpha must be a finite number >= 0, got -0.5"),
    ({"lr": float("nan")}, "lr must be a finite number > 0, got nan"),
    ({"lr": float("inf")}, "lr must be a finite number > 0, got inf"),
    ({"lr": 0.0}, "lr must be a finite number > 0, got 0.0"),
])
def test_gradnorm_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GradNorm(**kwargs)


def test_gradnorm_arguments_at_the_edge():
    assert (GradNorm().alpha, GradNorm().lr) == (1.5, 0.025)  # the task's defaults too
    for alpha in (0.0, 0.5):  # 0: every task gets the mean norm as its target
        assert GradNorm(alpha=alpha).alpha == alpha


def test_gradnorm_weights_stay_positive():
    """A step large enough to push a weight below 0 leaves it at 1e-3 before the weights are
    renormalized: norms 3 and 1, lr 5: w = [1 - 5 * 3/2, 1 + 5 * 1/2] -> [1e-3, 3.5] * 2 / 3.501."""
    groups = ParameterGroups.from_sizes([4])
    grads = torch.tensor([[3.0, 0, 0, 0], [0, 1.0, 0, 0]])
    c = GradNorm(lr=5.0)
    c.combine(grads, ["a", "b"], groups, 0, losses=torch.tensor([1.0, 1.0]))
    assert_near(c.weights, torch.tensor([2e-3, 7.0]) / 3.501)


def test_gradnorm_gram_overflow_keeps_state():
    """Finite fp32 gradients of ~1e20 whose squared norms overflow fp32: the update is
    applied (it is finite), but GradNorm cannot measure the norms, so its weights stay."""
    groups = ParameterGroups.from_sizes([8, 8])
    c = GradNorm()
    gen = torch.Generator().manual_seed(0)
    c.combine(scaled_grads(gen, [5.0, 1.0], groups), ["a", "b"], groups, 0, losses=torch.tensor([1.0, 2.0]))
    weights = c.weights.clone()
    huge = scaled_grads(gen, [5.0, 1.0], groups) * 1e20
    out = c.combine(huge, ["a", "b"], groups, 1, losses=torch.tensor([1.0, 2.0]))
    assert torch.isfinite(out).all() and not bool(c.last_report.finite)
    assert torch.equal(c.weights, weights)


def scaled_grads(gen, norms, groups):
    g = torch.randn(len(norms), groups.numel, generator=gen)
    return g / g.norm(dim=1, keepdim=True) * torch.tensor(norms)[:, None]


def test_gradnorm_weights_sum_to_k_and_balance_norms():
    groups = ParameterGroups.from_sizes([30, 50])
    gen = torch.Generator().manual_seed(0)
    c = GradNorm()
    tasks = ["big", "small", "mid"]
    history = []
    for step in range(40):
        grads = scaled_grads(gen, [100.0, 1.0, 3.0], groups)
        out = c.combine(grads, tasks, groups, step, losses=torch.tensor([2.0, 2.0, 2.0]))
        w = c.last_report.weights
        assert w.sum().item() == pytest.approx(3.0, rel=1e-5)
        assert (w > 0).all()
        assert_near(out, (w[:, None] * grads).sum(0), 1e-5)
        history.append(w.clone())
    assert history[0].tolist() == [1.0, 1.0, 1.0]
    big = [w[0].item() for w in history]
    assert all(b2 < b1 for b1, b2 in zip(big[:10], big[1:11]))  # decreases step after step
    assert big[-1] < 0.5 * big[0]
    assert history[-1][1] > history[-1][2] > history[-1][0]  # smaller norm, larger weight


def test_gradnorm_balances_mean_loss_gradients():
    """Per token, b's gradient is twice as long as a's: GradNorm raises a's weight. On the
    rows of the token-summed losses (a: 100 tokens, b: 25) a's would look twice as long as
    b's, and GradNorm would lower a's weight instead. The update is
    mean(n) sum_i w_i g_i / n_i."""
    groups = ParameterGroups.from_sizes([24, 16])
    gen = torch.Generator().manual_seed(4)
    n = torch.tensor([100.0, 25.0])
    c, rows = GradNorm(), GradNorm()
    for step in range(5):
        per_token = scaled_grads(gen, [1.0, 2.0], groups)
        grads = n[:, None] * per_token
        losses = torch.tensor([2.0, 4.0]) * 0.9**step  # equal loss ratios
        out = c.combine(grads, ["a", "b"], groups, step, losses=losses, ntokens=n)
        w = c.last_report.weights
        assert_near(out, 62.5 * (w[:, None] * per_token).sum(0))
        rows.combine(grads, ["a", "b"], groups, step, losses=losses)
    assert c.weights[0] > 1.05 and c.weights[1] < 0.95
    assert rows.weights[0] < 0.95 and rows.weights[1] > 1.05


class ChenGradNorm:
    """GradNorm as Chen et al. (2018) write it (Algorithm 1, Eq. 1-2), step by step, sharing
    nothing with the engine: the per-task mean losses L_i = summed loss / n_i, their
    gradients g_i / n_i, G_i = ||grad_W w_i L_i|| on the layer W, the constant targets
    mean_j(G_j) r_i^alpha with r_i = L~_i / mean_j(L~_j), L~_i = L_i / L_i(0), the L1 loss
    L_grad = sum_i |G_i - target_i| differentiated by autograd, a step of lr, renormalization to
    sum_i w_i = K. Two choices of the engine's, documented there: the step is divided by
    mean_i ||grad_W L_i|| (so that lr does not depend on the loss scale) and weights stay >=
    1e-3; L_i(0) is a task's loss at the first step it appears in; the tasks present share
    K (their stored weights are renormalized first). Update: mean(n) sum_i w_i grad L_i."""

    def __init__(self, alpha, lr):
        self.alpha, self.lr = alpha, lr
        self.weight, self.initial = {}, {}

    def step(self, grads, tasks, losses, ntokens, layer):
        K = len(tasks)
        w = torch.tensor([self.weight.get(t, 1.0) for t in tasks], dtype=torch.float64)
        w = w * K / w.sum()
        for t, loss in zip(tasks, losses.tolist()):
            self.initial.setdefault(t, loss)
        mean_grads = grads.double() / ntokens.double()[:, None]
        on_layer = mean_grads[:, layer]
        w_var = w.clone().requires_grad_(True)
        G = torch.stack([torch.linalg.vector_norm(w_var[i] * on_layer[i]) for i in range(K)])
        loss_ratio = losses.double() / torch.tensor([self.initial[t] for t in tasks], dtype=torch.float64)
        r = loss_ratio / loss_ratio.mean()
        target = (G.mean() * r**self.alpha).detach()
        (grad_w,) = torch.autograd.grad((G - target).abs().sum(), w_var)
        new = (w - self.lr * grad_w / on_layer.norm(dim=1).mean()).clamp_min(1e-3)
        new = new * K / new.sum()
        for t, value in zip(tasks, new.tolist()):
            self.weight[t] = value
        return ntokens.double().mean() * (w[:, None] * mean_grads).sum(0), w


def test_gradnorm_follows_chen_et_al():
    """Unequal, unequally falling losses and similar per-token norms, so that the loss ratios
    decide the weights; unequal token counts; tasks that come and go; the measured layer
    decoder.layers.0 in the middle of the layout, over several groups (all_matrix)."""
    model = TinyTransformer()
    groups = ParameterGroups.from_named_parameters(model.named_parameters(), "all_matrix")
    layer = torch.cat([  # the columns of decoder.layers.0's parameters
        torch.arange(o, o + p.numel())
        for name, p, o in zip(groups.param_names, groups.params, groups.param_offsets)
        if name.startswith("decoder.layers.0.")
    ])
    assert 0 < layer.min() and layer.max() < groups.offsets[-1] and len(layer) < groups.numel / 3
    names = ["en-fr", "en-cs", "fr-en", "cs-en"]
    speed = {"en-fr": 0.9, "en-cs": 0.97, "fr-en": 0.8, "cs-en": 1.0}  # loss per step
    gen = torch.Generator().manual_seed(5)
    engine, reference = GradNorm(alpha=1.5, lr=0.05, layer="decoder.layers.0"), ChenGradNorm(1.5, 0.05)
    moved = 0
    for step in range(15):
        tasks = names if step % 4 else names[:3]
        n = torch.randint(20, 400, (len(tasks),), generator=gen).double()
        # per-token gradients are small: squared norms on the layer well below 1
        per_token = 1e-5 * torch.randn(len(tasks), groups.numel, generator=gen, dtype=torch.float64)
        per_token *= torch.empty(len(tasks), 1, dtype=torch.float64).uniform_(0.8, 1.25, generator=gen)
        losses = torch.tensor([(2.0 + i) * speed[t] ** step for i, t in enumerate(tasks)])
        out = engine.combine(n[:, None] * per_token, tasks, groups, step, losses=losses, ntokens=n)
        expected, w = reference.step(n[:, None] * per_token, tasks, losses, n, layer)
        assert_near(engine.last_report.weights.double(), w, 1e-5)
        assert_near(out, expected, 1e-5)
        moved += int((w - 1).abs().max() > 0.05)
    stored = torch.tensor([reference.weight[t] for t in engine.task_names], dtype=torch.float64)
    assert_near(engine.weights.double(), stored, 1e-5)
    assert moved > 5


def test_gradnorm_varying_tasks():
    """Weights sum to K whatever the tasks present; an absent task keeps its weight; a task
    seen first at step t takes its initial loss L_i(0) at step t."""
    groups = ParameterGroups.from_sizes([16])
    gen = torch.Generator().manual_seed(1)
    c = GradNorm()
    for step in range(5):
        grads = scaled_grads(gen, [10.0, 1.0], groups)
        c.combine(grads, ["a", "b"], groups, step, losses=torch.tensor([3.0 - 0.1 * step, 5.0]))
    assert c.task_names == ["a", "b"]
    assert c.initial_loss.tolist() == pytest.approx([3.0, 5.0])
    w_b = c.weights[1].item()
    for step in range(5, 10):
        grads = scaled_grads(gen, [10.0, 2.0], groups)
        c.combine(grads, ["c", "a"], groups, step, losses=torch.tensor([7.0 - step * 0.1, 2.0]))
        assert c.last_report.weights.sum().item() == pytest.approx(2.0, rel=1e-5)
        assert c.weights[1].item() == w_b  # b absent: untouched
    assert c.task_names == ["a", "b", "c"]
    assert c.initial_loss.tolist() == pytest.approx([3.0, 5.0, 6.5])  # c's own L(0): step 5
    grads = scaled_grads(gen, [10.0, 1.0, 2.0], groups)
    c.combine(grads, ["b", "a", "c"], groups, 10, losses=torch.tensor([4.0, 2.0, 6.0]))
    assert c.last_report.weights.sum().item() == pytest.approx(3.0, rel=1e-5)


def test_gradnorm_non_finite_keeps_state_and_round_trips():
    groups = ParameterGroups.from_sizes([8, 8])
    gen = torch.Generator().manual_seed(2)
    c = GradNorm()
    for step in range(3):
        c.combine(scaled_grads(gen, [5.0, 1.0], groups), ["a", "b"], groups, step, losses=torch.tensor([1.0, 2.0]))
    weights, initial = c.weights.clone(), c.initial_loss.clone()
    grads = scaled_grads(gen, [5.0, 1.0], groups)
    grads[0, 1] = float("inf")  # outside the shared group GradNorm measures norms on
    out = c.combine(grads, ["a", "b"], groups, 3, losses=torch.tensor([1.0, 2.0]))
    assert not torch.isfinite(out).all() and not bool(c.last_report.finite)
    assert torch.equal(c.weights, weights) and torch.equal(c.initial_loss, initial)
    c.combine(scaled_grads(gen, [5.0, 1.0], groups), ["a", "b"], groups, 4, losses=torch.tensor([float("nan"), 2.0]))
    assert not bool(c.last_report.finite)
    assert torch.equal(c.weights, weights) and torch.equal(c.initial_loss, initial)
    buffer = io.BytesIO()
    torch.save(c.state_dict(), buffer)
    buffer.seek(0)
    loaded = GradNorm()
    loaded.load_state_dict(torch.load(buffer, weights_only=True))
    grads = scaled_grads(gen, [5.0, 1.0], groups)
    losses = torch.tensor([0.5, 1.9])
    assert torch.equal(loaded.combine(grads, ["a", "b"], groups, 5, losses=losses), c.combine(grads, ["a", "b"], groups, 5, losses=losses))
    assert torch.equal(loaded.weights, c.weights)
    with pytest.raises(ValueError, match="gradnorm"):
        build_combiner("gradvac").load_state_dict(c.state_dict())
