"""The Table 1 printer on hand-written bleu.json files (no fairseq needed)."""
import json

import pytest

from fairseq_gradvac import results_table


def _run(root, name, scores):
    d = root / name
    d.mkdir()
    (d / "bleu.json").write_text(json.dumps({"directions": {k: {"bleu": v} for k, v in scores.items()}}))


@pytest.fixture
def runs(tmp_path):
    _run(tmp_path, "multilingual_t5_seed1", {"en-fr": 10.0, "en-cs": 4.0, "en-hi": 2.0})
    _run(tmp_path, "multilingual_t5_seed2", {"en-fr": 12.0, "en-cs": 6.0, "en-hi": 4.0})
    _run(tmp_path, "multilingual_t1_seed1", {"en-fr": 11.0, "en-cs": 5.0, "en-hi": 1.0})
    _run(tmp_path, "gradvac_all_layer_t5_seed1", {"en-fr": 9.0, "en-cs": 3.0, "en-hi": 3.0})
    (tmp_path / "gradvac_all_layer_t5_seed1" / "bleu_900u.json").write_text("{}")  # ignored
    (tmp_path / "pcgrad_all_layer_t5_seed1").mkdir()  # not evaluated yet: skipped
    return tmp_path


def test_seeds_are_averaged_with_half_range(runs):
    table = results_table.table1(results_table.collect(runs), ["fr", "cs", "tr", "hi"], [])
    line = next(l for l in table.splitlines() if l.startswith("| (2) Multilingual | 5 |"))
    # en-fr (10, 12) -> 11 ±1; average over en-fr, en-cs, en-hi per seed: 16/3, 22/3 -> 6.33 ±1
    assert "| 11.00 ±1.00 |" in line and line.endswith("| 6.33 ±1.00 |")
    assert "en-tr" not in table  # no run trained it: no column
    assert "Any->En" not in table
    assert "PCGrad" not in table


def test_imbalance_table_in_the_papers_order(runs):
    text = results_table.imbalance_table(results_table.collect(runs), {"High": ["fr", "cs"], "Med": [], "Low": ["hi"]})
    labels = [l.split("|")[1].strip() for l in text.splitlines() if l.startswith("| ") and "---" not in l]
    assert labels == ["En->Any", "T=1", "T=5", "(9) GradVac w. all_layer T=5"]
    t1 = next(l for l in text.splitlines() if l.startswith("| T=1 |"))
    assert t1 == "| T=1 | 8.00 | 1.00 | 5.67 |"


def test_no_evaluated_run_is_an_error(tmp_path):
    with pytest.raises(SystemExit, match="no evaluated runs"):
        results_table.main([str(tmp_path)])
