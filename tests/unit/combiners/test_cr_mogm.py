"""CR-MOGM: TorchJD's CRMOGMWeighting around the wrapped method, update after update, with
directions that come and go, a non-finite update, the checkpoint and the options."""
import argparse

import pytest
import torch

from fairseq_gradvac.combiners import ParameterGroups, build_combiner
from fairseq_gradvac.combiners.options import add_combiner_args, combiner_from_args
from tests.helpers.tolerance import assert_near
from tests.unit.combiners.test_gramian import _conflicting_rows

aggregation = pytest.importorskip("torchjd.aggregation")
SIZES = [300, 200]


def _mean_gramians(rows, n, groups):
    """Each group's mean-loss Gramian at trace 1 (what the wrapped method is given)."""
    out = []
    for start, stop in zip(groups.offsets, groups.offsets[1:] + [groups.numel]):
        m = rows[:, start:stop] / n[:, None]
        g = m @ m.T
        out.append(g / g.diagonal().sum())
    return out


@pytest.mark.parametrize("base,reference", [("upgrad", lambda: aggregation.UPGradWeighting()),
                                            ("cagrad", lambda: aggregation.CAGradWeighting(c=0.4))])
@pytest.mark.parametrize("k", [2, 8])
def test_the_weights_are_torchjds_cr_mogm_of_the_base_method(base, reference, k):
    groups = ParameterGroups.from_sizes(SIZES)
    tasks = [f"t{i}" for i in range(k)]
    combiner = build_combiner("cr_mogm", base=base, alpha=0.7)
    references = [aggregation.CRMOGMWeighting(reference(), alpha=0.7) for _ in SIZES]
    plain = build_combiner(base)
    moved = 0.0
    for step in range(4):
        rows, n = _conflicting_rows(k, SIZES, seed=10 * k + step)
        combiner.combine(rows, tasks, groups, step, ntokens=n)
        plain.combine(rows, tasks, groups, step, ntokens=n)
        for g, gram in enumerate(_mean_gramians(rows, n, groups)):
            expected = references[g](gram)
            assert_near(combiner.last_report.weights[g], expected / expected.sum(), 1e-6, f"step {step} group {g}")
        moved = max(moved, (combiner.last_report.weights - plain.last_report.weights).abs().max().item())
    assert moved > 1e-3  # the average is not the base method's weights


def test_each_direction_keeps_its_own_average_while_it_is_absent():
    groups = ParameterGroups.from_sizes(SIZES)
    combiner = build_combiner("cr_mogm", alpha=0.5)
    rows, n = _conflicting_rows(3, SIZES, seed=1)
    combiner.combine(rows, ["a", "b", "c"], groups, 0, ntokens=n)
    first = combiner.state_dict()["ema"].clone()
    combiner.combine(rows[:2], ["a", "b"], groups, 1, ntokens=n[:2])  # c absent
    ema = combiner.state_dict()["ema"]
    assert torch.equal(ema[:, 2], first[:, 2]) and not torch.equal(ema[:, :2], first[:, :2])
    combiner.combine(rows[[0, 2]], ["a", "d"], groups, 2, ntokens=n[[0, 2]])  # d new: starts at its weights
    assert combiner.task_names == ["a", "b", "c", "d"] and not torch.isnan(combiner.state_dict()["ema"][:, 3]).any()


def test_a_non_finite_update_and_a_checkpoint_keep_the_averages():
    groups = ParameterGroups.from_sizes(SIZES)
    a = build_combiner("cr_mogm")
    rows, n = _conflicting_rows(3, SIZES, seed=2)
    a.combine(rows, ["a", "b", "c"], groups, 0, ntokens=n)
    before = a.state_dict()["ema"].clone()
    bad = rows.clone()
    bad[0, 3] = float("inf")
    a.combine(bad, ["a", "b", "c"], groups, 1, ntokens=n)
    assert torch.equal(a.state_dict()["ema"], before)
    b = build_combiner("cr_mogm")
    b.load_state_dict(a.state_dict())
    rows2, n2 = _conflicting_rows(3, SIZES, seed=3)
    assert torch.equal(a.combine(rows2, ["a", "b", "c"], groups, 2, ntokens=n2),
                       b.combine(rows2, ["a", "b", "c"], groups, 2, ntokens=n2))
    with pytest.raises(ValueError, match="averages upgrad's weights, this run cagrad's"):
        build_combiner("cr_mogm", base="cagrad").load_state_dict(a.state_dict())


def _parse(*argv):
    parser = argparse.ArgumentParser()
    add_combiner_args(parser)
    parser.add_argument("--gradient-combiner")
    return parser.parse_args(list(argv))


def test_the_base_methods_options_apply_and_others_are_refused():
    combiner = combiner_from_args(_parse("--gradient-combiner", "cr_mogm", "--cr-mogm-base", "cagrad",
                                         "--cagrad-c", "0.2", "--cr-mogm-alpha", "0.8"), ["a", "b"])
    assert (combiner.base.name, combiner.alpha, combiner.base.c) == ("cagrad", 0.8, 0.2)
    with pytest.raises(ValueError, match="--cagrad-c applies to cagrad, not cr_mogm"):
        combiner_from_args(_parse("--gradient-combiner", "cr_mogm", "--cagrad-c", "0.2"), ["a", "b"])
    with pytest.raises(ValueError, match="--cr-mogm-alpha must be in"):
        build_combiner("cr_mogm", alpha=1.5)
    with pytest.raises(ValueError, match="--cr-mogm-base must be one of"):
        build_combiner("cr_mogm", base="nash_mtl")
