"""The Table 1 printer on hand-written bleu.json files (no fairseq needed), its paired tests
(per seed against a brute-force bootstrap and sacrebleu's one-sided one; across seeds against
scipy), Holm's correction, and the imbalance table beside the paper's from the committed
study bundles."""
import json
import math
import os
import random
import re

import numpy as np
import pytest

from fairseq_gradvac.evaluation import results_table
from tests.helpers.tolerance import assert_near


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


def test_a_sampling_schedule_is_a_row_of_its_own(runs):
    """ROW_SAMPLING_seedN with a schedule's name (configs/sampling/cooldown.args) for SAMPLING:
    its own row, after the temperatures, labelled by the name."""
    _run(runs, "multilingual_cooldown_seed1", {"en-fr": 13.0, "en-cs": 7.0, "en-hi": 3.0})
    assert set(results_table.run_folders(str(runs))) == {
        ("multilingual", "t1"), ("multilingual", "t5"), ("multilingual", "cooldown"), ("gradvac_all_layer", "t5")}
    table = results_table.table1(results_table.collect(runs), ["fr", "cs", "tr", "hi"], [])
    rows = [l.split("|")[1:3] for l in table.splitlines() if l.startswith("| (2)")]
    assert [r[1].strip() for r in rows] == ["1", "5", "cooldown"]
    text = results_table.imbalance_table(results_table.collect(runs), {"High": ["fr", "cs"], "Med": [], "Low": ["hi"]})
    assert "| T=cooldown | 10.00 | 3.00 | 7.67 |" in text


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
    seeds, its en-cs better (p 0.002-0.036: after Holm in seed 1 only), its en-hi the very
    same text."""
    rng = random.Random(0)
    refs = {d: [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) for _ in range(80)]
            for d in ("en-fr", "en-cs", "en-hi")}
    for d, lines in refs.items():
        (tmp_path / f"ref.{d}").write_text("\n".join(lines) + "\n")
    rates = {"multilingual": {"en-fr": 0.6, "en-cs": 0.4, "en-hi": 0.5},
             "gradvac_all_layer": {"en-fr": 0.2, "en-cs": 0.32, "en-hi": 0.5}}
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


def near(actual, expected, **kw):
    """assert_near on float64 arrays (torch would read a list of floats as float32)."""
    assert_near(np.asarray(actual, dtype=float), np.asarray(expected, dtype=float), **kw)


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


@pytest.fixture
def pair(tmp_path):
    """Two systems' outputs on 60 reference sentences, equally corrupted (seeds 1021, 2021):
    sacrebleu 2.6's paired bootstrap calls their BLEU difference significant, a two-sided test
    does not."""
    rng = random.Random(0)
    refs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) for _ in range(60)]
    return (_write(tmp_path / "a.txt", _corrupt(refs, 0.4, 1021)),
            _write(tmp_path / "b.txt", _corrupt(refs, 0.4, 2021)), _write(tmp_path / "ref.txt", refs), refs)


def test_the_bootstrap_is_the_brute_force_one_on_resampled_sentence_sets(pair):
    """p and the interval equal those of scoring every resample's sentences from scratch with
    sacrebleu's corpus metrics (the sufficient statistics only make it fast)."""
    from sacrebleu.metrics import BLEU, CHRF

    a_file, b_file, ref_file, refs = pair
    a, b = (open(f).read().splitlines() for f in (a_file, b_file))
    ours = results_table.paired_bootstrap(a_file, b_file, ref_file, n_samples=150, seed=7)
    picks = np.random.default_rng(7).choice(len(refs), size=(150, len(refs)), replace=True)
    for name, metric in (("bleu", BLEU()), ("chrf", CHRF())):
        d = metric.corpus_score(b, [refs]).score - metric.corpus_score(a, [refs]).score
        star = np.array([metric.corpus_score([b[i] for i in idx], [[refs[i] for i in idx]]).score -
                         metric.corpus_score([a[i] for i in idx], [[refs[i] for i in idx]]).score for idx in picks])
        near([ours[name]["delta"]], [d], rel=1e-12, msg=name)
        assert ours[name]["p"] == (np.sum(np.abs(star - star.mean()) >= abs(d)) + 1) / (len(star) + 1)
        near(ours[name]["ci"], np.percentile(star, [2.5, 97.5]), rel=1e-12, scale=abs(d), msg=name)
        assert 0 < ours[name]["p"] < 1


