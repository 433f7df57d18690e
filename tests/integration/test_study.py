"""The data-imbalance study's driver (scripts/study_imbalance.sh) end to end on the tiny
corpus: two rows, two seeds, a budget of a few updates from the learning-curve rule, two
kills of the whole driver (during the learning curve, during a row's training), the same
command to finish, the result bundles and the tables built from them alone; the resumed
runs against the same command run without a kill."""
import csv
import glob
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.helpers import tiny_corpus
from fairseq_gradvac.evaluation import results_table
from fairseq_gradvac.evaluation.evaluate import read_lines
from tests.helpers.fairseq_runs import ROOT, load_checkpoint
from tests.helpers.tolerance import assert_near

ROWS = "multilingual_t5 gradvac_all_layer_low_t5"
STUDY = {"MODEL": "small_cpu", "ROWS": ROWS, "SEEDS": "1 2", "EVERY": "10", "CURVE_MAX": "20",
         "TOLERANCE": "0.5", "PROBE_EVERY": "10", "PROBE_SENTENCES": "10", "SIMILARITY_INTERVAL": "5",
         "BEAM": "1", "BOOTSTRAP": "100", "OMP_NUM_THREADS": "1",
         "TRAIN_ARGS": "--max-tokens 400 --warmup-updates 10 --log-interval 5"}


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    corpus = tiny_corpus.build(str(root), train_sizes={"fr": 200, "cs": 60})
    path = root / "tiny.sh"
    path.write_text(
        f"DATA_BIN={corpus['bin']}\nLANG_DICT={corpus['lang_dict']}\nRAW={corpus['raw']}\n"
        "POST_PROCESS=\nLANG_PAIRS=en-fr,en-cs,cs-en\nZERO_SHOT=fr-cs\nHIGH=fr\nMED=\nLOW=cs\n"
        "PREPARE=false\n")
    return str(path)


