"""GradVac and PCGrad: the update rule, Algorithm 1 line by line, torchjd, state, edge cases."""
import io
import math
import random

import pytest
import torch

from fairseq_gradvac.combiners import (
    GradVac,
    ParameterGroups,
    PCGrad,
    build_combiner,
    vaccinate,
    visit_order,
)
from fairseq_gradvac.combiners.gradvac import MAX_TARGET
from tests.helpers.reference_algorithm1 import TinyTransformer, algorithm1_step, correlated_grads, pcgrad_step
from tests.helpers.tolerance import assert_near

torchjd_aggregation = pytest.importorskip("torchjd.aggregation")

TASKS = ["en-de", "en-fr", "de-en", "fr-en", "en-hi"]


def cos(a, b):
    return (torch.dot(a, b) / (a.norm() * b.norm())).item()


def group_slices(groups):
    return [slice(o, o + s) for o, s in zip(groups.offsets, groups.sizes)]


def ema(combiner, groups, ti, tj, group):
    """phi_hat[ti, tj, group] as stored by the engine (0 for a pair never seen)."""
    if ti not in combiner.task_names or tj not in combiner.task_names:
        return 0.0
    i, j = combiner.task_names.index(ti), combiner.task_names.index(tj)
    return combiner.phi_hat[i, j, groups.index(group)].item()


# ---------------------------------------------------------------------------------------
# The correction of line 14 reaches the target exactly.


@pytest.mark.parametrize("K", [2, 4])
def test_vaccinate_reaches_fixed_target(K):
    gen = torch.Generator().manual_seed(K)
    n, P = 5, 40
    g = torch.randn(n, K, P, generator=gen, dtype=torch.float64)
    g[:, 1] -= 0.7 * g[:, 0]  # some conflicting pairs
    gram = g @ g.transpose(1, 2)
    target = torch.empty(n, K, K, dtype=torch.float64).uniform_(-0.9, 0.9, generator=gen)
    order = visit_order(3, 7, K, n)
    apply = torch.ones(K, dtype=torch.bool)
    coef, new_target, similarity, corrected = vaccinate(gram, target, order, apply, None)
    assert torch.equal(new_target, target)  # beta None: fixed targets
    g_mod = coef @ g  # g'_ki = sum_m C[k, i, m] g_km
    n_corrected = 0
    for k in range(n):
        for i in range(K):
            h = g[k, i].clone()  # replay the corrections pair by pair
            for j in order[k, i].tolist():
                phi = cos(h, g[k, j])
                assert similarity[k, i, j].item() == pytest.approx(phi, abs=1e-12)
                assert bool(corrected[k, i, j]) == (phi < target[k, i, j].item())
                if corrected[k, i, j]:
                    n_corrected += 1
                    h = h + (coef[k, i, j] - (1.0 if j == i else 0.0)) * g[k, j]
                    # after the correction, cos(g'_i, g_j) is exactly the target
                    assert cos(h, g[k, j]) == pytest.approx(target[k, i, j].item(), abs=1e-10)
                else:
                    assert coef[k, i, j].item() == 0.0
            assert_near(g_mod[k, i], h, 1e-12)
            assert coef[k, i, i].item() == 1.0
    assert n_corrected > 0


def test_vaccinate_updates_ema_with_phi_before_correction():
    gen = torch.Generator().manual_seed(0)
    K, n, beta = 3, 4, 0.3
    g = torch.randn(n, K, 20, generator=gen, dtype=torch.float64)
    gram = g @ g.transpose(1, 2)
    target = torch.empty(n, K, K, dtype=torch.float64).uniform_(-0.5, 0.5, generator=gen)
    apply = torch.tensor([True, False, True])
    _, new_target, similarity, corrected = vaccinate(gram, target, visit_order(1, 0, K, n), apply, beta)
    visited = ~torch.isnan(similarity)
    # every pair (i in G, j != i) is visited once, corrected or not
    expected_visits = apply[None, :, None] & ~torch.eye(K, dtype=torch.bool)[None]
    assert torch.equal(visited, expected_visits.expand(n, K, K))
    assert_near(new_target[visited], (1 - beta) * target[visited] + beta * similarity[visited])
    assert torch.equal(new_target[~visited], target[~visited])
    assert not corrected[~visited].any()


