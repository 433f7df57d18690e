"""Part I's raw gradient cosines: recorded during training (--similarity-interval) and by
probing checkpoints, against per-direction gradients computed independently."""
import csv
import math
import os
import re
import subprocess
import sys

import pytest
import torch
from fairseq import options, tasks

import fairseq_gradvac  # noqa: F401  (registers the task)
from tests.helpers import tiny_corpus
from fairseq_gradvac.tasks.csv_log import CsvLog
from fairseq_gradvac.gradients.similarity import COLUMNS, SimilarityGroups, SimilarityRecord
from fairseq_gradvac.combiners import ParameterGroups
from fairseq_gradvac.combiners.groups import group_key
from tests.helpers.fairseq_runs import ROOT, TINY_MODEL, _env, run_cli, task_args, train, train_args, train_killed_at
from tests.helpers.tolerance import assert_near


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tiny_corpus.build(str(tmp_path_factory.mktemp("tiny")))


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_rows(path):
    rows = read_csv(path)
    assert rows and list(rows[0]) == list(COLUMNS)
    return rows


def _independent_cosines(model, batches, granularity):
    """{(a, b, group): cos} from one plain backward pass per direction (.grad, no buffer)."""
    grads = {}
    for direction, (criterion, batch) in batches.items():
        model.zero_grad(set_to_none=True)
        criterion(model, batch)[0].backward()
        grads[direction] = {n: p.grad.detach().clone() for n, p in model.named_parameters()
                            if p.grad is not None}

    def members(name):  # written out here, not taken from analysis.similarity
        out = {"model", group_key(name, granularity)}
        if re.match(r"encoder\.(layers\.|layer_norm)", name):
            out.add("encoder_layers")
        if re.match(r"decoder\.(layers\.|layer_norm)", name):
            out.add("decoder_layers")
        return out

    names = list(next(iter(grads.values())))
    groups = sorted({g for n in names for g in members(n)})
    out = {}
    directions = list(grads)
    for i, a in enumerate(directions):
        for b in directions[i + 1:]:
            for g in groups:
                va = torch.cat([grads[a][n].flatten().double() for n in names if g in members(n)])
                vb = torch.cat([grads[b][n].flatten().double() for n in names if g in members(n)])
                out[(a, b, g)] = (torch.dot(va, vb) / va.norm() / vb.norm()).item()
    return out


