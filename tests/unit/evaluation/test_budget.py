"""The study's budget rule (fairseq_gradvac.evaluation.budget) on hand-computed learning curves and on
fairseq's own validation lines."""
import json

import pytest

from fairseq_gradvac.evaluation import budget

# Falls fast, then levels: the relative drop over the last fifth, by hand (L linear between
# validations): U=200: L(160)=4.4 -> 4.0, 9.1%; U=300: L(240)=3.8 -> 3.5, 7.9%; U=400:
# L(320)=3.48 -> 3.4, 2.3%; U=500: L(400)=3.4 -> 3.38, 0.59%; U=600: L(480)=3.384 -> 3.37,
# 0.41%. U=100 has no validation at or before 80. The rule must hold at two validations in
# a row: 500 and 600.
CURVE = [(100, 5.0), (200, 4.0), (300, 3.5), (400, 3.4), (500, 3.38), (600, 3.37)]


def test_the_budget_is_the_first_update_whose_last_fifth_lowered_the_loss_by_under_1_percent_twice():
    result = budget.choose_budget(CURVE)
    assert result["holds"] and not result["capped"] and result["budget"] == 600
    assert result["drop"] == pytest.approx(0.014 / 3.384, rel=1e-12)
    assert [u for u, _ in result["checked"]] == [200, 300, 400, 500, 600]
    assert [round(d, 4) for _, d in result["checked"]] == [0.0909, 0.0789, 0.023, 0.0059, 0.0041]


def test_only_multiples_of_every_are_candidates_and_the_tolerance_is_a_parameter():
    # 600 is a candidate; the validation before it (500, not a candidate) must hold too
    assert budget.choose_budget(CURVE, every=200)["budget"] == 600
    assert budget.choose_budget(CURVE[:5], every=200)["budget"] is None  # 400 drops 2.3%
    assert budget.choose_budget(CURVE, tolerance=0.025)["budget"] == 500  # 400 and 500
    # the last half: L(250)=3.75 -> 3.38 at 500 (9.9%), L(300)=3.5 -> 3.37 at 600 (3.7%)
    assert not budget.choose_budget(CURVE, fraction=0.5)["holds"]
    assert not budget.choose_budget(CURVE, tolerance=0.04, fraction=0.5)["holds"]  # 500: 9.9%
    assert budget.choose_budget(CURVE, tolerance=0.1, fraction=0.5)["budget"] == 600


def test_a_curve_still_falling_does_not_hold():
    result = budget.choose_budget(CURVE[:4])
    assert not result["holds"] and result["budget"] is None
    assert result["drop"] == pytest.approx(0.08 / 3.48)
    assert budget.choose_budget([])["holds"] is False


def test_a_loss_that_rises_again_has_stopped_lowering():
    # 500 rises (a negative drop) but 400 still fell 15%; 600 and 500 both under 1%
    assert budget.choose_budget([(100, 5.0), (400, 3.0), (500, 3.1)])["budget"] is None
    assert budget.choose_budget([(100, 5.0), (400, 3.0), (500, 3.1), (600, 3.05)])["budget"] == 600


def test_one_flat_validation_does_not_fix_the_budget_and_seeds_are_averaged():
    flat = [(100, 5.0), (200, 4.0), (300, 3.5), (400, 3.5), (500, 3.3)]
    assert budget.choose_budget(flat)["budget"] is None  # 400's 0% alone would have fixed it
    other = [(100, 4.0), (200, 3.0), (300, 2.5), (400, 2.3), (450, 2.2)]  # 450: not in both
    assert budget.mean_curve([flat, other]) == [(100, 4.5), (200, 3.5), (300, 3.0), (400, 2.9)]
    assert budget.mean_curve([]) == []