def test_combine_two_tasks_reaches_target_per_group():
    groups = ParameterGroups.from_sizes([30, 50, 50, 70])
    gen = torch.Generator().manual_seed(1)
    grads = torch.randn(2, groups.numel, generator=gen, dtype=torch.float64)
    grads[0] -= 2 * grads[1]  # conflicting in every group
    for fixed in (0.5, 0.0, -0.2):
        c = build_combiner("gradvac", fixed_target=fixed, apply_to=["a"])
        out = c.combine(grads, ["a", "b"], groups, step=0)
        g_mod_a = out - grads[1]  # task b is not in G: its gradient is unchanged
        for k, sl in enumerate(group_slices(groups)):
            before = cos(grads[0, sl], grads[1, sl])
            assert before < fixed
            assert cos(g_mod_a[sl], grads[1, sl]) == pytest.approx(fixed, abs=1e-12)
            assert c.last_report.phi[0, 1, k].item() == pytest.approx(before, abs=1e-12)
            assert bool(c.last_report.corrected[0, 1, k])
            assert torch.isnan(c.last_report.phi[1, 0, k])  # b is not visited


def test_combine_two_tasks_reaches_ema_target():
    """With the EMA, the target of step t is phi_hat^(t), the value before this step's update."""
    groups = ParameterGroups.from_sizes([40, 60])
    gen = torch.Generator().manual_seed(2)
    aligned = torch.randn(2, groups.numel, generator=gen, dtype=torch.float64)
    aligned[1] += 2 * aligned[0]
    c = GradVac(beta=0.5, apply_to=["a"])
    for step in range(3):  # the EMA rises towards the (positive) cosine
        c.combine(aligned, ["a", "b"], groups, step)
    targets = [ema(c, groups, "a", "b", name) for name in groups.names]
    assert all(t > 0.3 for t in targets)
    conflicting = aligned.clone()
    conflicting[0] = -aligned[0] + 0.1 * torch.randn(groups.numel, generator=gen, dtype=torch.float64)
    out = c.combine(conflicting, ["a", "b"], groups, 3)
    for k, (sl, name) in enumerate(zip(group_slices(groups), groups.names)):
        phi = cos(conflicting[0, sl], conflicting[1, sl])
        assert cos((out - conflicting[1])[sl], conflicting[1, sl]) == pytest.approx(targets[k], abs=1e-6)
        assert ema(c, groups, "a", "b", name) == pytest.approx(0.5 * targets[k] + 0.5 * phi, abs=1e-6)


# ---------------------------------------------------------------------------------------
# PCGrad is GradVac with the target 0.


def test_gradvac_with_target_zero_is_pcgrad():
    groups = ParameterGroups.from_sizes([10, 20, 20, 35])
    gen = torch.Generator().manual_seed(3)
    vac, pc = build_combiner("gradvac", fixed_target=0.0, seed=5), build_combiner("pcgrad", seed=5)
    first_step = build_combiner("gradvac", seed=5)  # phi_hat^(0) = 0: its first step is PCGrad
    for step in range(6):
        grads = correlated_grads(gen, 4, groups)
        expected = pcgrad_step(grads, groups, step, seed=5)
        out_pc = pc.combine(grads, TASKS[:4], groups, step)
        assert_near(out_pc, expected, 1e-10)
        torch.testing.assert_close(vac.combine(grads, TASKS[:4], groups, step), out_pc, rtol=0, atol=0)
        if step == 0:
            assert_near(first_step.combine(grads, TASKS[:4], groups, step), out_pc)


@pytest.mark.parametrize("seed", range(4))
def test_pcgrad_matches_torchjd_for_two_tasks(seed):
    gen = torch.Generator().manual_seed(seed)
    groups = ParameterGroups.from_sizes([64])
    grads = torch.randn(2, 64, generator=gen, dtype=torch.float64)
    if seed % 2:
        grads[1] -= 1.5 * grads[0]  # conflicting
    expected = torchjd_aggregation.PCGrad()(grads)
    out = build_combiner("pcgrad").combine(grads, ["a", "b"], groups, step=seed)
    assert_near(out, expected, 1e-10)


def test_pcgrad_leaves_non_conflicting_gradients_alone():
    groups = ParameterGroups.from_sizes([16, 16, 40])
    gen = torch.Generator().manual_seed(4)
    grads = torch.rand(4, groups.numel, generator=gen)  # all entries >= 0: no conflict
    c = build_combiner("pcgrad")
    out = c.combine(grads, TASKS[:4], groups, step=0)
    assert torch.equal(out, groups.weighted_sum(grads, torch.ones(len(groups), 4)))
    assert_near(out, grads.sum(0))
    assert not c.last_report.corrected.any()
    # A conflicting pair is projected: g'_i . g_j = 0 afterwards (2 tasks).
    grads2 = torch.stack([grads[0], grads[1] - 3 * grads[0]]).double()
    pc = build_combiner("pcgrad", apply_to=["b"])
    g_mod_b = pc.combine(grads2, ["a", "b"], groups, step=0) - grads2[0]
    for sl in group_slices(groups):
        assert torch.dot(g_mod_b[sl], grads2[0, sl]).item() == pytest.approx(0, abs=1e-9)