@pytest.mark.parametrize("combiner,granularity,recorded", [
    ("sum", "all_layer", None),
    ("gradvac", "all_layer", None),
    ("gradvac", "whole_model", "all_layer"),  # per layer while combining the whole model
])
def test_recorded_cosine_is_the_raw_cosine_of_each_direction_gradient(corpus, tmp_path, combiner, granularity, recorded):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, task_args(corpus) + TINY_MODEL + [
        "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--dropout", "0",
        "--optimizer", "adam", "--lr", "1e-3", "--seed", "1", "--save-dir", str(tmp_path),
        "--gradient-combiner", combiner, "--combine-granularity", granularity,
        "--similarity-interval", "1",
    ] + (["--similarity-granularity", recorded] if recorded else []))
    task = tasks.setup_task(args)
    torch.manual_seed(1)
    model = task.build_model(args)
    task.load_dataset("train")
    criterion = task.build_criterion(args)
    dataset = task.datasets["train"]
    samples = [dataset[i] for i in range(0, len(dataset), max(1, len(dataset) // 48))][:48]
    by_direction = dataset.collater(samples)

    class Backward:
        def backward(self, loss):
            loss.backward()

    task.train_step(by_direction, model, criterion, Backward(), 0)
    model.all_reduce_grads()
    rows = read_rows(tmp_path / "similarity.csv")
    expected = _independent_cosines(model, {d: (criterion, b) for d, b in by_direction.items()},
                                    recorded or granularity)
    got = {(r["a"], r["b"], r["group"]): float(r["cosine"]) for r in rows}
    assert len(got) == len(rows)  # each unordered pair once per group
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-5), key
    assert {r["update"] for r in rows} == {"1"}
    ntokens = {d: b["ntokens"] for d, b in by_direction.items()}
    for r in rows:
        assert (int(r["ntokens_a"]), int(r["ntokens_b"])) == (ntokens[r["a"]], ntokens[r["b"]])
    # Conflicting pairs exist, so the cosines are not all alike.
    assert min(expected.values()) < 0 < max(expected.values())


def test_similarity_groups_add_up_over_column_slices():
    """A worker's slice of the columns gives partial Gram matrices that add up to the whole
    (the distributed exchange), for groups cut anywhere by the slices."""
    params = [(name, torch.nn.Parameter(torch.empty(n))) for name, n in (
        ("encoder.layers.0.w", 7), ("encoder.layers.0.b", 3), ("decoder.layers.0.w", 6),
        ("decoder.embed_tokens.weight", 5))]
    groups = ParameterGroups.from_named_parameters(params, "whole_model")
    sim = SimilarityGroups(groups, "all_layer")
    assert sim.names == ["encoder.layers.0", "decoder.layers.0", "embeddings", "model",
                         "encoder_layers", "decoder_layers"]
    rows = torch.randn(3, groups.numel, dtype=torch.float64)
    whole = sim.gram(rows)
    parts = sim.gram(rows[:, :4], start=0) + sim.gram(rows[:, 4:13], start=4) + sim.gram(rows[:, 13:], start=13)
    assert_near(parts, whole)
    assert_near(whole[3], rows @ rows.T)  # model
    assert_near(whole[4], rows[:, :10] @ rows[:, :10].T)  # encoder_layers
    assert_near(whole[5], rows[:, 10:16] @ rows[:, 10:16].T)  # decoder without embeddings
    record = SimilarityRecord(5, ["a", "b", "c"], sim.names, whole, [1, 2, 3])
    cos = {(r[1], r[2], r[3]): r[4] for r in record.rows()}
    assert len(cos) == 3 * len(sim.names)
    flip = torch.tensor([2, 1, 0])  # the directions in the other order: the same cosines
    flipped = SimilarityRecord(5, ["c", "b", "a"], sim.names, whole[:, flip][:, :, flip], [3, 2, 1])
    assert {(r[2], r[1], r[3]): r[4] for r in flipped.rows()} == pytest.approx(cos, abs=1e-12)
    assert cos[("a", "c", "model")] == pytest.approx(
        (torch.dot(rows[0], rows[2]) / rows[0].norm() / rows[2].norm()).item(), abs=1e-12)


def test_csv_log_keeps_each_update_once(tmp_path):
    path = str(tmp_path / "x.csv")
    log = CsvLog(path, ("update", "v"))
    log.open(0)
    for u in (1, 2, 3):
        log.write(u, [(u, 10 * u), (u, 10 * u + 1)])
    log.write(3, [(3, 99)])  # update 3 again (an fp16 overflow repeats it): replaces
    log.close()
    with open(path, "a") as f:
        f.write("4,4")  # cut short by a kill
    log = CsvLog(path, ("update", "v"))
    log.open(2)  # resumed from the checkpoint of update 2
    log.write(3, [(3, 7)])
    log.close()
    assert open(path).read() == "update,v\n1,10\n1,11\n2,20\n2,21\n3,7\n"
    log.replace({5: [(5, 1)], 2: [(2, 0)]})  # a probe: other updates kept, the same ones replaced
    assert open(path).read() == "update,v\n1,10\n1,11\n2,0\n3,7\n5,1\n"
    other = CsvLog(path, ("update", "w"))
    other.open(0)
    with pytest.raises(ValueError, match="columns"):
        other.write(1, [(1, 2)])


LINE_KEYS = re.compile(r"(\w[\w.:-]*)=")


def _console_keys(log):
    lines = [l.split("| train_inner |", 1)[1] for l in log.splitlines() if "| train_inner |" in l]
    assert lines
    return [set(LINE_KEYS.findall(l)) - {"epoch"} for l in lines]


def test_console_line_does_not_grow_with_the_number_of_directions(corpus, tmp_path):
    keys = []
    for directions in (["en-fr", "fr-en"], corpus["directions"]):
        save = tmp_path / str(len(directions))
        proc = train(corpus, str(save), "--gradient-combiner", "gradvac", "--similarity-interval", "1",
                     "--max-update", "10", "--log-interval", "5", directions=directions)
        lines = _console_keys(proc.stdout + proc.stderr)
        keys.append(lines[-1])
        logged = {row["direction"] for row in read_csv(save / "direction_losses.csv")}
        assert logged == set(directions)  # the per-direction numbers went to the CSV
    assert keys[0] == keys[1]
    assert {"cos_mean", "conflicts", "corrected"} <= keys[0]


def test_similarity_csv_has_every_interval_once_after_a_kill_and_resume(corpus, tmp_path):
    extra = ("--gradient-combiner", "gradvac", "--similarity-interval", "2", "--max-update", "14",
             "--save-interval-updates", "6", "--dropout", "0")
    train(corpus, str(tmp_path / "straight"), *extra)
    train_killed_at("update:10", corpus, str(tmp_path / "killed"), *extra)  # checkpoint at 6
    killed = read_rows(tmp_path / "killed" / "similarity.csv")
    assert max(int(r["update"]) for r in killed) == 10  # rows past the checkpoint exist
    train(corpus, str(tmp_path / "killed"), *extra)
    for name in ("similarity.csv", "direction_losses.csv"):
        straight, resumed = read_csv(tmp_path / "straight" / name), read_csv(tmp_path / "killed" / name)
        assert [r["update"] for r in resumed] == [r["update"] for r in straight]
        for a, b in zip(straight, resumed):
            assert {k: v for k, v in a.items() if k not in ("cosine", "norm_a", "norm_b", "loss")} == \
                   {k: v for k, v in b.items() if k not in ("cosine", "norm_a", "norm_b", "loss")}
            for k in ("cosine", "loss"):
                if k in a:
                    assert float(b[k]) == pytest.approx(float(a[k]), abs=1e-6)
    updates = sorted({int(r["update"]) for r in read_rows(tmp_path / "killed" / "similarity.csv")})
    assert updates == [2, 4, 6, 8, 10, 12, 14]
    # the figures of this (tiny, real) run
    proc = subprocess.run([sys.executable, "-m", "fairseq_gradvac.analysis.figures", str(tmp_path / "killed")],
                          capture_output=True, text=True, env=_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = set(os.listdir(tmp_path / "killed" / "figures"))
    for name in ("fig3_by_layer", "fig3_layers_over_updates", "losses"):
        assert {name + ".png", name + ".csv"} <= written, name
    assert "conflicts_over_updates.png" in written
    # two languages besides English: no proximity figure, and the line that says why
    assert not [f for f in written if f.startswith(("fig1", "fig2a"))]
    assert "proximity needs 3 or more" in proc.stdout


def test_probe_of_a_checkpoint_reproduces_the_training_record(corpus, tmp_path):
    """Concat sampling and batches that hold the whole training split: update U + 1's batch is
    the probe set, and its parameters are those of the checkpoint after U updates."""
    save = tmp_path / "run"
    args = train_args(corpus, str(save), "--gradient-combiner", "gradvac", "--similarity-interval", "1",
                      "--max-update", "4", "--dropout", "0", "--max-tokens", "100000",
                      "--batch-size", "2000", "--sampling-method", "concat")
    run_cli("train", [a for a in args if a != "--no-epoch-checkpoints"])  # checkpointE.pt: E updates
    recorded = read_rows(save / "similarity.csv")
    assert {int(r["update"]) for r in recorded} == {1, 2, 3, 4}
    assert len({int(r["ntokens_a"]) for r in recorded if r["a"] == "en-fr"}) == 1  # whole split each update
    out = tmp_path / "probe"
    proc = subprocess.run(
        [sys.executable, "-m", "fairseq_gradvac.analysis.probe", str(save / "checkpoint3.pt"),
         str(save / "checkpoint2.pt"), "--split", "train", "--out", str(out), "--cpu"],
        capture_output=True, text=True, env=_env(), cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    probed = read_rows(out / "similarity.csv")
    assert sorted({int(r["update"]) for r in probed}) == [2, 3]
    key = lambda r: (r["a"], r["b"], r["group"])  # noqa: E731
    for update in (2, 3):
        train_rows = {key(r): r for r in recorded if int(r["update"]) == update + 1}
        probe_rows = {key(r): r for r in probed if int(r["update"]) == update}
        assert set(train_rows) == set(probe_rows)
        for k, r in probe_rows.items():
            assert float(r["cosine"]) == pytest.approx(float(train_rows[k]["cosine"]), abs=1e-5), k
            assert float(r["norm_a"]) == pytest.approx(float(train_rows[k]["norm_a"]), rel=1e-5)
            assert r["ntokens_a"] == train_rows[k]["ntokens_a"]
    # --max-sentences N: the first N rows of every direction
    proc = subprocess.run(
        [sys.executable, "-m", "fairseq_gradvac.analysis.probe", str(save / "checkpoint2.pt"),
         "--split", "valid", "--max-sentences", "5", "--out", str(tmp_path / "five"), "--cpu"],
        capture_output=True, text=True, env=_env(), cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    def target_tokens(lang):  # the first 5 valid sentences in ``lang``, + </s> each
        with open(os.path.join(corpus["raw"], f"valid.en-fr.{lang}")) as f:
            return sum(len(line.split()) + 1 for line in f.read().splitlines()[:5])

    five = read_rows(tmp_path / "five" / "similarity.csv")
    assert {int(r["ntokens_a"]) for r in five if r["a"] == "en-fr"} == {target_tokens("fr")}
    assert {int(r["ntokens_b"]) for r in five if r["b"] == "fr-en"} == {target_tokens("en")}


def test_the_noise_floor_reads_the_pairs_cosine_from_batches_of_the_whole_split(corpus, tmp_path):
    """Batches larger than a direction's training split hold all of it: every draw's cosine is
    the reference, which is the probe's cosine of the whole split (an independent
    computation), group by group; batches of a sentence or two spread."""
    save = tmp_path / "run"
    run_cli("train", train_args(corpus, str(save), "--gradient-combiner", "sum", "--max-update", "3", "--dropout", "0"))
    checkpoint = str(save / "checkpoint_last.pt")
    out = tmp_path / "noise"
    proc = subprocess.run([sys.executable, "-m", "fairseq_gradvac.analysis.noise_floor", checkpoint, "--sizes",
                           "5,1000000", "--draws", "2", "--out", str(out), "--cpu"],
                          capture_output=True, text=True, env=_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_csv(out / "noise_floor.csv")
    assert {r["size"] for r in rows} == {"5", "1000000"} and {r["draw"] for r in rows} == {"0", "1"}
    whole = [r for r in rows if r["size"] == "1000000"]
    assert all(float(r["cosine"]) == pytest.approx(float(r["reference"]), abs=1e-5) for r in whole)
    proc = subprocess.run([sys.executable, "-m", "fairseq_gradvac.analysis.probe", checkpoint, "--split", "train",
                           "--out", str(tmp_path / "probe"), "--cpu"], capture_output=True, text=True, env=_env(),
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    probed = {(r["a"], r["b"], r["group"]): float(r["cosine"]) for r in read_rows(tmp_path / "probe" / "similarity.csv")}
    for r in whole:
        a, b = r["pair"].split(":")
        assert float(r["reference"]) == pytest.approx(probed[(a, b, r["group"])], abs=1e-5), r
    small = [r for r in rows if r["size"] == "5"]
    spread = {(r["pair"], r["group"]): [] for r in small}
    for r in small:
        spread[(r["pair"], r["group"])].append(float(r["cosine"]))
    assert max(abs(x - y) for x, y in spread.values()) > 1e-3  # two draws of a sentence or two differ
    summary = read_csv(out / "summary.csv")
    assert float(next(r for r in summary if r["size"] == "1000000")["spread"]) < 1e-5
    assert (out / "noise_floor.png").stat().st_size > 0