def test_the_bootstrap_is_two_sided(pair, monkeypatch):
    """Swapping the systems keeps p and mirrors the interval; where sacrebleu 2.6 (which
    centres |d*|) finds the difference significant at 0.05, the centred test does not; and
    identical outputs get p = 1, not sacrebleu's smallest p."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    a_file, b_file, ref_file, refs = pair
    ab = results_table.paired_bootstrap(a_file, b_file, ref_file, n_samples=200)
    ba = results_table.paired_bootstrap(b_file, a_file, ref_file, n_samples=200)
    for m in ("bleu", "chrf"):
        assert ab[m]["p"] == ba[m]["p"] and ab[m]["delta"] == -ba[m]["delta"]
        near(ab[m]["ci"], [-ba[m]["ci"][1], -ba[m]["ci"][0]], rel=1e-12, scale=abs(ab[m]["delta"]), msg=m)
    monkeypatch.setenv("SACREBLEU_SEED", "12345")
    _, scores = PairedTest([("a", open(a_file).read().splitlines()), ("b", open(b_file).read().splitlines())],
                           {"BLEU": BLEU()}, [refs], test_type="bs", n_samples=200)()
    assert scores["BLEU"][1].p_value < 0.05 <= ab["bleu"]["p"]
    same = results_table.paired_bootstrap(a_file, a_file, ref_file, n_samples=200)
    assert all(same[m]["delta"] == 0 and same[m]["p"] == 1 and same[m]["ci"] == [0, 0] for m in same)


def test_holm_on_a_hand_example():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> 0.06 (monotone)
    near(results_table.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02], rel=1e-12)
    near(results_table.holm([0.2, 0.5]), [0.4, 0.5], rel=1e-12)
    near(results_table.holm([0.6, 0.7]), [1.0, 1.0], rel=1e-12)  # capped at 1


def test_the_seeds_are_paired():
    """A paired t on the seeds' differences, as scipy's ttest_rel and by hand: seeds far apart
    with the same small lead are significant, which an unpaired test would not find."""
    from scipy import stats

    baseline, system = [10.0, 12.0, 14.0], [10.2, 12.3, 14.25]
    mean, ci, p = results_table.paired_t(system, baseline)
    d = [0.2, 0.3, 0.25]
    sd = math.sqrt(sum((x - 0.25) ** 2 for x in d) / 2)
    t = 0.25 / (sd / math.sqrt(3))
    half = stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    near([mean, p], [0.25, 2 * stats.t.sf(t, 2)], rel=1e-9)
    assert p < 0.02
    near(ci, [0.25 - half, 0.25 + half], rel=1e-9)
    assert stats.ttest_ind(system, baseline).pvalue > 0.8  # the pairing is what finds it
    assert results_table.paired_t([1.0], [0.5]) == (0.5, None, None)  # one seed: no test
    # the same difference in every seed, up to the rounding of the scores: no test either
    # (scipy would give p = 0 from a spread of 1e-15)
    same = results_table.paired_t([10.1, 12.1, 14.1], [10.0, 12.0, 14.0])
    assert same[2] is None and same[0] == pytest.approx(0.1) and same[1] == pytest.approx([0.1, 0.1])
    assert stats.ttest_rel([10.1, 12.1, 14.1], [10.0, 12.0, 14.0]).pvalue < 1e-10


def test_the_seed_test_pairs_seed_numbers_and_corrects_a_rows_cells(tmp_path):
    _run(tmp_path, "multilingual_t5_seed1", {"en-fr": 10.0, "fr-en": 20.0})
    _run(tmp_path, "multilingual_t5_seed2", {"en-fr": 14.0, "fr-en": 21.0})
    _run(tmp_path, "multilingual_t5_seed3", {"en-fr": 12.0, "fr-en": 25.0})
    _run(tmp_path, "gradvac_all_layer_t5_seed1", {"en-fr": 11.0, "fr-en": 20.5})
    _run(tmp_path, "gradvac_all_layer_t5_seed3", {"en-fr": 12.5, "fr-en": 24.0})  # no seed 2
    tests = results_table.paired_seeds({"bleu": results_table.collect_seeds(tmp_path)}, "multilingual_t5", ["fr"], [])
    by = {t["cell"]: t for t in tests}
    assert list(by) == ["En->Any avg", "Any->En avg", "en-fr", "fr-en"]
    assert by["en-fr"]["seeds"] == [1, 3] and by["en-fr"]["differences"] == [1.0, 0.5]
    assert by["fr-en"]["differences"] == [0.5, -1.0]
    # Holm over the row's 4 tests: each p times its rank's multiplier, made monotone
    near([t["p_holm"] for t in tests], results_table.holm([t["p"] for t in tests]), rel=1e-12)
    text = results_table.paired_seeds_tables(tests, "multilingual_t5")
    assert "| en-fr | +0.75 [" in text and "++ |" in text.split("| en-fr |")[1].splitlines()[0]
    assert "- (9) GradVac w. all_layer T=5: 0 / 0 of 4 (seeds: 2)" in text


def test_the_significance_table_counts_seeds_before_and_after_holm(outputs):
    tests = results_table.significance(str(outputs / "runs"), "multilingual_t5")
    assert {(t["seed"], t["direction"], t["metric"]) for t in tests} == {
        (s, d, m) for s in (1, 2) for d in ("en-fr", "en-cs", "en-hi") for m in ("bleu", "chrf")}
    for seed in (1, 2):  # Holm's family: a row's tests in one seed
        family = [t for t in tests if t["seed"] == seed]
        near([t["p_holm"] for t in family], results_table.holm([t["p"] for t in family]), rel=1e-12)
    text = results_table.significance_tables(tests, "multilingual_t5")
    bleu = text.split("### chrF")[0]
    row = next(l for l in bleu.splitlines() if l.startswith("| (9) GradVac w. all_layer | 5 |"))
    cells = [c.strip() for c in row.split("|")[3:-1]]
    assert cells[0].startswith("**+") and cells[0].endswith("(2+ 0-; Holm 2+ 0- /2)**")  # en-fr
    assert re.fullmatch(r"\+\d+\.\d\d \(2\+ 0-; Holm 1\+ 0- /2\)", cells[1])  # en-cs
    assert cells[2] == "+0.00 (0+ 0-; Holm 0+ 0- /2)"  # en-hi, the same outputs: p = 1
    assert re.search(r"- BLEU en-fr: \(9\) GradVac w. all_layer T=5 better in all 2 seeds \(mean \+\d+\.\d\d; "
                     r"\+\d+\.\d\d \[\+\d+\.\d\d, \+\d+\.\d\d\] p 0\.0\d\d, .*\); after Holm in 2 of 2", text)
    assert re.search(r"- BLEU en-cs: .* better in all 2 seeds .*; after Holm in 1 of 2", text)
    assert "BLEU en-hi" not in text.split("every seed")[1]
    assert "- (9) GradVac w. all_layer T=5: seed 1: 4 / 4 of 6; seed 2: 4 / 2 of 6" in text
    assert all("bs:1000|seed:12345" in t["signature"] for t in tests)


def test_the_command_writes_bleu_chrf_and_the_paired_tests(outputs):
    out = outputs / "table"
    results_table.main([str(outputs / "runs"), "--high", "fr,cs", "--med", "", "--low", "hi",
                        "--bootstrap", "200", "--out", str(out)])
    text = (out.parent / "table.md").read_text()
    for title in ("## BLEU per direction", "## chrF per direction", "## chrF: data imbalance",
                  "## BLEU: data imbalance, difference to multilingual_t5\n",
                  "## Per seed: paired bootstrap against multilingual_t5 (200 resamples, two-sided)",
                  "## Across seeds: paired t-test against multilingual_t5"):
        assert title in text
    assert "| (9) GradVac w. all_layer | 5 | 2.00 ±0.00 |" in text  # chrF cells from bleu.json
    saved = json.loads((out.parent / "table.json").read_text())
    assert len(saved["paired_bootstrap"]) == 12 and "bs:200" in saved["paired_bootstrap"][0]["signature"]
    assert len(saved["paired_seeds"]) == 2 * 4  # metrics x (En->Any avg, en-fr, en-cs, en-hi)


STUDY = os.path.join(os.path.dirname(__file__), "..", "..", "..", "docs", "data", "study")
ROWS = ["multilingual_t1", "pcgrad_all_layer_t5", "gradvac_all_layer_t5", "gradvac_all_layer_low_t5"]


def _bundle_bleu(row, seed, at=""):
    with open(os.path.join(STUDY, "libreoffice_study-demo_cpu", f"{row}_seed{seed}", at, "bleu.json")) as f:
        return {d: r["bleu"] for d, r in json.load(f)["directions"].items()}


@pytest.mark.parametrize("at", ["", "half"])
def test_the_imbalance_table_beside_the_papers_is_the_bundles_unrounded_means(at):
    """Each cell: the mean over seeds 1-3 of (row's average BLEU over the level's directions
    minus multilingual T=5's), from the committed bundles' bleu.json; the paper's rows from
    its own BLEU in paper_imbalance.json, differenced by the code."""
    levels = {"High": ["fr", "cs"], "Med": ["tr"], "Low": ["hi"]}
    with open(os.path.join(STUDY, "paper_imbalance.json")) as f:
        paper = json.load(f)
    scores = results_table.collect_seeds(os.path.join(STUDY, "libreoffice_study-demo_cpu"), at=at)
    table = results_table.imbalance_differences(scores, levels, "multilingual_t5", paper)
    lines = {l.split("|")[1].strip(): [c.strip() for c in l.split("|")[2:-1]] for l in table.splitlines()
             if l.startswith("| ") and "---" not in l}
    assert lines[""] == [f"{side} {level}" for side in ("Any->En", "En->Any")
                         for level in ("High", "Med", "Low", "All")]
    for row in ROWS:
        expected = []
        for fmt in ("{}-en", "en-{}"):
            for ls in list(levels.values()) + [["fr", "cs", "tr", "hi"]]:
                ds = [fmt.format(l) for l in ls]
                diffs = [sum(_bundle_bleu(row, s, at)[d] for d in ds) / len(ds) -
                         sum(_bundle_bleu("multilingual_t5", s, at)[d] for d in ds) / len(ds) for s in (1, 2, 3)]
                expected.append(f"{sum(diffs) / 3:+.2f}")
        label = "T=1" if row == "multilingual_t1" else results_table._label(row.rsplit("_", 1)[0]) + " T=5"
        assert lines[f"{label}, here"] == expected, row
    assert lines["T=1, paper"] == ["+0.40", "+0.09", "-4.75", "-1.76", "+0.58", "+0.10", "-0.66", "-0.07"]
    assert lines["(9) GradVac w. all_layer T=5, paper"][4] == "+2.16"


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


def test_the_bootstrap_p_is_never_zero(pair):
    """Systems far apart: no resample reaches |d| under the null, and p is 1 / (B + 1), the
    observed difference counted as one resample (Davison & Hinkley 1997), not 0."""
    a_file, _, ref_file, _ = pair
    ours = results_table.paired_bootstrap(a_file, ref_file, ref_file, n_samples=200)
    for m in ("bleu", "chrf"):
        assert ours[m]["delta"] > 10 and ours[m]["p"] == 1 / 201