# ---------------------------------------------------------------------------------------
# The engine against the literal transcription of Algorithm 1.


def tiny_model_groups(granularity):
    model = TinyTransformer()
    return ParameterGroups.from_named_parameters(model.named_parameters(remove_duplicate=False), granularity)


LAYOUTS = {
    "equal_sizes": lambda: ParameterGroups.from_sizes([24] * 5),
    "unequal_sizes": lambda: ParameterGroups.from_sizes([7, 31, 31, 4, 64, 7, 2]),
    **{f"tiny_{g}": (lambda g=g: tiny_model_groups(g)) for g in ("whole_model", "enc_dec", "all_layer", "all_matrix")},
}


def run_against_reference(groups, steps, options, dtype=torch.float64, rtol=1e-6, seed=0):
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    engine = GradVac(seed=7, **options)
    ema_ref = {}
    corrections = 0
    for step in range(steps):
        tasks = rng.sample(TASKS, rng.randint(2, len(TASKS)))  # present tasks and their order vary
        grads = correlated_grads(gen, len(tasks), groups, dtype)
        expected = algorithm1_step(grads, tasks, groups, ema_ref, step, seed=7, **options)
        kept = torch.full((groups.numel,), float("nan"), dtype=dtype) if step % 2 else None
        out = engine.combine(grads, tasks, groups, step, out=kept)  # a fresh vector, or written into one
        assert out.dtype == dtype and (kept is None or out is kept)
        scale = expected.abs().max().item()
        assert_near(out.double(), expected, rtol)
        corrections += int(engine.last_report.corrected.sum())
        if options.get("fixed_target") is None:
            for (ti, tj, name), value in ema_ref.items():
                assert ema(engine, groups, ti, tj, name) == pytest.approx(value, abs=10 * rtol)
            n_set = int((engine.phi_hat != 0).sum())
            assert n_set == sum(1 for v in ema_ref.values() if v != 0)
    return engine, corrections


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_engine_equals_algorithm1(layout):
    groups = LAYOUTS[layout]()
    _, corrections = run_against_reference(groups, 30, dict(beta=0.2))
    assert corrections > 0


@pytest.mark.parametrize("layout", ["unequal_sizes", "tiny_all_layer"])
def test_engine_equals_algorithm1_apply_to_subset(layout):
    groups = LAYOUTS[layout]()
    engine, corrections = run_against_reference(groups, 30, dict(beta=0.1, apply_to=["en-hi", "de-en"]), seed=1)
    assert corrections > 0
    # only the tasks in G get EMA rows; the others only ever serve as g_j
    for ti in engine.task_names:
        row = engine.phi_hat[engine.task_names.index(ti)]
        assert bool((row != 0).any()) == (ti in ("en-hi", "de-en"))


@pytest.mark.parametrize("layout", ["equal_sizes", "tiny_enc_dec"])
@pytest.mark.parametrize("fixed_target", [0.3, -0.2])
def test_engine_equals_algorithm1_fixed_target(layout, fixed_target):
    groups = LAYOUTS[layout]()
    engine, corrections = run_against_reference(groups, 30, dict(fixed_target=fixed_target), seed=2)
    assert corrections > 0
    assert not engine.phi_hat.any()  # fixed_obj keeps no EMA


def test_engine_fp32_close_to_algorithm1():
    # no 2-element groups here: in 2-D, corrections often nearly cancel g'_i, and the
    # Gram-matrix form of ||g'_i|| then loses most of fp32's digits (fp64 above is exact)
    groups = ParameterGroups.from_sizes([20, 31, 31, 64, 20, 9])
    run_against_reference(groups, 30, dict(beta=0.2), dtype=torch.float32, rtol=1e-4, seed=3)