def test_a_cap_is_the_budget_when_the_curve_reaches_it_before_the_rule_holds():
    result = budget.choose_budget(CURVE[:4], cap=400)
    assert result["capped"] and not result["holds"] and result["budget"] == 400
    assert result["drop"] == pytest.approx(0.08 / 3.48)
    assert budget.choose_budget(CURVE[:3], cap=400)["budget"] is None  # not reached yet
    assert budget.choose_budget(CURVE, cap=600)["holds"]  # the rule first, if it holds by the cap
    assert budget.choose_budget(CURVE, cap=500)["capped"]  # 600 is past the cap
    with pytest.raises(ValueError, match="cap 300 is not a multiple"):
        budget.choose_budget(CURVE, every=200, cap=300)


@pytest.mark.parametrize("kwargs", [{"fraction": 0}, {"fraction": 1}, {"tolerance": 0}])
def test_bad_parameters_are_refused(kwargs):
    with pytest.raises(ValueError):
        budget.choose_budget(CURVE, **kwargs)


LOG = """\
2026-12-01 08:44:14 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 7.269 | nll_loss 7.199 | ppl 146.93 | wps 6268.2 | wpb 236 | bsz 40 | num_updates 100
2026-12-01 08:44:20 | INFO | train_inner | epoch 001:    150 / 300 loss=6.9, nll_loss=6.8, num_updates=150
2026-12-01 08:44:35 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 6.688 | nll_loss 6.585 | ppl 96.01 | wps 5394.4 | wpb 236 | bsz 40 | num_updates 200 | best_loss 6.688
2026-12-01 08:44:36 | INFO | valid | epoch 001 | valid on 'test' subset | loss 1.0 | nll_loss 1.0 | num_updates 200
2026-12-01 09:00:00 | INFO | fairseq.trainer | Loaded checkpoint checkpoint_last.pt (epoch 1 @ 100 updates)
2026-12-01 09:00:35 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 6.5 | nll_loss 6.4 | ppl 90.5 | num_updates 200 | best_loss 6.5
"""


def test_fairseq_log_validation_lines_are_read_the_last_of_an_update_counting(tmp_path):
    log = tmp_path / "train.log"
    log.write_text(LOG)
    assert budget.read_curve(str(log)) == [(100, 7.269), (200, 6.5)]  # resumed: 6.5 replaces 6.688
    assert budget.read_curve(str(log), subset="test") == [(200, 1.0)]


def test_a_csv_curve_and_the_command(tmp_path, capsys):
    csv = tmp_path / "curve.csv"
    csv.write_text("update,loss\n" + "".join(f"{u},{l}\n" for u, l in CURVE))
    out = tmp_path / "budget.json"
    assert budget.main([str(csv), "--out", str(out)]) == 0
    assert "holds at 600 updates" in capsys.readouterr().out
    assert json.loads(out.read_text())["budget"] == 600
    other = tmp_path / "other.csv"
    other.write_text("update,loss\n" + "".join(f"{u},{l + 1}\n" for u, l in CURVE))
    mean = tmp_path / "mean.csv"
    assert budget.main([str(csv), str(other), "--cap", "400", "--every", "200", "--curve-out", str(mean),
                        "--out", str(out)]) == 0
    assert "capped at 400 updates" in capsys.readouterr().out
    assert json.loads(out.read_text())["capped"]
    lines = mean.read_text().splitlines()
    assert lines[0].startswith("update,mean_loss,loss_") and lines[1].startswith("100,5.500000,5.000000,6.000000")
    table = budget.curve_table(str(mean)).splitlines()  # what the study's tables show of it
    assert table[0].startswith("| updates | 100 | 200 |") and table[2].startswith("| mean valid loss | 5.500 |")
    assert len(table[0].split("|")) == len(table[2].split("|")) == len(lines) + 2
    assert budget.main([str(csv), "--tolerance", "0.001"]) == 1
    assert "does not hold yet" in capsys.readouterr().out
    (tmp_path / "bad.csv").write_text("step,value\n1,2\n")
    with pytest.raises(ValueError, match="update,loss"):
        budget.read_curve(str(tmp_path / "bad.csv"))
    with pytest.raises(SystemExit, match="no such learning curve"):
        budget.main([str(tmp_path / "missing.log")])
