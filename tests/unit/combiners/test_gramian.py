"""TorchJD's Gramian methods as combiners (UPGrad, CAGrad, ..., Nash-MTL, ConFIG) and the
static scalarization: the same update as TorchJD's own aggregators, group by group."""
import argparse

import numpy as np
import pytest
import torch

from fairseq_gradvac.combiners import ParameterGroups, build_combiner
from fairseq_gradvac.combiners.options import add_combiner_args, combiner_from_args, direction_weights

from tests.helpers.tolerance import assert_near

aggregation = pytest.importorskip("torchjd.aggregation")

GRAMIAN = ["upgrad", "dualproj", "cagrad", "imtl_g", "aligned_mtl", "fairgrad", "config", "nash_mtl", "cr_mogm"]


def _torchjd(name, num_tasks):
    """TorchJD's own aggregator of the method, as a user of TorchJD would build it."""
    return {
        "upgrad": lambda: aggregation.UPGrad(),
        "dualproj": lambda: aggregation.DualProj(),
        "cagrad": lambda: aggregation.CAGrad(c=0.4),
        "imtl_g": lambda: aggregation.IMTLG(),
        "aligned_mtl": lambda: aggregation.AlignedMTL(),
        "fairgrad": lambda: aggregation.FairGrad(alpha=1.0),
        "config": lambda: aggregation.ConFIG(),
        "nash_mtl": lambda: aggregation.NashMTL(n_tasks=num_tasks, max_norm=0.0),
        # (its first update: the base method's; later ones: test_cr_mogm.py)
        "cr_mogm": lambda: aggregation.UPGrad(),
    }[name]()