@pytest.mark.parametrize("beta", [0.5, 1e-2])
def test_engine_matches_torchjd_gradvac_per_group(beta):
    """torchjd's GradVac, one GradVacWeighting per group (its grouping recipe), on 2 tasks:
    the order cannot differ, so outputs and EMA states must agree step after step. The
    caller lays the flat gradient out in the order of the sizes it gave."""
    sizes = [30, 12, 5, 12, 12]
    groups = ParameterGroups.from_sizes(sizes)
    caller_slices = [slice(sum(sizes[:k]), sum(sizes[: k + 1])) for k in range(len(sizes))]
    gen = torch.Generator().manual_seed(5)
    engine = GradVac(beta=beta)
    weightings = [torchjd_aggregation.GradVacWeighting(beta=beta, eps=0.0) for _ in groups.names]
    corrections = 0
    for step in range(25):
        grads = correlated_grads(gen, 2, groups)
        expected = torch.empty(groups.numel, dtype=torch.float64)
        for sl, weighting in zip(caller_slices, weightings):
            g = grads[:, sl]
            expected[sl] = weighting(g @ g.T) @ g
        out = engine.combine(grads, ["a", "b"], groups, step)
        assert_near(out, expected, 1e-6)
        corrections += int(engine.last_report.corrected.sum())
        for k, weighting in enumerate(weightings):
            phi_t = weighting._phi_t
            torch.testing.assert_close(engine.phi_hat[:, :, k].double(), phi_t, rtol=0, atol=1e-6)
    assert corrections > 0


# ---------------------------------------------------------------------------------------
# The EMA and edge cases.


def test_ema_rises_for_aligned_tasks():
    groups = ParameterGroups.from_sizes([50, 50])
    gen = torch.Generator().manual_seed(6)
    base = torch.randn(groups.numel, generator=gen, dtype=torch.float64)
    grads = torch.stack([base + 0.5 * torch.randn(groups.numel, generator=gen, dtype=torch.float64) for _ in range(2)])
    phis = [cos(grads[0, sl], grads[1, sl]) for sl in group_slices(groups)]
    assert min(phis) > 0.5
    beta = 0.01
    c = GradVac(beta=beta)
    for step in range(100):
        out = c.combine(grads, ["a", "b"], groups, step)
        assert_near(out, grads.sum(0))  # phi > phi_hat: nothing to correct
    for name, phi in zip(groups.names, phis):
        expected = phi * (1 - (1 - beta) ** 100)  # phi_hat^(t) = phi (1 - (1 - beta)^t)
        assert ema(c, groups, "a", "b", name) == pytest.approx(expected, rel=1e-5)
        assert ema(c, groups, "b", "a", name) == pytest.approx(expected, rel=1e-5)


def test_absent_task_state_untouched():
    groups = ParameterGroups.from_sizes([20, 33])
    gen = torch.Generator().manual_seed(7)
    c = GradVac(beta=0.3)
    for step in range(5):
        c.combine(correlated_grads(gen, 3, groups), ["a", "b", "c"], groups, step)
    before = c.phi_hat.clone()
    ic = c.task_names.index("c")
    for step in range(5, 15):
        c.combine(correlated_grads(gen, 3, groups), ["d", "b", "a"], groups, step)
    after = c.phi_hat[: before.shape[0], : before.shape[0]]
    assert torch.equal(after[ic], before[ic])
    assert torch.equal(after[:, ic], before[:, ic])
    assert not torch.equal(after, before)  # the pairs present did move
    assert not c.phi_hat[c.task_names.index("d"), ic].any()


def test_zero_gradient_task_gives_no_nan_and_keeps_its_ema():
    groups = ParameterGroups.from_sizes([20, 20, 9])
    gen = torch.Generator().manual_seed(8)
    with_empty, without = GradVac(beta=0.3), GradVac(beta=0.3)
    for step in range(6):
        grads = correlated_grads(gen, 3, groups)
        with_empty.combine(grads, ["a", "b", "c"], groups, step)
        without.combine(grads[:2], ["a", "b"], groups, step)
    # the first five steps differ by the visit order; re-sync b's and a's EMA to compare
    without.load_state_dict(with_empty.state_dict())
    before = with_empty.phi_hat.clone()
    ic = with_empty.task_names.index("c")
    for step in range(6, 12):
        grads = correlated_grads(gen, 3, groups)
        grads[2] = 0.0  # c has no tokens in this batch
        out = with_empty.combine(grads, ["a", "b", "c"], groups, step)
        assert torch.isfinite(out).all()
        assert bool(with_empty.last_report.finite)
        # a and b only see each other, whatever the order: the same as c being absent
        expected = without.combine(grads[:2], ["a", "b"], groups, step)
        assert_near(out, expected, 1e-12)
        assert torch.equal(with_empty.phi_hat[ic], before[ic])
        assert torch.equal(with_empty.phi_hat[:, ic], before[:, ic])
        assert torch.isnan(with_empty.last_report.phi[2]).all()
        assert torch.isnan(with_empty.last_report.phi[:, 2]).all()
    assert_near(with_empty.phi_hat, without.phi_hat, msg="phi_hat")  # K=3 and K=2 Gram kernels round apart
    # all tasks without tokens: the update is zero, not NaN
    out = with_empty.combine(torch.zeros(3, groups.numel), ["a", "b", "c"], groups, 12)
    assert torch.equal(out, torch.zeros(groups.numel))


