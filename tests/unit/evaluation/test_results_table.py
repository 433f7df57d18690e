"""The Table 1 printer on hand-written bleu.json files (no fairseq needed), and its paired
bootstrap tests against sacrebleu's own command line on the same files."""
import json
import os
import random
import re
import subprocess
import sys

import pytest

from fairseq_gradvac.evaluation import results_table


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


def test_seeds_are_averaged_with_their_standard_deviation(runs):
    table = results_table.table1(results_table.collect(runs), ["fr", "cs", "tr", "hi"], [])
    line = next(l for l in table.splitlines() if l.startswith("| (2) Multilingual | 5 |"))
    # en-fr (10, 12) -> 11 ±sqrt(2); average over en-fr, en-cs, en-hi per seed: 16/3, 22/3 -> 6.33 ±1.41
    assert "| 11.00 ±1.41 |" in line and line.endswith("| 6.33 ±1.41 |")
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


WORDS = "the a file menu open click dialog close save cell format font tab page number new".split()


def _corrupt(lines, rate, seed):
    rng = random.Random(seed)
    return [" ".join(w if rng.random() > rate else rng.choice(WORDS) for w in l.split()) for l in lines]


@pytest.fixture
def outputs(tmp_path):
    """Runs with kept test outputs: gradvac's en-fr much better than the baseline's in both
    seeds, its en-cs a little better (seed-dependent), its en-hi the very same text."""
    rng = random.Random(0)
    refs = {d: [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) for _ in range(80)]
            for d in ("en-fr", "en-cs", "en-hi")}
    for d, lines in refs.items():
        (tmp_path / f"ref.{d}").write_text("\n".join(lines) + "\n")
    rates = {"multilingual": {"en-fr": 0.6, "en-cs": 0.4, "en-hi": 0.5},
             "gradvac_all_layer": {"en-fr": 0.2, "en-cs": 0.37, "en-hi": 0.5}}
    for row, by_direction in rates.items():
        for seed in (1, 2):
            run = tmp_path / "runs" / f"{row}_t5_seed{seed}"
            (run / "bleu.hyp").mkdir(parents=True)
            directions = {}
            for i, (d, rate) in enumerate(by_direction.items()):
                same = d == "en-hi"  # both rows write the very same hypotheses
                hyps = _corrupt(refs[d], rate, 100 * seed + i + (0 if same or row == "multilingual" else 50))
                (run / "bleu.hyp" / f"{d}.txt").write_text("\n".join(hyps) + "\n")
                directions[d] = {"bleu": 1.0, "chrf": 2.0, "hypotheses": f"bleu.hyp/{d}.txt",
                                 "reference": str(tmp_path / f"ref.{d}")}
            (run / "bleu.json").write_text(json.dumps({"directions": directions}))
    return tmp_path


