"""Every method that solves something reports, per group and update, whether its answer meets
the condition it solves; a failure is a warning the first time, counted always, and the group
gets the method's documented fallback."""
import logging

import pytest
import torch

from fairseq_gradvac.combiners import ParameterGroups, build_combiner
from fairseq_gradvac.combiners import mgda

from tests.helpers.tolerance import assert_near
from tests.unit.combiners.test_gramian import _conflicting_rows

pytest.importorskip("torchjd.aggregation")

SOLVING = ["mgda", "nash_mtl", "fairgrad", "upgrad", "dualproj", "cagrad"]
TASKS = ["a", "b", "c", "d"]


def _opposite(rows):
    """Row 1 = -2 x row 0 in group 0: a nonnegative combination of the two (mean-loss) rows
    is zero, so G w = 0 for some w >= 0, and G w = w^(-1/alpha) has no solution (its convex
    objective is unbounded below)."""
    rows[1, :60] = -2 * rows[0, :60]


def _combine(combiner, rows, n, step=0, groups=None):
    groups = groups or ParameterGroups.from_sizes([60, 40])
    return combiner.combine(rows, TASKS[: rows.shape[0]], groups, step, ntokens=n)


@pytest.mark.parametrize("name", SOLVING)
def test_a_solved_step_reports_every_group_solved(name):
    rows, n = _conflicting_rows(4, [60, 40], seed=3)
    combiner = build_combiner(name)
    _combine(combiner, rows, n)
    report = combiner.last_report
    assert report.solved.tolist() == [True, True] and report.failed_solves == 0
    assert bool((report.residual <= 1e-3).all())
    assert combiner.failed_solves == 0


def _provoke(name, monkeypatch):
    """Make the method's solver give a wrong answer (or raise), as a failing solver would."""
    if name == "mgda":
        monkeypatch.setattr(mgda, "ITERATIONS_PER_TASK", 0)  # stopped at its start, a vertex
    elif name in ("upgrad", "dualproj"):
        # weights whose update leaves the dual cone: all on the task pulling against the others
        monkeypatch.setattr(type(build_combiner(name)), "group_weights",
                            lambda self, gram, group, rows: torch.eye(len(rows), dtype=torch.float64)[0] * 5 - 1)
    elif name == "cagrad":
        def raises(self, gram, group, rows):
            raise ValueError("Solver 'CLARABEL' failed")  # what cvxpy says
        monkeypatch.setattr(type(build_combiner(name)), "group_weights", raises)


@pytest.mark.parametrize("name", SOLVING)
def test_a_failed_solve_is_reported_warned_once_and_counted(name, monkeypatch, caplog):
    rows, n = _conflicting_rows(4, [60, 40], seed=3)
    if name in ("nash_mtl", "fairgrad"):
        _opposite(rows)
    _provoke(name, monkeypatch)
    combiner = build_combiner(name)
    with caplog.at_level(logging.WARNING, logger="fairseq_gradvac.combiners.combiner"):
        out = _combine(combiner, rows, n, step=0)
        first = combiner.last_report.failed_solves
        _combine(combiner, rows, n, step=1)
    assert first >= 1 and not bool(combiner.last_report.solved[0])
    assert combiner.failed_solves == first + combiner.last_report.failed_solves
    warnings = [r for r in caplog.records if "failed at update 1" in r.getMessage()]
    assert len(warnings) == 1 and name in warnings[0].getMessage()
    assert len(caplog.records) == 1  # the second step's failures only counted
    assert bool(torch.isfinite(out).all())
    if name in ("fairgrad", "upgrad", "dualproj", "cagrad"):
        # the fallback: the group's mean-loss gradient, at the plain sum's scale
        mean_rows = rows[:, :60] / n[:, None]
        assert_near(out[:60] / n.sum(), mean_rows.mean(0), rel=1e-9, msg=name)


def test_nash_mtl_falls_back_to_the_alpha_of_its_last_solve():
    rows, n = _conflicting_rows(4, [60, 40], seed=3)
    combiner = build_combiner("nash_mtl")
    _combine(combiner, rows, n)
    before = combiner.alpha.clone()
    broken, _ = _conflicting_rows(4, [60, 40], seed=4)
    _opposite(broken)
    _combine(combiner, broken, n, step=1)
    assert combiner.last_report.solved.tolist() == [False, True]
    assert torch.equal(combiner.alpha[:, 0], before[:, 0])  # the failed group's state kept
    assert not torch.equal(combiner.alpha[:, 1], before[:, 1])  # the solved one moved on
    # its weights are those of the last solve, scaled to sum to 1
    assert_near(combiner.last_report.weights[0], before[:, 0] / before[:, 0].sum(), rel=1e-12)