@pytest.mark.parametrize("fixed_target", [0.9999, -0.9999, 0.99, -0.99])
def test_targets_near_one_give_no_nan(fixed_target):
    groups = ParameterGroups.from_sizes([32, 32])
    gen = torch.Generator().manual_seed(9)
    cases = [
        torch.randn(2, groups.numel, generator=gen),
        torch.randn(1, groups.numel, generator=gen).repeat(2, 1),  # phi = 1 exactly
        torch.randn(1, groups.numel, generator=gen) * torch.tensor([[1.0], [-1.0]]),  # phi = -1
        torch.randn(1, groups.numel, generator=gen) * torch.tensor([[1.0], [1e-30]]),  # tiny norm
    ]
    for grads in cases:
        for dtype in (torch.float32, torch.float64):
            c = GradVac(fixed_target=fixed_target, apply_to=["a"])
            out = c.combine(grads.to(dtype), ["a", "b"], groups, 0)
            assert torch.isfinite(out).all()
    c = GradVac(fixed_target=fixed_target, apply_to=["a"])
    grads = cases[0].double()
    g_mod_a = c.combine(grads, ["a", "b"], groups, 0) - grads[1]
    reachable = max(-MAX_TARGET, min(MAX_TARGET, fixed_target))
    for sl in group_slices(groups):
        if cos(grads[0, sl], grads[1, sl]) < reachable:
            assert cos(g_mod_a[sl], grads[1, sl]) == pytest.approx(reachable, abs=1e-9)
        else:
            assert torch.equal(g_mod_a[sl], grads[0, sl])
    # a pair far below the target: pulled up to the (clamped) target
    grads = torch.stack([-grads[1] + 0.003 * grads[0], grads[1]])
    c = GradVac(fixed_target=fixed_target, apply_to=["a"])
    g_mod_a = c.combine(grads, ["a", "b"], groups, 0) - grads[1]
    for sl in group_slices(groups):
        assert cos(grads[0, sl], grads[1, sl]) < min(reachable, -0.9999)
        assert cos(g_mod_a[sl], grads[1, sl]) == pytest.approx(reachable, abs=1e-9)


def test_target_above_max_never_lowers_similarity():
    """phi_hat > MAX_TARGET, phi in [MAX_TARGET, phi_hat): the clamped line 14 would pull g'_i
    AWAY from g_j; the engine must leave the pair alone instead."""
    groups = ParameterGroups.from_sizes([64])
    gen = torch.Generator().manual_seed(10)
    a = torch.randn(64, generator=gen, dtype=torch.float64)
    noise = torch.randn(64, generator=gen, dtype=torch.float64)
    noise -= torch.dot(noise, a) / torch.dot(a, a) * a
    b = a + noise / noise.norm() * a.norm() * math.tan(math.acos(0.9995))  # cos(a, b) = 0.9995
    grads = torch.stack([a, b])
    assert cos(a, b) == pytest.approx(0.9995, abs=1e-12)
    c = GradVac(fixed_target=0.9999, apply_to=["a"])
    out = c.combine(grads, ["a", "b"], groups, 0)
    assert torch.equal(out, grads.sum(0))
    assert not c.last_report.corrected.any()
    # the same through the EMA: drive phi_hat(a, b) to ~1 with identical gradients
    e = GradVac(beta=0.9, apply_to=["a"])
    for step in range(10):
        assert torch.isfinite(e.combine(torch.stack([a, a]), ["a", "b"], groups, step)).all()
    assert ema(e, groups, "a", "b", "group0") > MAX_TARGET
    out = e.combine(grads, ["a", "b"], groups, 10)
    assert cos(out - b, b) >= 0.9995 - 1e-12
    # and drive it to ~-1: the correction stays finite
    for step in range(11, 21):
        assert torch.isfinite(e.combine(torch.stack([a, -a]), ["a", "b"], groups, step)).all()
    assert ema(e, groups, "a", "b", "group0") < -MAX_TARGET
    assert torch.isfinite(e.phi_hat).all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("name", ["gradvac", "pcgrad"])