def _sacrebleu_cli(ref, baseline, system):
    """p-values (BLEU, chrF) of sacrebleu's own paired bootstrap command on the files."""
    proc = subprocess.run([sys.executable, "-m", "sacrebleu", ref, "-i", baseline, system, "--paired-bs",
                           "-m", "bleu", "chrf", "-f", "text"], capture_output=True, text=True,
                          env=dict(os.environ, SACREBLEU_SEED="12345"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [float(p) for p in re.findall(r"\(p = ([0-9.]+)\)", proc.stdout)]


def test_paired_bootstrap_p_values_are_sacrebleus_own(outputs):
    tests = results_table.significance(str(outputs / "runs"), "multilingual_t5")
    assert {(t["seed"], t["direction"], t["metric"]) for t in tests} == {
        (s, d, m) for s in (1, 2) for d in ("en-fr", "en-cs", "en-hi") for m in ("bleu", "chrf")}
    p_values = []
    for seed in (1, 2):
        for d in ("en-fr", "en-cs"):
            run = outputs / "runs" / f"{{}}_t5_seed{seed}"
            cli = _sacrebleu_cli(str(outputs / f"ref.{d}"), str(run).format("multilingual") + f"/bleu.hyp/{d}.txt",
                                 str(run).format("gradvac_all_layer") + f"/bleu.hyp/{d}.txt")
            ours = [next(t for t in tests if (t["seed"], t["direction"], t["metric"]) == (seed, d, m))["p"]
                    for m in ("bleu", "chrf")]
            assert ours == pytest.approx(cli, abs=5e-5)  # the command prints 4 decimals
            p_values += ours
    assert min(p_values) < 0.05 < max(p_values)  # some significant, some not
    # sacrebleu 2.6 gives identical outputs its smallest p (no resample's centred difference
    # exceeds 0): the tables count a seed only when its difference is not zero
    same = [t for t in tests if t["direction"] == "en-hi"]
    assert all(t["delta"] == 0 and t["p"] == pytest.approx(1 / 1001) for t in same)
    assert all("bs:1000|seed:12345" in t["signature"] for t in tests)


def test_the_significance_table_counts_seeds_and_names_what_holds_in_every_seed(outputs):
    tests = results_table.significance(str(outputs / "runs"), "multilingual_t5")
    text = results_table.significance_tables(tests, "multilingual_t5")
    bleu = text.split("### chrF")[0]
    row = next(l for l in bleu.splitlines() if l.startswith("| (9) GradVac w. all_layer | 5 |"))
    cells = [c.strip() for c in row.split("|")[3:-1]]
    assert cells[0].startswith("**+") and cells[0].endswith("(2+ 0-/2)**")  # en-fr
    assert cells[2] == "+0.00 (0+ 0-/2)"  # en-hi, the same outputs
    assert "- BLEU en-fr: (9) GradVac w. all_layer T=5 better in all 2 seeds" in text
    assert "BLEU en-hi" not in text.split("every seed:")[1]


def test_the_command_writes_bleu_chrf_and_the_paired_tests(outputs):
    out = outputs / "table"
    results_table.main([str(outputs / "runs"), "--high", "fr,cs", "--med", "", "--low", "hi",
                        "--bootstrap", "200", "--out", str(out)])
    text = (out.parent / "table.md").read_text()
    for title in ("## BLEU per direction", "## chrF per direction", "## chrF: data imbalance",
                  "## Paired bootstrap against multilingual_t5 (200 resamples"):
        assert title in text
    assert "| (9) GradVac w. all_layer | 5 | 2.00 ±0.00 |" in text  # chrF cells from bleu.json
    saved = json.loads((out.parent / "table.json").read_text())
    assert len(saved["paired_bootstrap"]) == 12 and "bs:200" in saved["paired_bootstrap"][0]["signature"]


def test_training_time_sums_fairseqs_done_lines_over_a_runs_invocations(runs):
    log = "x | done training in 60.0 seconds\nresumed\ny | done training in 120.0 seconds\n"
    (runs / "multilingual_t5_seed1" / "train.log").write_text(log)
    (runs / "multilingual_t5_seed2" / "train.log").write_text("z | done training in 240.0 seconds\n")
    assert results_table.training_seconds(str(runs / "multilingual_t5_seed1")) == 180.0
    assert "| (2) Multilingual | 5 | 3.50 ±0.71 |" in results_table.times_table(str(runs))


def test_a_cell_says_on_how_many_seeds_it_rests_and_missing_runs_are_marked(tmp_path):
    _run(tmp_path, "multilingual_t5_seed1", {"en-fr": 10.0, "en-hi": 2.0})
    _run(tmp_path, "multilingual_t5_seed2", {"en-fr": 12.0})  # no en-hi
    runs = results_table.collect(tmp_path)
    table = results_table.table1(runs, ["fr", "hi"], [], expected=[("multilingual", "t5"), ("gradvac_all_layer", "t5")])
    line = next(l for l in table.splitlines() if l.startswith("| (2) Multilingual | 5 |"))
    assert "| 11.00 ±1.41 |" in line and "| 2.00 (n=1) |" in line  # en-fr on 2 seeds, en-hi on 1
    assert "| (9) GradVac w. all_layer | 5 | missing | missing | missing |" in table
    rows = [l.split("|")[1].strip() for l in table.splitlines() if l.startswith("| (")]
    assert rows == ["(2) Multilingual", "(9) GradVac w. all_layer"]  # missing rows in the paper's order too
    table = results_table.table1(runs, ["fr", "hi"], [], expected=[("bilingual", "t5"), ("multilingual", "t5")])
    assert [l.split("|")[1].strip() for l in table.splitlines() if l.startswith("| (")] == [
        "(1) Bilingual", "(2) Multilingual"]
    assert results_table.missing_runs(tmp_path, ["multilingual_t5", "gradvac_all_layer_t5"], [1, 2]) == [
        "gradvac_all_layer_t5_seed1", "gradvac_all_layer_t5_seed2"]
    results_table.main([str(tmp_path), "--expect", "multilingual_t5,gradvac_all_layer_t5", "--seeds", "1,2",
                        "--bootstrap", "0", "--out", str(tmp_path / "t")])
    assert "**Runs finished: 2 of 4**; missing: gradvac_all_layer_t5_seed1, gradvac_all_layer_t5_seed2." in \
        (tmp_path / "t.md").read_text()


def test_half_budget_scores_and_a_bundle_of_another_budget_is_refused(tmp_path):
    _run(tmp_path, "multilingual_t5_seed1", {"en-fr": 10.0})
    half = tmp_path / "multilingual_t5_seed1" / "half"
    half.mkdir()
    (half / "bleu.json").write_text(json.dumps({"directions": {"en-fr": {"bleu": 7.5}}}))
    assert results_table.collect(tmp_path, at="half") == {("multilingual", "t5"): [{"en-fr": 7.5}]}
    (tmp_path / "budget.json").write_text(json.dumps({"budget": 400}))
    (tmp_path / "multilingual_t5_seed1" / "run.json").write_text(json.dumps({"budget": 400}))
    results_table.main([str(tmp_path), "--bootstrap", "0"])
    (tmp_path / "multilingual_t5_seed1" / "run.json").write_text(json.dumps({"budget": 300}))
    with pytest.raises(SystemExit, match="trained to 300 updates, but the study's budget .* is 400 updates"):
        results_table.main([str(tmp_path), "--bootstrap", "0"])