@pytest.mark.parametrize("name", SOLVING)
def test_one_direction_and_all_zero_groups_need_no_solve(name):
    """K = 1 (a step of one direction's batches) gives that direction's gradient; a group
    where every gradient is zero gives a zero update; neither is a failed solve (TorchJD's
    Nash-MTL raised on both)."""
    rows, n = _conflicting_rows(3, [60, 40], seed=5)
    one = build_combiner(name)
    out = one.combine(rows[:1], ["a"], ParameterGroups.from_sizes([60, 40]), 0, ntokens=n[:1])
    assert_near(out, rows[0], rel=1e-12, msg=name)
    assert one.last_report.failed_solves == 0
    zero = build_combiner(name)
    rows[:, 60:] = 0
    out = _combine(zero, rows, n)
    assert bool(torch.isfinite(out).all()) and not bool(out[60:].any())
    assert zero.last_report.failed_solves == 0


@pytest.mark.parametrize("name", ["imtl_g", "aligned_mtl", "fairgrad", "nash_mtl", "cagrad", "mgda"])
def test_a_vanishing_gradient_shrinks_the_update_without_a_jump_at_zero(name, caplog):
    """These methods' weights (summing to 1) concentrate on a shrinking gradient: the group's
    update shrinks with it (benchmarks/scale.py), and an exactly zero gradient gives the
    limit, a zero update, not a failed solve (IMTL-G and Aligned-MTL gave 1.5x the plain
    sum there, FairGrad and Nash-MTL failed)."""
    groups = ParameterGroups.from_sizes([100])
    base, _ = _conflicting_rows(3, [100], seed=7)
    ones = torch.ones(3, dtype=torch.float64)
    norms = []
    for s in (1e-3, 1e-6, 0.0):
        rows = base.clone()
        rows[1] *= s
        combiner = build_combiner(name)
        with caplog.at_level(logging.WARNING, logger="fairseq_gradvac.combiners.gramian"):
            out = combiner.combine(rows, TASKS[:3], groups, 0, ntokens=ones)
            combiner.combine(rows, TASKS[:3], groups, 1, ntokens=ones)
        norms.append(float(out.norm() / rows.sum(0).norm()))
        if combiner.solves:
            assert combiner.last_report.failed_solves == 0, s
    assert norms[0] < 0.02 and norms[1] < 1e-4 and norms[2] == 0, norms
    if getattr(combiner, "shrinks_to_zero", False):  # the limit rule: warned once, counted
        assert combiner.zeroed_groups == 2
        zeroed = [r for r in caplog.records if "exactly zero gradient" in r.getMessage()]
        assert len(zeroed) == 1 and "b has" in zeroed[0].getMessage()


def test_cagrads_check_fails_an_answer_off_its_optimum():
    """The duality gap catches a wrong CAGrad answer, not only a solver that raises: the
    weights of a simplex point that is not the program's minimizer fail the check."""
    rows, n = _conflicting_rows(4, [60], seed=3)
    combiner = build_combiner("cagrad")
    gram = rows / n[:, None] @ (rows / n[:, None]).T
    gram = gram / gram.trace()
    right = combiner.weighting(gram).double()
    assert combiner.residual(gram, right) <= combiner.tolerance
    b = torch.full((4,), 0.25, dtype=torch.float64)
    for vertex in range(4):  # b + lambda e_j, as TorchJD's weights are built, at every vertex
        wrong = b + 3.0 * torch.eye(4, dtype=torch.float64)[vertex]
        if not torch.allclose((right - b) / (right - b).sum(), (wrong - b) / 3.0, atol=1e-3):
            assert combiner.residual(gram, wrong) > combiner.tolerance, vertex


def test_mgda_reports_nothing_solved_for_a_non_finite_gram():
    rows, n = _conflicting_rows(3, [60, 40], seed=1)
    rows[1, 5] = float("nan")
    combiner = build_combiner("mgda")
    _combine(combiner, rows, n)
    assert combiner.last_report.solved is None and combiner.last_report.failed_solves is None


def test_a_bug_in_a_solver_is_not_taken_for_a_failed_solve(monkeypatch):
    """Only the errors solvers give up with count as failed solves; anything else stops."""
    def broken(self, gram, group, rows):
        raise AttributeError("'QuadprogProjector' object has no attribute 'reg_eps'")

    monkeypatch.setattr(type(build_combiner("upgrad")), "group_weights", broken)
    rows, n = _conflicting_rows(3, [60, 40], seed=1)
    with pytest.raises(AttributeError):
        _combine(build_combiner("upgrad"), rows, n)