def test_non_finite_input_skips_and_keeps_state(bad, name):
    groups = ParameterGroups.from_sizes([16, 16, 24])
    gen = torch.Generator().manual_seed(11)
    kwargs = {"beta": 0.3} if name == "gradvac" else {}
    c, twin = build_combiner(name, **kwargs), build_combiner(name, **kwargs)
    tasks = ["a", "b", "c"]
    for step in range(4):
        grads = correlated_grads(gen, 3, groups, torch.float32)
        c.combine(grads, tasks, groups, step)
        twin.combine(grads, tasks, groups, step)
    state = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in c.state_dict().items()}
    grads = correlated_grads(gen, 3, groups, torch.float32)
    grads[1, 20] = bad
    out = c.combine(grads, tasks, groups, 4)
    assert not torch.isfinite(out).all()
    assert not bool(c.last_report.finite)
    assert torch.equal(c.phi_hat, state["phi_hat"])
    assert c.task_names == state["task_names"]
    # the trainer skips the batch; the next steps are as if it never happened
    for step in range(5, 8):
        grads = correlated_grads(gen, 3, groups, torch.float32)
        torch.testing.assert_close(c.combine(grads, tasks, groups, step), twin.combine(grads, tasks, groups, step), rtol=0, atol=0)
        assert bool(c.last_report.finite)
    assert torch.equal(c.phi_hat, twin.phi_hat)


@pytest.mark.parametrize("name", ["gradvac", "pcgrad", "mgda"])
def test_gram_overflow_gives_the_plain_sum_and_keeps_state(name):
    """A finite fp32 gradient of ~1e20 whose squared norm overflows fp32 (the other Gram
    entries stay finite): the cosines cannot be measured, so the update is the plain sum
    and the state does not move."""
    groups = ParameterGroups.from_sizes([16, 16])
    gen = torch.Generator().manual_seed(17)
    c = build_combiner(name)
    c.combine(correlated_grads(gen, 3, groups, torch.float32), ["a", "b", "c"], groups, 0)
    before = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in c.state_dict().items()}
    huge = correlated_grads(gen, 3, groups, torch.float32)
    huge[0] *= 1e20
    gram = groups.gram(huge)
    assert torch.isfinite(huge).all() and torch.isinf(gram[:, 0, 0]).all() and torch.isfinite(gram[:, 1:, 1:]).all()
    out = c.combine(huge, ["a", "b", "c"], groups, 1)
    assert not bool(c.last_report.finite)
    assert_near(out, huge.sum(0))
    for key, value in c.state_dict().items():
        assert torch.equal(value, before[key]) if torch.is_tensor(value) else value == before[key]


@pytest.mark.parametrize("scale", [1024.0, 1 / 1024])
@pytest.mark.parametrize("name", ["gradvac", "pcgrad", "mgda"])
def test_loss_scale_only_scales_the_result(name, scale):
    groups = ParameterGroups.from_sizes([16, 40, 40, 9])
    gen = torch.Generator().manual_seed(12)
    kwargs = {"beta": 0.3} if name == "gradvac" else {}
    plain, scaled = build_combiner(name, **kwargs), build_combiner(name, **kwargs)
    for step in range(8):
        grads = correlated_grads(gen, 4, groups, torch.float32)
        out = plain.combine(grads, TASKS[:4], groups, step)
        out_scaled = scaled.combine(grads * scale, TASKS[:4], groups, step)
        assert_near(out_scaled, out * scale, 1e-5)
        if name != "mgda":
            assert torch.equal(plain.last_report.corrected, scaled.last_report.corrected)
        else:
            assert_near(plain.last_report.weights, scaled.last_report.weights)
    if name != "mgda":
        assert_near(scaled.phi_hat, plain.phi_hat, 1e-6)


# ---------------------------------------------------------------------------------------
# State.


def run_steps(c, groups, gen, steps, start=0):
    outs = []
    rng = random.Random(start)
    for step in range(start, start + steps):
        tasks = rng.sample(TASKS, rng.randint(2, 5))
        grads = correlated_grads(gen, len(tasks), groups, torch.float32)
        outs.append(c.combine(grads, tasks, groups, step))
    return outs