def _start(config, runs, results=None, **env):
    """The driver with checkpoints in ``runs`` and bundles in ``results`` (RUNS/RESULTS, or
    STUDY_CACHE and RESULTS given in ``env``)."""
    where = {"RUNS": str(runs)} if runs else {}
    if results:
        where["RESULTS"] = str(results)
    return subprocess.Popen(["bash", os.path.join(ROOT, "scripts", "study_imbalance.sh")], cwd=ROOT,
                            env={**os.environ, **STUDY, "DATA": config, **where, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _run(config, runs, results=None, **env):
    proc = _start(config, runs, results, **env)
    out, _ = proc.communicate()
    return proc.returncode, out


def _kill_when(config, runs, results, pattern):
    """Start the driver, SIGKILL its whole process group as soon as a file ``pattern`` exists."""
    proc = _start(config, runs, results)
    while not glob.glob(str(runs / pattern)):
        assert proc.poll() is None, f"the driver ended before {pattern} existed:\n{proc.stdout.read()[-3000:]}"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def study(config, tmp_path_factory):
    """(RESULTS: the bundles and tables, RUNS: the checkpoints, the driver's output)."""
    runs, results = tmp_path_factory.mktemp("runs"), tmp_path_factory.mktemp("results")
    _kill_when(config, runs, results, "multilingual_t5_seed1/checkpoint_*_10.pt")  # in the learning curve
    _kill_when(config, runs, results, "gradvac_all_layer_low_t5_seed1/checkpoint_*_10.pt")  # in a row's training
    rc, out = _run(config, runs, results)
    assert rc == 0, out[-5000:]
    return results, runs, out


def test_every_table_cell_is_there(study):
    runs, _, out = study
    assert f"[study] tables: {runs}/results.md" in out and f"what GradVac did: {runs}/conflicts/conflicts.md" in out
    text = (runs / "results.md").read_text()
    assert "**Runs finished: 4 of 4**." in text
    for metric in ("BLEU", "chrF"):
        section = text.split(f"## {metric} per direction")[1].split("Seeds per row")[0]
        header = next(l for l in section.splitlines() if l.startswith("| row |"))
        assert header == "| row | T | en-fr | en-cs | En->Any avg | cs-en | Any->En avg | zero-shot avg |"
        rows = [l for l in section.splitlines() if l.startswith("| (")]
        assert [r.split("|")[1].strip() for r in rows] == [
            "(2) Multilingual", "(9) GradVac w. all_layer, low-resource directions only"]
        for r in rows:  # 6 cells, each a mean ± std over the two seeds
            cells = [c.strip() for c in r.split("|")[3:-1]]
            assert len(cells) == 6 and all(re.fullmatch(r"\d+\.\d\d ±\d+\.\d\d", c) for c in cells), r
        assert f"## {metric}: data imbalance" in text and f"## {metric}: zero-shot directions" in text
    scores = json.loads((runs / "results.json").read_text())["scores"]
    assert sorted(scores["bleu"]) == ["gradvac_all_layer_low_t5", "multilingual_t5"]
    assert all(len(seeds) == 2 and sorted(s) == ["cs-en", "en-cs", "en-fr", "fr-cs"]
               for m in ("bleu", "chrf") for seeds in scores[m].values() for s in seeds)
    assert "sacreBLEU metric signatures (with the resampling): BLEU `nrefs:1|bs:100|seed:12345" in text


def test_the_data_table_has_fairseqs_rows_and_sampling_shares(study, config):
    runs, checkpoints, _ = study
    data = json.loads((runs / "data.json").read_text())
    assert data["rows"] == {"en-fr": 200, "en-cs": 60, "cs-en": 60}
    # the shares fairseq itself sampled with: its logged upsampling ratios, normalized
    log = (checkpoints / "multilingual_t5_seed1" / "train.log").read_text()
    ratios = re.search(r"Upsample ratios: (\[.*\])", log)[1]
    logged = dict((k.split(":")[-1], v) for k, v in eval(ratios))  # fairseq prints a list of tuples
    total = sum(logged.values())
    assert data["shares"]["5"] == pytest.approx({d: v / total for d, v in logged.items()}, rel=1e-9)
    assert data["shares"]["1"] == pytest.approx({"en-fr": 200 / 320, "en-cs": 60 / 320, "cs-en": 60 / 320})
    # target tokens: the raw training text's words (the tiny corpus has no subwords)
    raw = re.search(r"RAW=(\S+)", open(config).read())[1]
    words = {d: sum(len(l.split()) for l in open(os.path.join(raw, f"train.{p}.{d[3:]}")))
             for d, p in (("en-fr", "en-fr"), ("en-cs", "en-cs"), ("cs-en", "en-cs"))}
    assert data["target_tokens"] == words
    for t in ("1", "5"):  # sentence shares weighted by mean target length
        weighted = {d: data["shares"][t][d] * words[d] / data["rows"][d] for d in words}
        assert data["token_shares"][t] == pytest.approx({d: w / sum(weighted.values()) for d, w in weighted.items()})
    assert f"| en-cs | 60 | {words['en-cs']} | 18.8% |" in (runs / "results.md").read_text()


def test_the_budget_comes_from_the_learning_curve_and_every_run_stops_there(study):
    runs, checkpoints, out = study
    budget = json.loads((runs / "budget.json").read_text())
    # candidates every 2 x 10 updates: 20, the cap, whether the rule holds there (the tiny
    # model's loss may rise; the rule itself is tests/unit/evaluation/test_budget.py's) or not
    assert budget["budget"] == 20 and (budget["holds"] or budget["capped"])
    assert [u for u, _ in budget["checked"]] == [20]
    # the mean of seeds 1 and 2 (with the validations at the tiny corpus's epoch ends)
    assert [u for u, _ in budget["curve"] if u % 10 == 0] == [10, 20]
    curve = list(csv.DictReader(open(runs / "curve.csv")))
    assert list(curve[0]) == ["update", "mean_loss", "loss_multilingual_t5_seed1", "loss_multilingual_t5_seed2"]
    for r in curve:
        assert float(r["mean_loss"]) == pytest.approx(
            (float(r["loss_multilingual_t5_seed1"]) + float(r["loss_multilingual_t5_seed2"])) / 2, abs=2e-6)
    for row in ROWS.split():
        for seed in (1, 2):
            run = checkpoints / f"{row}_seed{seed}"
            assert (run / "train.done").read_text().strip() == "20"
            assert load_checkpoint(run / "checkpoint_last.pt")["optimizer_history"][-1]["num_updates"] == 20
            updates = {int(r["update"]) for r in csv.DictReader(open(run / "similarity.csv"))}
            assert updates == {5, 10, 15, 20}  # each recorded update once, across the kills
            groups = {r["group"] for r in csv.DictReader(open(run / "similarity.csv"))}
            assert "encoder.layers.0" in groups  # every study run records per-layer cosines
            bundle = runs / f"{row}_seed{seed}"
            for at in (bundle, bundle / "half"):
                assert sorted(os.listdir(at / "bleu.hyp")) == [
                    "cs-en.txt.gz", "en-cs.txt.gz", "en-fr.txt.gz", "fr-cs.txt.gz"]
            probe = {int(r["update"]) for r in csv.DictReader(open(bundle / "probe" / "similarity.csv"))}
            assert probe == {10, 20}  # the checkpoints at multiples of PROBE_EVERY


def test_a_finished_run_leaves_a_small_bundle_with_what_the_write_up_reads(study):
    runs, checkpoints, _ = study
    bundle = runs / "gradvac_all_layer_low_t5_seed2"
    info = json.loads((bundle / "run.json").read_text())
    assert (info["row"], info["seed"], info["budget"], info["half"]) == ("gradvac_all_layer_low_t5", 2, 20, 10)
    assert re.fullmatch(r"[0-9a-f]{40}", info["commit"]) and info["training_seconds"] > 0
    argv = shlex.split(info["command"])  # a shell command line, quoted
    assert argv[0] == "fairseq-train" and argv[argv.index("--seed") + 1] == "2"
    assert argv[argv.index("--gradvac-directions") + 1] == "en-cs,cs-en" and argv[argv.index("--max-update") + 1] == "20"
    full, half = (json.loads((at / "bleu.json").read_text()) for at in (bundle, bundle / "half"))
    assert full["checkpoint"] == "checkpoint_last.pt" and re.fullmatch(r"checkpoint_\d+_10\.pt", half["checkpoint"])
    for scores, at in ((full, bundle), (half, bundle / "half")):
        for d, r in scores["directions"].items():
            assert "tok:13a" in r["signature"] and "nc:6" in r["chrf_signature"]  # sacrebleu BLEU, chrF
            assert len(read_lines(str(at / r["hypotheses"]))) == r["sentences"]
            reference = os.path.normpath(at / r["reference"])  # the study's one copy
            assert os.path.dirname(reference) == str(runs / "references") and reference.endswith(f".{d[3:]}.gz")
    # the bundle's hypotheses are those of the run's checkpoints
    assert read_lines(str(bundle / "half" / "bleu.hyp" / "en-fr.txt.gz")) == read_lines(
        str(checkpoints / "gradvac_all_layer_low_t5_seed2" / "half" / "bleu.hyp" / "en-fr.txt"))
    valid = list(csv.DictReader(open(bundle / "valid.csv")))
    assert {10, 20} <= {int(r["update"]) for r in valid}
    assert (bundle / "train.log").exists() and (bundle / "similarity.csv").exists()
    size = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file())
    assert size < 2e6


def test_the_tables_come_from_the_bundles_alone(study, config, tmp_path):
    runs, _, _ = study
    results = tmp_path / "results"
    shutil.copytree(runs, results)
    for name in ("results.md", "results.json", "results_half.md", "results_half.json", "conflicts"):
        shutil.rmtree(results / name) if (results / name).is_dir() else (results / name).unlink()
    # no checkpoint anywhere: an empty RUNS folder, the same bundles
    rc, out = _run(config, tmp_path / "empty", results)
    assert rc == 0, out[-3000:]
    assert not re.search(r"\[study\] (train|score|probe) ", out), out
    assert not list((tmp_path / "empty").glob("*_seed*"))
    for name in ("results.md", "results.json", "results_half.md", "conflicts/conflicts.md"):
        assert (results / name).read_text() == (runs / name).read_text(), name
    assert "Scores of the checkpoints at half the budget" in (runs / "results_half.md").read_text()
    # a bundle of another budget is refused, naming both
    info = json.loads((results / "multilingual_t5_seed2" / "run.json").read_text())
    (results / "multilingual_t5_seed2" / "run.json").write_text(json.dumps({**info, "budget": 30}))
    rc, out = _run(config, tmp_path / "empty", results)
    assert rc == 1 and "multilingual_t5_seed2 was trained to 30 updates, but the budget is 20" in out
    with pytest.raises(SystemExit, match="trained to 30 updates, but the study's budget .* is 20 updates"):
        results_table.main([str(results), "--bootstrap", "0"])
    rc, out = _run(config, tmp_path / "empty", results, BUDGET="40")
    assert rc == 2 and "BUDGET=40, but" in out and "says 20 updates" in out


def test_the_paired_tests_are_on_the_runs_outputs(study, tmp_path):
    """The driver's per-seed tests are the paired bootstrap of the kept (compressed) outputs,
    as on plain copies of them, with sacrebleu's corpus scores; the seed test pairs seeds."""
    from sacrebleu.metrics import CHRF

    runs, _, _ = study
    saved = json.loads((runs / "results.json").read_text())
    tests = saved["paired_bootstrap"]
    assert len(tests) == 2 * 4 * 2  # seeds x directions x metrics
    test = next(t for t in tests if (t["seed"], t["direction"], t["metric"]) == (2, "en-cs", "chrf"))
    ref = json.loads((runs / "multilingual_t5_seed2" / "bleu.json").read_text())["directions"]["en-cs"]["reference"]
    plain = []
    for i, path in enumerate([runs / "multilingual_t5_seed2" / ref, runs / "multilingual_t5_seed2" / "bleu.hyp" / "en-cs.txt.gz",
                              runs / "gradvac_all_layer_low_t5_seed2" / "bleu.hyp" / "en-cs.txt.gz"]):
        plain.append(tmp_path / f"{i}.txt")
        plain[-1].write_text("".join(line + "\n" for line in read_lines(str(path))))
    again = results_table.paired_bootstrap(str(plain[1]), str(plain[2]), str(plain[0]), n_samples=100)["chrf"]
    assert (test["p"], test["ci"], test["p_holm"] >= test["p"]) == (again["p"], again["ci"], True)
    refs = read_lines(str(plain[0]))
    assert_near(torch.tensor([test["baseline"], test["system"]], dtype=torch.float64),
                torch.tensor([CHRF().corpus_score(read_lines(str(f)), [refs]).score for f in plain[1:]],
                             dtype=torch.float64), rel=1e-12)
    assert {len(t["seeds"]) for t in saved["paired_seeds"]} == {2}


def test_what_gradvac_did_has_cosines_conflicts_corrections_and_the_probe(study):
    runs, _, _ = study
    text = (runs / "conflicts" / "conflicts.md").read_text()
    quarters = [l for l in text.split("## Training batches vs")[0].splitlines() if l.startswith("| ") and "_t5" in l]
    assert len(quarters) == 8  # 2 rows x 4 quarters of training
    assert all(l.endswith("| - |") for l in quarters if l.startswith("| multilingual_t5"))  # sum corrects nothing
    gradvac = [l for l in quarters if l.startswith("| gradvac_all_layer_low_t5")]
    assert any(re.search(r"\| \d+\.\d% \|$", l) for l in gradvac)  # the train log's corrected share
    checkpoints = [l for l in text.split("## Training batches vs")[1].split("## By direction")[0].splitlines()
                   if l.startswith("| ") and "_t5" in l]
    assert [l.split("|")[2].strip() for l in checkpoints] == ["10", "20", "10", "20"]
    assert all(re.search(r"-?\d\.\d{3} / \d+\.\d%", c) for l in checkpoints for c in l.split("|")[3:5])
    assert "cs-en/en-cs" in text and "encoder.layers.0" in text
    assert (runs / "conflicts" / "conflicts_over_training.png").stat().st_size > 0


def test_a_killed_study_ends_as_one_never_killed_and_a_finished_one_does_nothing(study, config, tmp_path):
    runs, checkpoints, _ = study
    rc, out = _run(config, checkpoints, runs)  # everything done: nothing trained, scored or probed again
    assert rc == 0, out[-3000:]
    assert not re.search(r"\[study\] (train|score|probe) ", out), out
    # the same runs, never killed; checkpoints in the default folder under STUDY_CACHE
    rc, out = _run(config, None, tmp_path / "results", BUDGET="20", SEEDS="1", STUDY_CACHE=str(tmp_path / "cache"))
    assert rc == 0, out[-3000:]
    assert "budget: 20 updates (set by BUDGET)" in out
    for row in ROWS.split():
        killed, straight = checkpoints / f"{row}_seed1", tmp_path / "cache" / "tiny-small_cpu" / f"{row}_seed1"
        a = load_checkpoint(killed / "checkpoint_last.pt")["model"]
        b = load_checkpoint(straight / "checkpoint_last.pt")["model"]
        scale = max(v.abs().max().item() for v in b.values())
        assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-6 * scale) for k in b), row
        for d in ("en-fr", "en-cs", "cs-en", "fr-cs"):
            for at in ("", "half"):
                assert (killed / at / "bleu.hyp" / f"{d}.txt").read_text() == \
                    (straight / at / "bleu.hyp" / f"{d}.txt").read_text()
        rows = [list(csv.reader(open(r / "similarity.csv"))) for r in (killed, straight)]
        assert [r[:4] for r in rows[0]] == [r[:4] for r in rows[1]]
        cosines = [[float(r[4]) for r in rs[1:]] for rs in rows]
        assert max(abs(x - y) for x, y in zip(*cosines)) <= 1e-5