def _conflicting_rows(k, sizes, seed):
    """fp64 token-summed rows with conflicts: a shared direction, task-specific parts, and a
    few tasks pulling against the others."""
    gen = torch.Generator().manual_seed(seed)
    p = sum(sizes)
    shared = torch.randn(p, generator=gen, dtype=torch.float64)
    rows = 0.6 * shared + torch.randn(k, p, generator=gen, dtype=torch.float64)
    rows[: max(1, k // 4)] -= 1.2 * shared  # against the others
    n = torch.randint(50, 400, (k,), generator=gen).double()
    return rows * n[:, None] / 100, n  # the gradient of a token-summed loss grows with n


@pytest.mark.parametrize("name", [m for m in GRAMIAN if m != "nash_mtl"])
@pytest.mark.parametrize("k", [2, 8, 50])
def test_each_group_gets_torchjds_update_of_the_mean_losses(name, k):
    """Per group: the direction of TorchJD's aggregator applied to the mean-loss rows
    g_i / n_i, at the plain sum's scale (its weights divided by their sum; ConFIG's by K),
    times N for fairseq's division by N tokens. (Nash-MTL: TorchJD's own aggregator often
    returns its start on these rows; test_nash_mtl_finds_the_bargaining_solution.)"""
    sizes = [300, 200, 250]
    groups = ParameterGroups.from_sizes(sizes)
    tasks = [f"t{i}" for i in range(k)]
    combiner = build_combiner(name)
    references = [_torchjd(name, k) for _ in sizes]  # Nash-MTL: a state per group
    for step in range(2 if name == "nash_mtl" else 1):
        rows, n = _conflicting_rows(k, sizes, seed=k + step)
        out = combiner.combine(rows, tasks, groups, step, ntokens=n)
        for g, (start, stop) in enumerate(zip(groups.offsets, groups.offsets[1:] + [groups.numel])):
            mean_rows = rows[:, start:stop] / n[:, None]
            expected = references[g](mean_rows)
            if name == "config":
                expected = expected / k
            else:  # TorchJD's weights on the same rows, to divide by their sum
                weights = torch.linalg.lstsq(mean_rows.T, expected.unsqueeze(1)).solution.squeeze(1)
                expected = expected / weights.sum()
            assert_near(out[start:stop] / n.sum(), expected, rel=1e-5, msg=f"{name} K={k} group {g} step {step}")


@pytest.mark.parametrize("name", GRAMIAN)
def test_equal_gradients_give_the_plain_sum(name):
    groups = ParameterGroups.from_sizes([40, 30])
    g = torch.randn(1, 70, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    n = torch.tensor([10.0, 30.0, 60.0], dtype=torch.float64)
    rows = g * n[:, None]  # the same mean-loss gradient g for every task
    out = build_combiner(name).combine(rows, ["a", "b", "c"], groups, 0, ntokens=n)
    assert_near(out, rows.sum(0), rel=1e-6, msg=name)


@pytest.mark.parametrize("name", GRAMIAN)
def test_a_non_finite_gram_gives_the_plain_sum_and_keeps_the_state(name):
    groups = ParameterGroups.from_sizes([20, 20])
    combiner = build_combiner(name)
    rows, n = _conflicting_rows(3, [20, 20], seed=1)
    combiner.combine(rows, ["a", "b", "c"], groups, 0, ntokens=n)
    before = combiner.state_dict()
    rows[1, 5] = float("inf")
    out = combiner.combine(rows, ["a", "b", "c"], groups, 1, ntokens=n)
    assert not combiner.last_report.finite
    assert torch.isinf(out[5])
    _assert_same_state(combiner.state_dict(), before)


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


def _bargaining_solution(gram):
    """alpha > 0 with G alpha = 1 / alpha (Navon et al. 2022), by an independent route: BFGS
    (scipy) on the convex 1/2 a^T G a - sum log a in u = log a."""
    from scipy.optimize import minimize

    g = gram.numpy()

    def f(u):
        a = np.exp(u)
        ga = g @ a
        return 0.5 * a @ ga - u.sum(), a * ga - 1

    res = minimize(f, np.zeros(len(g)), jac=True, method="BFGS", options={"gtol": 1e-12, "maxiter": 10000})
    alpha = torch.from_numpy(np.exp(res.x))
    assert_near(gram @ alpha, 1 / alpha, rel=1e-6, msg="the reference solve")
    return alpha


@pytest.mark.parametrize("k", [3, 4, 5, 6, 8])
def test_nash_mtl_finds_the_bargaining_solution(k):
    """On conflicting rows, fresh and on the next step (warm), every group's update is the
    Nash bargaining solution's sum_i alpha_i g_i / n_i, at the plain sum's scale (alpha
    divided by its sum): cosine >= 0.999 and the same norm. The mean gradient's cosine is
    below 0.999 in every case, so TorchJD's start (alpha = 1) would fail this."""
    sizes = [300, 200, 250]
    groups = ParameterGroups.from_sizes(sizes)
    tasks = [f"t{i}" for i in range(k)]
    for seed in range(4):
        combiner = build_combiner("nash_mtl")
        for step in range(2):
            rows, n = _conflicting_rows(k, sizes, seed=100 * k + 10 * seed + step)
            out = combiner.combine(rows, tasks, groups, step, ntokens=n)
            assert combiner.last_report.failed_solves == 0
            for g, (start, stop) in enumerate(zip(groups.offsets, groups.offsets[1:] + [groups.numel])):
                mean_rows = rows[:, start:stop] / n[:, None]
                alpha = _bargaining_solution(mean_rows @ mean_rows.T)
                expected = (alpha / alpha.sum()) @ mean_rows
                got = out[start:stop] / n.sum()
                cosine = float(got @ expected / (got.norm() * expected.norm()))
                mean = mean_rows.mean(0)
                assert float(mean @ expected / (mean.norm() * expected.norm())) < 0.999, "uniform weights would pass"
                assert cosine >= 0.999, f"K={k} seed {seed} step {step} group {g}: cosine {cosine}"
                assert_near(got.norm(), expected.norm(), rel=1e-3, msg=f"K={k} seed {seed} group {g}")


def test_nash_mtl_keeps_its_state_when_an_fp16_update_overflows():
    """Every row finite, the combination not: the trainer skips the update, and the
    weights Nash-MTL solved for must not become the next step's start."""
    groups = ParameterGroups.from_sizes([16])
    combiner = build_combiner("nash_mtl")
    # (rows of a fixed seed: for about 1.5% of random rows ECOS fails and TorchJD's solver
    # keeps alpha = 1, after which the last step below would not move it either)
    rows = torch.randn(3, 16, generator=torch.Generator().manual_seed(0)).half()
    combiner.combine(rows, ["a", "b", "c"], groups, 0)
    before = combiner.state_dict()
    assert not torch.equal(before["alpha"], torch.ones_like(before["alpha"]))  # the solver moved it
    # three equal rows: every method's update is their sum, 3 x 30000 > fp16's 65504
    big = torch.linspace(20000, 30000, 16).half().repeat(3, 1)
    out = combiner.combine(big, ["a", "b", "c"], groups, 1)
    assert not torch.isfinite(out).all() and not combiner.last_report.finite
    _assert_same_state(combiner.state_dict(), before)
    combiner.combine(big / 1000, ["a", "b", "c"], groups, 2)
    assert combiner.state_dict()["updates"] == before["updates"] + 1
    assert not torch.equal(combiner.state_dict()["alpha"], before["alpha"])


def test_nash_mtl_state_is_per_task_name_and_survives_a_checkpoint():
    """A task absent from a step keeps its alpha; a combiner restored from the state gives
    the uninterrupted run's next update bit for bit."""
    groups = ParameterGroups.from_sizes([30, 30])
    rows, n = _conflicting_rows(3, [30, 30], seed=3)
    first = build_combiner("nash_mtl")
    first.combine(rows, ["a", "b", "c"], groups, 0, ntokens=n)
    alpha_b = first.alpha[first.task_names.index("b")].clone()
    first.combine(rows[[0, 2]], ["a", "c"], groups, 1, ntokens=n[[0, 2]])
    assert torch.equal(first.alpha[first.task_names.index("b")], alpha_b)
    resumed = build_combiner("nash_mtl")
    resumed.load_state_dict(first.state_dict())
    later, m = _conflicting_rows(3, [30, 30], seed=4)
    expected = first.combine(later, ["c", "a", "b"], groups, 2, ntokens=m)
    assert torch.equal(resumed.combine(later, ["c", "a", "b"], groups, 2, ntokens=m), expected)
    with pytest.raises(ValueError, match="inconsistent nash_mtl state"):
        broken = first.state_dict()
        broken["alpha"] = broken["alpha"][:2]
        build_combiner("nash_mtl").load_state_dict(broken)
    # its alpha is per group: the state runs on the groups it was saved for only
    other = ParameterGroups.from_sizes([20, 40])
    with pytest.raises(ValueError, match=r"nash_mtl state was built for other parameter groups"):
        resumed.combine(_conflicting_rows(3, [20, 40], seed=5)[0], ["a", "b", "c"], other, 3, ntokens=m)
    running = build_combiner("nash_mtl")
    running.combine(_conflicting_rows(3, [20, 40], seed=5)[0], ["a", "b", "c"], other, 0, ntokens=m)
    with pytest.raises(ValueError, match=r"nash_mtl state was saved for other parameter groups"):
        running.load_state_dict(first.state_dict())


def test_nash_mtl_solves_every_n_updates():
    groups = ParameterGroups.from_sizes([30])
    combiner = build_combiner("nash_mtl", update_every=2)
    rows, n = _conflicting_rows(3, [30], seed=5)
    combiner.combine(rows, ["a", "b", "c"], groups, 0, ntokens=n)
    solved = combiner.alpha.clone()
    other, m = _conflicting_rows(3, [30], seed=6)
    combiner.combine(other, ["a", "b", "c"], groups, 1, ntokens=m)
    assert torch.equal(combiner.alpha, solved)  # kept: update 1 of every 2
    combiner.combine(other, ["a", "b", "c"], groups, 2, ntokens=m)
    assert not torch.equal(combiner.alpha, solved)


@pytest.mark.parametrize("name, kwargs, option", [
    ("cagrad", {"c": -0.1}, "--cagrad-c"),
    ("fairgrad", {"alpha": 0.0}, "--fairgrad-alpha"),
    ("nash_mtl", {"update_every": 0}, "--nash-mtl-update-every"),
    ("nash_mtl", {"iterations": 0}, "--nash-mtl-iterations"),
])
def test_bad_values_are_refused_naming_the_option(name, kwargs, option):
    with pytest.raises(ValueError, match=option):
        build_combiner(name, **kwargs)


@pytest.mark.parametrize("name", GRAMIAN)
def test_a_missing_solver_names_the_pip_extra(name, monkeypatch):
    import torchjd._mixins

    real = torchjd._mixins.find_spec
    monkeypatch.setattr(torchjd._mixins, "find_spec",
                        lambda dep: None if dep in ("quadprog", "cvxpy", "scipy", "ecos") else real(dep))
    if name in ("imtl_g", "aligned_mtl", "config"):  # pure torch: no solver to miss
        build_combiner(name)
        return
    with pytest.raises(ImportError, match=r'pip install "fairseq-gradvac\[methods\]"'):
        build_combiner(name)


def _parse(*argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--gradient-combiner", default="gradvac")
    parser.add_argument("--seed", type=int, default=1)
    add_combiner_args(parser)
    return parser.parse_args(list(argv))


def test_options_build_the_method_and_refuse_another_methods_option():
    combiner = combiner_from_args(_parse("--gradient-combiner", "cagrad", "--cagrad-c", "0.2"), ["a-b"])
    assert combiner.name == "cagrad" and combiner.c == 0.2
    nash = combiner_from_args(_parse("--gradient-combiner", "nash_mtl", "--nash-mtl-update-every", "3"), ["a-b"])
    assert nash.update_every == 3 and nash.iterations == 20
    with pytest.raises(ValueError, match="--cagrad-c applies to cagrad, not upgrad"):
        combiner_from_args(_parse("--gradient-combiner", "upgrad", "--cagrad-c", "0.2"), ["a-b"])
    with pytest.raises(SystemExit):
        _parse("--nash-mtl-iterations", "0")


# ---------------------------------------------------------------------------------------
# The static scalarization (Xin et al., 2022): the plain sum with fixed direction weights.


def test_the_scalarization_is_the_sum_of_the_weighted_rows():
    groups = ParameterGroups.from_sizes([7, 5])
    rows = torch.randn(3, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    args = _parse("--gradient-combiner", "sum", "--direction-weights", "en-hi:2,hi-en:0.5")
    combiner = combiner_from_args(args, ["en-fr", "en-hi", "hi-en"])
    out = combiner.combine(rows, ["en-fr", "en-hi", "hi-en"], groups, 0)
    assert_near(out, rows[0] + 2 * rows[1] + 0.5 * rows[2], msg="scalarization")
    # the weights follow the names, in any order and subset
    out = combiner.combine(rows[[2, 0]], ["hi-en", "en-fr"], groups, 1)
    assert_near(out, 0.5 * rows[2] + rows[0], msg="subset")
    assert torch.equal(build_combiner("sum").combine(rows, ["a", "b", "c"], groups, 0), rows.sum(0))


def test_direction_weights_are_checked():
    assert direction_weights("en-hi:2, hi-en:0") == {"en-hi": 2.0, "hi-en": 0.0}
    for bad in ("en-hi", "en-hi:x", "en-hi:-1", "en-hi:nan", ":2", "en-hi:1,en-hi:2"):
        with pytest.raises(argparse.ArgumentTypeError):
            direction_weights(bad)
    with pytest.raises(ValueError, match="--direction-weights names fr-en, which are not training"):
        combiner_from_args(_parse("--gradient-combiner", "sum", "--direction-weights", "fr-en:2"), ["en-fr"])
    with pytest.raises(ValueError, match="--direction-weights applies to sum, not gradvac"):
        combiner_from_args(_parse("--direction-weights", "en-fr:2"), ["en-fr"])
    pairs = ["en-fr", "fr-en", "en-cs", "cs-en"]
    with pytest.raises(ValueError, match="--direction-weights gives every training direction"):
        combiner_from_args(_parse("--gradient-combiner", "sum", "--direction-weights",
                                  "en-fr:0,fr-en:0,en-cs:0,cs-en:0"), pairs)
    # one direction left with its default weight 1 trains
    assert combiner_from_args(_parse("--gradient-combiner", "sum", "--direction-weights",
                                     "en-fr:0,fr-en:0,en-cs:0"), pairs).direction_weights["en-fr"] == 0


@pytest.mark.parametrize("name", GRAMIAN)
def test_the_gradients_scale_changes_neither_the_state_nor_the_direction(name):
    """Several workers average their rows (a Gram 1/W^2 of one worker's), and a loss scale
    multiplies them: the weights and Nash-MTL's alpha must not follow."""
    groups = ParameterGroups.from_sizes([40, 30])
    rows, n = _conflicting_rows(4, [40, 30], seed=7)
    one, half = build_combiner(name), build_combiner(name)
    out = one.combine(rows, list("abcd"), groups, 0, ntokens=n)
    out_half = half.combine(rows / 2, list("abcd"), groups, 0, ntokens=n)
    assert_near(out_half * 2, out, rel=1e-6, msg=name)
    for key, value in one.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert_near(half.state_dict()[key], value, rel=1e-6, msg=key)