@pytest.mark.parametrize("name", ["gradvac", "pcgrad"])
def test_state_dict_round_trip_and_continue(name):
    groups = ParameterGroups.from_sizes([10, 25, 25])
    kwargs = {"beta": 0.2} if name == "gradvac" else {}
    c = build_combiner(name, **kwargs)
    run_steps(c, groups, torch.Generator().manual_seed(13), 6)
    buffer = io.BytesIO()
    torch.save(c.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # plain types and tensors only
    loaded = build_combiner(name, **kwargs)
    loaded.load_state_dict(state)
    assert loaded.task_names == c.task_names
    assert torch.equal(loaded.phi_hat, c.phi_hat)
    outs_a = run_steps(c, groups, torch.Generator().manual_seed(14), 6, start=6)
    outs_b = run_steps(loaded, groups, torch.Generator().manual_seed(14), 6, start=6)
    for a, b in zip(outs_a, outs_b):
        assert torch.equal(a, b)
    assert torch.equal(loaded.phi_hat, c.phi_hat)


def test_load_state_from_another_combiner_or_other_groups_fails():
    groups = ParameterGroups.from_sizes([10, 25, 25])
    gen = torch.Generator().manual_seed(15)
    c = GradVac()
    run_steps(c, groups, gen, 3)
    state = c.state_dict()
    for other in ("pcgrad", "mgda", "gradnorm", "sum"):
        with pytest.raises(ValueError, match="gradvac"):
            build_combiner(other).load_state_dict(state)
    # a fresh combiner loads it, but refuses to run it on other groups
    for other_groups in (ParameterGroups.from_sizes([10, 25]), ParameterGroups.from_sizes([11, 24, 25])):
        fresh = GradVac()
        fresh.load_state_dict(state)
        with pytest.raises(ValueError, match="other parameter groups"):
            fresh.combine(torch.zeros(2, other_groups.numel), ["a", "b"], other_groups, 0)
        # a combiner already running on other groups refuses the state when loading it
        used = GradVac()
        used.combine(torch.ones(2, other_groups.numel), ["a", "b"], other_groups, 0)
        before = used.state_dict()
        with pytest.raises(ValueError, match="other parameter groups"):
            used.load_state_dict(state)
        assert used.task_names == before["task_names"]
        assert torch.equal(used.phi_hat, before["phi_hat"])
    n = len(state["task_names"])
    for phi_hat in (state["phi_hat"][:, :, :2],  # fewer groups
                    state["phi_hat"][:, :-1],  # not square
                    torch.zeros(n + 1, n + 1, 3)):  # more rows than task names
        with pytest.raises(ValueError, match="inconsistent"):
            GradVac().load_state_dict(dict(state, phi_hat=phi_hat))
    # a state saved before any step (no groups yet) into a combiner already running
    used = GradVac()
    run_steps(used, groups, gen, 1)
    with pytest.raises(ValueError, match=r"\(0 groups, not 3\)"):
        used.load_state_dict(GradVac().state_dict())


def test_visit_order_is_a_permutation_drawn_from_seed_and_step():
    order = visit_order(1, 5, 6, 10)
    assert order.shape == (10, 6, 5)
    for k in range(10):
        for i in range(6):
            assert sorted(order[k, i].tolist()) == [j for j in range(6) if j != i]
    assert torch.equal(order, visit_order(1, 5, 6, 10))  # the same on every worker
    assert not torch.equal(order, visit_order(1, 6, 6, 10))
    assert not torch.equal(order, visit_order(2, 5, 6, 10))
    # a fresh order every step of a long run, not a cycle
    orders = {tuple(visit_order(1, step, 6, 10).reshape(-1).tolist()) for step in range(400)}
    assert len(orders) == 400


def test_bad_arguments():
    assert GradVac().beta == 1e-2  # the paper's value, not LibMTL's/torchjd's 0.5 (pitfall 8)
    assert GradVac(beta=1.0).beta == 1.0  # the target is the last phi: allowed
    for beta in (0.0, 1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="beta must be in"):
            GradVac(beta=beta)
    for target in (1.0, -1.0, 1.5, -1.5, float("nan")):
        with pytest.raises(ValueError, match="fixed GradVac target"):
            GradVac(fixed_target=target)
    groups = ParameterGroups.from_sizes([4, 4])
    c = GradVac()
    with pytest.raises(ValueError):
        c.combine(torch.zeros(2, 9), ["a", "b"], groups, 0)
    with pytest.raises(ValueError):
        c.combine(torch.zeros(3, 8), ["a", "b"], groups, 0)
    with pytest.raises(ValueError):
        c.combine(torch.zeros(8), ["a"], groups, 0)
    with pytest.raises(ValueError):
        c.combine(torch.zeros(2, 8), ["a", "a"], groups, 0)
    assert isinstance(build_combiner("pcgrad"), PCGrad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["gradvac", "pcgrad", "mgda"])
def test_half_precision_gradients(dtype, name):
    """fp16/bf16 gradients: fp32 math inside, the result in the gradients' dtype, close to
    the same combiner on the same values in fp32."""
    groups = ParameterGroups.from_sizes([64, 64, 300])
    gen = torch.Generator().manual_seed(16)
    kwargs = {"beta": 0.3} if name == "gradvac" else {}
    half, full = build_combiner(name, **kwargs), build_combiner(name, **kwargs)
    for step in range(5):
        grads = (correlated_grads(gen, 4, groups, torch.float32) * 200).to(dtype)  # squares overflow fp16
        out = half.combine(grads, TASKS[:4], groups, step)
        expected = full.combine(grads.float(), TASKS[:4], groups, step)
        assert out.dtype == dtype and torch.isfinite(out).all()
        assert bool(half.last_report.finite)
        eps = torch.finfo(dtype).eps
        assert_near(out.float(), expected, eps)
    if name == "gradvac":
        torch.testing.assert_close(half.phi_hat, full.phi_hat, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["gradvac", "gradnorm"])
def test_an_overflowing_half_precision_combination_leaves_the_state_untouched(name):
    """Finite fp16 rows whose combination overflows fp16 (every row near the top of fp16's
    range, all aligned): the trainer skips that step, so the state must not move either."""
    groups = ParameterGroups.from_sizes([64, 64])
    gen = torch.Generator().manual_seed(8)
    kwargs = {"beta": 0.5} if name == "gradvac" else {}
    c, twin = build_combiner(name, **kwargs), build_combiner(name, **kwargs)
    losses = torch.tensor([2.0, 1.0, 3.0])
    for step in range(3):  # some history: targets/weights away from their start
        grads = correlated_grads(gen, 3, groups, torch.float32).to(torch.float16)
        for e in (c, twin):
            e.combine(grads, ["a", "b", "c"], groups, step, losses=losses * (step + 1))
    before = c.state_dict()
    huge = torch.full((3, groups.numel), 40000.0, dtype=torch.float16)
    huge[1, :64] = -40000.0  # a conflict in group 0, so GradVac has something to correct
    assert torch.isfinite(huge).all()
    out = c.combine(huge, ["a", "b", "c"], groups, 3, losses=losses)
    assert not torch.isfinite(out).all()  # the combination overflowed fp16
    assert not bool(c.last_report.finite)
    after = c.state_dict()
    for key, value in before.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, after[key]), key
    # the same rows in fp32 do not overflow, and then the state moves
    twin.combine(huge.float(), ["a", "b", "c"], groups, 3, losses=losses)
    assert bool(twin.last_report.finite)
    moved = twin.state_dict()
    key = "phi_hat" if name == "gradvac" else "weights"
    assert not torch.equal(moved[key], before[key])