def test_a_loss_weighting_row_runs_through_the_study(config, tmp_path):
    """A loss weighting (FAMO: no per-direction gradients, so no training cosines) trains,
    is scored, probed and bundled as any row; its bundle keeps the weights per direction."""
    rc, out = _run(config, tmp_path / "runs", tmp_path / "results", ROWS="multilingual_t5 famo_t5", SEEDS="1",
                   BUDGET="20")
    assert rc == 0, out[-5000:]
    bundle = tmp_path / "results" / "famo_t5_seed1"
    info = json.loads((bundle / "run.json").read_text())
    assert info["row"] == "famo_t5" and "--gradient-combiner famo" in info["command"]
    with open(bundle / "loss_weights.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["direction"] for r in rows} == {"en-fr", "en-cs", "cs-en"} and rows
    assert json.loads((bundle / "bleu.json").read_text())["directions"].keys() >= {"en-fr", "fr-cs"}
    assert not (bundle / "similarity.csv").exists() and (bundle / "probe" / "similarity.csv").exists()
    assert "FAMO T=5" in (tmp_path / "results" / "results.md").read_text()  # (its label in the tables)


def test_bad_rows_are_refused_before_anything_runs(config, tmp_path):
    rc, out = _run(config, tmp_path, tmp_path / "results", ROWS="multilingual_t5 gradvak_t5")
    assert rc == 2 and "no such method: configs/methods/gradvak.args (row gradvak_t5)" in out
    rc, out = _run(config, tmp_path, tmp_path / "results", ROWS="gradvac_all_layer_t5")
    assert rc == 2 and "ROWS must include the baseline multilingual_t5" in out
    rc, out = _run(config, tmp_path, tmp_path / "results", ROWS="multilingual_t5 pcgrad")
    assert rc == 2 and "a row is METHOD_SAMPLING (SAMPLING: tN or a schedule, e.g. cooldown), not 'pcgrad'" in out
    rc, out = _run(config, tmp_path, tmp_path / "results", ROWS="multilingual_t5 multilingual_dpl")
    assert rc == 2 and "no such sampling: configs/sampling/dpl.args (row multilingual_dpl)" in out
    assert not os.listdir(tmp_path)