def test_the_gram_matrices_prove_an_update_finite_without_a_pass_over_it(monkeypatch):
    """The update's finiteness follows from the Gram matrices when their bound allows
    (sum_m |W[k, m]| ||g_mk|| under half the dtype's largest value): no pass over the
    update. Where the bound does not hold, the pass decides, and catches the overflow."""
    from fairseq_gradvac.combiners import combiner as base

    passes = []
    monkeypatch.setattr(base, "all_finite", lambda x: passes.append(x.numel()) or torch.isfinite(x).all())
    groups = ParameterGroups.from_sizes([64, 64, 300])
    gen = torch.Generator().manual_seed(3)
    c = build_combiner("gradvac", beta=0.5)
    for step in range(3):
        out = c.combine(correlated_grads(gen, 4, groups, torch.float32), TASKS[:4], groups, step)
        assert torch.isfinite(out).all() and bool(c.last_report.finite)
    assert passes == []  # proved from the Gram matrices alone

    # finite rows and Gram matrices, weights too large for fp32: the bound fails, the pass sees inf
    rows = torch.zeros(2, groups.numel)
    rows[:, 0] = 1e19  # ||g||^2 = 1e38 < 3.4e38: the Gram matrices are finite
    gram = groups.gram(rows)
    c.weigh(gram, TASKS[:2], groups, 3)
    assert bool(c.gram_finite)
    weights = torch.full((len(groups), 2), 1e20)
    update = groups.weighted_sum(rows, weights)
    assert not bool(c.update_finite(gram, weights, groups, update)) and passes == [groups.numel]
    small = torch.ones(len(groups), 2)  # the same rows, weights of 1: 2e19, proved finite
    assert bool(c.update_finite(gram, small, groups, groups.weighted_sum(rows, small))) and len(passes) == 1
