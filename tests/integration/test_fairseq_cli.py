"""The plugin through the real command lines: fairseq-train, resume, fairseq-generate."""
import json
import csv
import os
import re
import shutil
import subprocess

import pytest
import torch

from tests.helpers import tiny_corpus
from tests.helpers.fairseq_runs import ROOT, load_checkpoint, run_cli, task_args, train, train_args, train_killed_at
from tests.helpers.tolerance import assert_near

METHOD_RUNS = [
    ("sum", "all_layer"), ("pcgrad", "all_layer"), ("gradvac", "all_layer"),
    ("mgda", "whole_model"), ("gradnorm", "all_layer"), ("nash_mtl", "whole_model"),
    ("gradvac", "whole_model"), ("gradvac", "enc_dec"), ("gradvac", "all_matrix"), ("cr_mogm", "whole_model"),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tiny_corpus.build(str(tmp_path_factory.mktemp("tiny")), train_sizes={"cs": 60})


@pytest.fixture(scope="module")
def gradvac_run(corpus, tmp_path_factory):
    save = str(tmp_path_factory.mktemp("gradvac"))
    proc = train(corpus, save, "--max-update", "12", "--gradient-combiner", "gradvac")
    return save, proc


@pytest.mark.parametrize("method,granularity", METHOD_RUNS)
def test_every_method_and_granularity_trains(corpus, tmp_path, method, granularity):
    proc = train(corpus, str(tmp_path), "--max-update", "8", "--gradient-combiner", method,
                 "--combine-granularity", granularity)
    log = proc.stdout + proc.stderr
    assert f"{method} on" in log and f"({granularity})" in log
    with open(tmp_path / "direction_losses.csv") as f:  # per-direction losses: one row per update
        rows = list(csv.DictReader(f))
    assert {r["direction"] for r in rows} == set(corpus["directions"])
    assert {int(r["update"]) for r in rows} == set(range(1, 9))
    state = load_checkpoint(tmp_path / "checkpoint_last.pt")
    combiner = state["task_state"]["combiner"]
    assert combiner["combiner"] == method
    if method in ("gradvac", "pcgrad", "gradnorm"):  # state keyed by direction name
        assert sorted(combiner["task_names"]) == sorted(corpus["directions"])
    params = torch.cat([p.reshape(-1).float() for p in state["model"].values()])
    assert torch.isfinite(params).all()
    if method in ("gradvac", "pcgrad"):
        assert "corrected=" in log and "cos_fr-en" not in log
    if method == "gradvac":
        assert combiner["phi_hat"].abs().sum() > 0  # the EMA targets moved
    if method in ("mgda", "nash_mtl", "cr_mogm"):  # methods that solve: every update's solves reported
        assert re.search(r"solve_fails=0\b", log)
        with open(tmp_path / "solves.csv") as f:
            solves = list(csv.DictReader(f))
        assert [int(r["update"]) for r in solves] == list(range(1, 9))
        assert all(r["failed"] == "0" and int(r["groups"]) == 1 and float(r["max_residual"]) <= 1e-4 for r in solves)
    else:
        assert "solve_fails" not in log and not os.path.exists(tmp_path / "solves.csv")


def test_sum_update_equals_the_stock_task(corpus, tmp_path):
    """Same seed, data and batches, no dropout: the same model after 40 updates, 3 epochs.

    Each epoch's sample order is seeded with the dataset's class name: epochs after the
    first differ if the task's dataset class is named differently from fairseq's.
    Plain SGD: Adam would blow up float noise in gradients that are exactly zero in exact
    arithmetic (attention key biases) into lr-sized steps.
    """
    common = ("--max-update", "40", "--dropout", "0", "--optimizer", "sgd", "--lr", "0.5")
    train(corpus, str(tmp_path / "stock"), *common, task="translation_multi_simple_epoch")
    proc = train(corpus, str(tmp_path / "sum"), *common, "--gradient-combiner", "sum")
    assert "end of epoch 3 " in proc.stdout + proc.stderr
    stock = load_checkpoint(tmp_path / "stock" / "checkpoint_last.pt")["model"]
    ours = load_checkpoint(tmp_path / "sum" / "checkpoint_last.pt")["model"]
    assert stock.keys() == ours.keys()
    scale = max(v.abs().max().item() for v in stock.values())  # the model's, not each tensor's
    for key in stock:
        assert_near(ours[key], stock[key], 2e-5, key, scale=scale)


def test_resume_continues_with_the_saved_combiner_state(corpus, gradvac_run, tmp_path):
    save, _ = gradvac_run
    saved = load_checkpoint(os.path.join(save, "checkpoint_last.pt"))["task_state"]["combiner"]
    resumed = str(tmp_path / "resumed")
    shutil.copytree(save, resumed)
    proc = train(corpus, resumed, "--max-update", "16", "--gradient-combiner", "gradvac")
    log = proc.stdout + proc.stderr
    assert "restored gradvac state for 4 directions" in log
    after = load_checkpoint(os.path.join(resumed, "checkpoint_last.pt"))["task_state"]["combiner"]
    # Continued from the saved targets: 4 more EMA steps of size beta can't go back to 0.
    fresh_dir = str(tmp_path / "fresh")
    train(corpus, fresh_dir, "--max-update", "4", "--gradient-combiner", "gradvac")
    fresh = load_checkpoint(os.path.join(fresh_dir, "checkpoint_last.pt"))["task_state"]["combiner"]
    assert after["task_names"] == saved["task_names"]
    distance_saved = (after["phi_hat"] - saved["phi_hat"]).abs().max()
    distance_fresh = (after["phi_hat"] - fresh["phi_hat"]).abs().max()
    assert distance_saved < distance_fresh


def test_extra_data_trains_every_direction(corpus, tmp_path):
    """--extra-data with a second en-fr data set and a direction only in --extra-lang-pairs."""
    mined = tiny_corpus.build_extra(corpus, str(tmp_path / "mined"), ["en-fr", "fr-cs"])
    proc = train(corpus, str(tmp_path / "run"), "--max-update", "4", "--extra-data", repr({"mined": mined}),
                 "--extra-lang-pairs", repr({"mined": "en-fr,fr-cs"}),
                 "--langtoks", repr({"mined": ("tgt", None)}))
    log = proc.stdout + proc.stderr
    directions = corpus["directions"] + ["fr-cs"]
    assert "5 directions" in log
    with open(tmp_path / "run" / "direction_losses.csv") as f:
        assert {r["direction"] for r in csv.DictReader(f)} == set(directions)
    state = load_checkpoint(tmp_path / "run" / "checkpoint_last.pt")["task_state"]["combiner"]
    assert sorted(state["task_names"]) == sorted(directions)


# 13 updates per epoch on this corpus; saved at updates 4, 8, 12, 13 (end of epoch 1), 16, 20, ...
RESUMED_RUN = ("--max-update", "30", "--save-interval-updates", "4", "--gradient-combiner", "gradvac")


@pytest.fixture(scope="module")
def uninterrupted_run(corpus, tmp_path_factory):
    save = str(tmp_path_factory.mktemp("uninterrupted"))
    proc = train(corpus, save, *RESUMED_RUN)
    assert "end of epoch 2 " in proc.stdout + proc.stderr
    return load_checkpoint(os.path.join(save, "checkpoint_last.pt"))


def _assert_equal_states(a, b, where="task_state"):
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_equal_states(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal_states(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


@pytest.mark.parametrize("moment", [
    "update:18",  # between two checkpoints
    "write:checkpoint_2_20.pt",  # while fairseq writes a checkpoint
    "copy:checkpoint_2_20.pt:checkpoint_last.pt",  # while fairseq copies it
])
def test_a_run_killed_in_epoch_2_continues_exactly(corpus, uninterrupted_run, tmp_path, moment):
    """Killed inside epoch 2, the same command gives the uninterrupted run's model and state.

    It resumes from update 16, mid-epoch: fairseq restores the position in the epoch, the
    epoch's sample order must be the same as before, and the GradVac targets come back.
    """
    train_killed_at(moment, corpus, str(tmp_path), *RESUMED_RUN)
    proc = train(corpus, str(tmp_path), *RESUMED_RUN)
    assert "(epoch 2 @ 16 updates)" in proc.stdout + proc.stderr
    resumed = load_checkpoint(tmp_path / "checkpoint_last.pt")
    assert resumed["model"].keys() == uninterrupted_run["model"].keys()
    for key, value in uninterrupted_run["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    _assert_equal_states(resumed["task_state"], uninterrupted_run["task_state"])


def test_single_direction_batches_resume_exactly_inside_an_epoch(corpus, tmp_path):
    """--direction-batching single, two micro-batches per update: killed after update 18
    (inside an epoch), the same command continues from update 16 to the uninterrupted run."""
    run = RESUMED_RUN + ("--direction-batching", "single", "--update-freq", "2")
    whole = str(tmp_path / "whole")
    train(corpus, whole, *run)
    train_killed_at("update:18", corpus, str(tmp_path / "killed"), *run)
    proc = train(corpus, str(tmp_path / "killed"), *run)
    log = proc.stdout + proc.stderr
    assert "single batches, rows for 2 per worker" in log
    # 9 updates per epoch: update 16 is inside epoch 2, which the resumed run finishes
    assert "(epoch 2 @ 16 updates)" in log and "end of epoch 2 " in log
    expected = load_checkpoint(os.path.join(whole, "checkpoint_last.pt"))
    resumed = load_checkpoint(tmp_path / "killed" / "checkpoint_last.pt")
    for key, value in expected["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    _assert_equal_states(resumed["task_state"], expected["task_state"])


@pytest.mark.parametrize("switch,moment,resumed_from", [
    (10, "update:10", "(epoch 1 @ 8 updates)"),  # killed before the change
    (10, "update:18", "(epoch 2 @ 16 updates)"),  # inside epoch 2, drawn at T=1
    (15, "update:18", "(epoch 2 @ 16 updates)"),  # inside epoch 2, drawn at T=5 before update 15
])
def test_cooldown_resumes_exactly_across_its_change_of_temperature(corpus, tmp_path, switch, moment, resumed_from):
    """Cooldown from T=5 to T=1: the first epoch that starts at or after update ``switch``
    samples at T=1 (epoch 2 starts after 13 updates). Killed before the change or after it,
    the same command gives the uninterrupted run, bit for bit; resumed after update 15 inside
    an epoch that began hot, it stays hot."""
    run = ("--max-update", "30", "--save-interval-updates", "4", "--gradient-combiner", "sum",
           "--cooldown-temperature", "1", "--cooldown-update", str(switch))
    whole = str(tmp_path / "whole")
    log = train(corpus, whole, *run)
    log = log.stdout + log.stderr
    assert "sampling: epoch 1 (after 0 updates) at temperature 5:" in log
    cold = "at temperature 1: en-fr 38.5%, en-cs 11.5%"
    assert (f"sampling: epoch 2 (after 13 updates) {cold}" in log) == (switch == 10)
    assert cold in log
    train_killed_at(moment, corpus, str(tmp_path / "killed"), *run)
    proc = train(corpus, str(tmp_path / "killed"), *run)
    assert resumed_from in proc.stdout + proc.stderr
    expected = load_checkpoint(os.path.join(whole, "checkpoint_last.pt"))
    resumed = load_checkpoint(tmp_path / "killed" / "checkpoint_last.pt")
    for key, value in expected["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    _assert_equal_states(resumed["task_state"], expected["task_state"])
    assert expected["task_state"]["sampling_schedule"]["switch_epoch"] == (2 if switch == 10 else 3)


def test_fixed_sampling_ratios_from_a_file_train(corpus, tmp_path):
    """Ratios found elsewhere (e.g. Double-Power-Law's search) train through fairseq's own
    --sampling-weights-from-file: the epoch's target tokens follow them (en-fr 70% of the
    rows here, where T=5 would give it about 28%), as the loss weighting's pi line shows."""
    weights = tmp_path / "weights.json"
    weights.write_text(json.dumps({"main:en-fr": 0.7, "main:fr-en": 0.1, "main:en-cs": 0.1, "main:cs-en": 0.1}))
    proc = train(corpus, str(tmp_path / "run"), "--max-update", "2", "--gradient-combiner", "uw",
                 "--sampling-weights-from-file", str(weights))
    log = proc.stdout + proc.stderr
    assert "| Upsample ratios: [('main:en-fr', 0.7), ('main:en-cs', 0.1)" in log
    share = float(re.search(r"target tokens by direction \(pi\): en-fr ([0-9.]+)%", log)[1])
    assert 60 < share < 80, log[-2000:]


def test_nash_mtl_resumes_exactly(corpus, tmp_path):
    """Nash-MTL's state (alpha per direction and group, warm-starting its solver) comes back
    from the checkpoint: killed after update 18, the same command continues from update 16
    to the uninterrupted run, bit for bit."""
    run = ("--max-update", "20", "--save-interval-updates", "4", "--gradient-combiner", "nash_mtl")
    whole = str(tmp_path / "whole")
    train(corpus, whole, *run)
    train_killed_at("update:18", corpus, str(tmp_path / "killed"), *run)
    proc = train(corpus, str(tmp_path / "killed"), *run)
    assert "(epoch 2 @ 16 updates)" in proc.stdout + proc.stderr
    expected = load_checkpoint(os.path.join(whole, "checkpoint_last.pt"))
    resumed = load_checkpoint(tmp_path / "killed" / "checkpoint_last.pt")
    for key, value in expected["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    _assert_equal_states(resumed["task_state"], expected["task_state"])
    assert expected["task_state"]["combiner"]["updates"] == 20
    assert (expected["task_state"]["combiner"]["alpha"] - 1).abs().max() > 1e-3  # alpha moved


@pytest.mark.parametrize("method,extra", [
    ("famo", ()),  # mixed batches; its logits, their Adam, one more forward after each step
    ("dwa", ()),  # its epoch averages: killed in epoch 3, the first whose weights are not uniform
    ("uw", ("--direction-batching", "single", "--update-freq", "2")),  # its log-variances' Adam
    ("famo", ("--famo-post-step", "next", "--direction-batching", "split")),  # the losses before the step
])
def test_loss_weightings_resume_exactly(corpus, tmp_path, method, extra):
    """A loss weighting's state (FAMO's logits and their Adam, DWA's loss history, UW's
    log-variances and their Adam, the last losses) comes back: killed after update 18 (DWA:
    30), the same command continues from update 16 (28) to the uninterrupted run, bit for
    bit; and the weights per direction reach loss_weights.csv."""
    updates, epoch = (32, 3) if method == "dwa" else (20, 2)
    run = ("--max-update", str(updates), "--save-interval-updates", "4", "--gradient-combiner", method,
           "--similarity-interval", "2", *extra)
    whole = str(tmp_path / "whole")
    log = train(corpus, whole, *run)
    log = log.stdout + log.stderr
    batching = extra[extra.index("--direction-batching") + 1] if "--direction-batching" in extra else "mixed"
    assert f"{method}: the epoch's target tokens by direction (pi): en-fr " in log
    train_killed_at(f"update:{updates - 2}", corpus, str(tmp_path / "killed"), *run)
    proc = train(corpus, str(tmp_path / "killed"), *run)
    assert f"(epoch {epoch} @ {updates - 4} updates)" in proc.stdout + proc.stderr
    expected = load_checkpoint(os.path.join(whole, "checkpoint_last.pt"))
    resumed = load_checkpoint(tmp_path / "killed" / "checkpoint_last.pt")
    for key, value in expected["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    _assert_equal_states(resumed["task_state"], expected["task_state"])
    state = expected["task_state"]["combiner"]
    assert state["updates"] == updates and not state["skipped"]
    assert state["epoch"] == expected["extra_state"]["train_iterator"]["epoch"]
    with open(os.path.join(whole, "loss_weights.csv")) as f:
        rows = list(csv.DictReader(f))
    with open(tmp_path / "killed" / "loss_weights.csv") as f:
        assert list(csv.DictReader(f)) == rows
    assert [int(r["update"]) for r in rows] == [u for u in range(2, updates + 1, 2) for _ in range(4)]
    weights = torch.tensor([float(r["weight"]) for r in rows])
    assert (weights - weights[:4].repeat(updates // 2)).abs().max() > 1e-4  # they moved
    if batching == "single":
        assert "single batches" not in log  # (no rows: the gradient path's log line)


def test_loss_weights_csv_measures_the_lag_of_the_weights_that_read_the_losses(corpus, tmp_path):
    """FAMO's c_i reads the current losses, which the backward that needs them has not
    measured yet: the plugin uses each direction's last measured loss. loss_weights.csv has
    both; here they differ by a few percent at most. UW's weights read no loss: equal."""
    for method in ("famo", "uw"):
        train(corpus, str(tmp_path / method), "--max-update", "20", "--gradient-combiner", method,
              "--similarity-interval", "1")
        with open(tmp_path / method / "loss_weights.csv") as f:
            rows = list(csv.DictReader(f))
        weight, exact = (torch.tensor([float(r[k]) for r in rows]) for k in ("weight", "exact"))
        relative = ((weight - exact).abs() / exact).max().item()
        if method == "uw":
            assert relative < 1e-6
        else:
            assert 1e-4 < relative < 0.1, relative
        effective = torch.tensor([float(r["effective"]) for r in rows])
        assert effective.sum() / weight.sum() == pytest.approx(1.0, abs=0.1)  # n_i / (N pi_i): 1 on average


@pytest.mark.parametrize("change,message", [
    (("--gradient-combiner", "pcgrad"), "trained with --gradient-combiner gradvac"),
    (("--combine-granularity", "all_matrix"), "parameter groups"),
])
def test_resume_from_another_configuration_is_refused(corpus, gradvac_run, tmp_path, change, message):
    save, _ = gradvac_run
    shutil.copytree(save, tmp_path / "run")
    proc = run_cli("train", train_args(corpus, str(tmp_path / "run"), "--max-update", "14", *change),
                   check=False)
    assert proc.returncode != 0
    assert message in proc.stderr
    # Nothing lost: the checkpoint is still the one from before.
    assert load_checkpoint(tmp_path / "run" / "checkpoint_last.pt")["optimizer_history"][-1]["num_updates"] == 12


def test_reset_optimizer_starts_the_combiner_afresh(corpus, gradvac_run, tmp_path):
    save, _ = gradvac_run
    shutil.copytree(save, tmp_path / "run")
    proc = train(corpus, str(tmp_path / "run"), "--max-update", "14", "--gradient-combiner", "pcgrad",
                 "--reset-optimizer")
    assert "is not restored" in proc.stdout + proc.stderr


@pytest.mark.parametrize("extra,message", [
    (("--gradient-combiner", "gradvak"), "invalid choice: 'gradvak'"),
    (("--combine-granularity", "per_layer"), "invalid choice: 'per_layer'"),
    (("--gradvac-directions", "en-fr,en-xx"), "--gradvac-directions names en-xx"),
    (("--gradient-combiner", "mgda", "--gradvac-directions", "en-fr"), "applies to gradvac and pcgrad"),
    (("--gradvac-beta", "0"), "beta must be in (0, 1]"),
    (("--gradvac-fixed-target", "1.0"), "fixed GradVac target must lie in (-1, 1)"),
    (("--gradient-combiner", "gradnorm", "--gradnorm-alpha", "nan"),
     "argument --gradnorm-alpha: expected a finite number, got 'nan'"),
    (("--gradient-combiner", "gradnorm", "--gradnorm-lr", "inf"),
     "argument --gradnorm-lr: expected a finite number, got 'inf'"),
    (("--gradvac-beta", "nan"), "argument --gradvac-beta: expected a finite number, got 'nan'"),
    (("--gradient-combiner", "gradnorm", "--gradnorm-lr", "-1"), "GradNorm's lr must be a finite number > 0"),
    # found when the model is built, before the first epoch
    (("--gradient-combiner", "gradnorm", "--gradnorm-layer", "decoder.layers.9"),
     "--gradnorm-layer decoder.layers.9: no parameter is called 'decoder.layers.9' or 'decoder.layers.9.*'"),
    (("--gradient-combiner", "mgda", "--sentence-avg"), "train mgda without --sentence-avg"),
    (("--gradient-combiner", "gradnorm", "--sentence-avg"), "train gradnorm without --sentence-avg"),
    (("--gradient-combiner", "gradvac", "--direction-batching", "mixed"),
     "gradvac combines each direction's own gradient: use --direction-batching split or single"),
    (("--gradient-combiner", "famo", "--famo-lr", "0"), "--famo-lr: famo's learning rate must be a finite number > 0, got 0.0"),
    (("--gradient-combiner", "famo", "--dwa-temperature", "3"), "--dwa-temperature applies to dwa, not famo"),
    (("--gradient-combiner", "stch", "--stch-mu", "-1"), "--stch-mu: stch needs a number > 0.0, got -1.0"),
    (("--gradient-combiner", "uw", "--sentence-avg"), "train uw without --sentence-avg"),
    (("--malloc-keep-mb", "-1"), "--malloc-keep-mb must be between 0 (glibc's own thresholds) and 2047, got -1"),
])
def test_bad_options_stop_before_training(corpus, tmp_path, extra, message):
    proc = run_cli("train", train_args(corpus, str(tmp_path), "--max-update", "2", *extra), check=False)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "begin training epoch" not in proc.stdout + proc.stderr
    assert not os.path.exists(tmp_path / "checkpoint_last.pt")


def test_unknown_language_and_missing_data(corpus, tmp_path):
    proc = run_cli("train", train_args(corpus, str(tmp_path), "--max-update", "2",
                                       directions=["en-fr", "en-de"]), check=False)
    assert proc.returncode != 0
    assert "en-de contains languages that are not in the language dictionary" in proc.stderr
    missing = dict(corpus, bin=str(tmp_path / "nowhere"))
    proc = run_cli("train", train_args(missing, str(tmp_path), "--max-update", "2"), check=False)
    assert proc.returncode != 0 and "nowhere" in proc.stderr


def _task(corpus, *extra, **kwargs):
    """The task as fairseq-train sets it up (in this process: faster than a failing run)."""
    from fairseq import options, tasks

    import fairseq_gradvac  # noqa: F401

    parser = options.get_training_parser()
    return tasks.setup_task(options.parse_args_and_arch(parser, train_args(corpus, "/tmp/unused", *extra,
                                                                           **kwargs)))


@pytest.mark.parametrize("extra,directions,message", [
    (("--gradient-combiner", "pcgrad", "--gradvac-fixed-target", "0.5"), None,
     "--gradvac-fixed-target applies to gradvac, not pcgrad"),
    (("--gradient-combiner", "sum", "--gradvac-fixed-target", "0.5"), None,
     "--gradvac-fixed-target applies to gradvac, not sum"),
    ((), ["en-fr", "en-fr", "fr-en"], "--lang-pairs names en-fr more than once"),
])
def test_options_that_would_be_ignored_are_refused(corpus, extra, directions, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        _task(corpus, *extra, directions=directions)


def test_gradvac_directions_naming_none_is_refused(corpus, capsys):
    with pytest.raises(SystemExit):
        _task(corpus, "--gradvac-directions", ",")
    assert "argument --gradvac-directions: ',' names no direction" in capsys.readouterr().err


@pytest.mark.parametrize("split", ["train", "valid"])
def test_missing_files_of_a_direction_are_named(corpus, tmp_path, split):
    data = tmp_path / "bin"
    shutil.copytree(corpus["bin"], data)
    for f in data.glob(f"{split}.en-cs.*"):
        f.unlink()
    task = _task(dict(corpus, bin=str(data)))
    with pytest.raises(ValueError, match=re.escape(f"en-cs (main data) has no {split} files in {data}")):
        task.load_dataset(split)


def test_another_language_list_is_refused(corpus, gradvac_run, tmp_path):
    """Without --lang-dict the language list is --lang-pairs' languages sorted (cs, en, fr, not
    the model's en, fr, cs): the same number of language tokens, naming other languages."""
    save, _ = gradvac_run
    args = task_args(corpus)
    del args[args.index("--lang-dict"):args.index("--lang-dict") + 2]
    proc = run_cli("generate", args + ["--path", os.path.join(save, "checkpoint_last.pt"),
                                       "--source-lang", "en", "--target-lang", "fr", "--beam", "1",
                                       "--gen-subset", "test"], check=False)
    assert proc.returncode != 0
    assert "trained with the languages en, fr, cs" in proc.stderr
    reordered = tmp_path / "langs.txt"
    reordered.write_text("cs\nen\nfr\n")
    shutil.copytree(save, tmp_path / "run")
    proc = run_cli("train", train_args(dict(corpus, lang_dict=str(reordered)), str(tmp_path / "run"),
                                       "--max-update", "14"), check=False)
    assert proc.returncode != 0
    assert "this run has cs, en, fr" in proc.stderr


def test_empty_direction_is_refused(corpus, tmp_path):
    data = tmp_path / "bin"
    shutil.copytree(corpus["bin"], data)
    from fairseq.data import indexed_dataset

    for lang in ("en", "cs"):  # an empty binarized train.en-cs
        builder = indexed_dataset.make_builder(str(data / f"train.en-cs.{lang}.bin"), impl="mmap",
                                               vocab_size=1000)
        builder.finalize(str(data / f"train.en-cs.{lang}.idx"))
    proc = run_cli("train", train_args(dict(corpus, bin=str(data)), str(tmp_path / "run"),
                                       "--max-update", "2"), check=False)
    assert proc.returncode != 0
    assert "en-cs has no examples" in proc.stderr


def test_generate_scores_supervised_and_zero_shot_directions(corpus, gradvac_run, tmp_path):
    save, _ = gradvac_run
    from fairseq_gradvac.evaluation import evaluate

    out = str(tmp_path / "bleu")
    evaluate.main(["--checkpoint", os.path.join(save, "checkpoint_last.pt"), "--zero-shot",
                   ",".join(corpus["zero_shot"]), "--raw", corpus["raw"], "--beam", "1",
                   "--directions", "en-fr,fr-en", "--out", out])
    result = json.load(open(out + ".json"))
    assert list(result["directions"]) == ["en-fr", "fr-en"] + corpus["zero_shot"]
    for d, r in result["directions"].items():
        assert r["sentences"] == 20 and 0 <= r["bleu"] <= 100 and "nrefs:1" in r["signature"]
    assert result["zero_shot"] == corpus["zero_shot"]
    table = open(out + ".md").read()
    assert "| fr-cs | zero-shot |" in table and "sacreBLEU signature" in table
    # the off-target rate, among the languages scored (langid on the tiny corpus's made-up words)
    for d, r in result["directions"].items():
        assert r["empty"] + sum(r["languages"].values()) == 20 and set(r["languages"]) <= {"en", "fr", "cs"}
        non_empty = sum(r["languages"].values())
        assert r["off_target"] == round((non_empty - r["languages"].get(d[3:], 0)) / non_empty, 4)
    assert "| off-target |" in table


def test_translate_reads_stdin_and_answers_as_generate_does(corpus, gradvac_run):
    """bash scripts/translate.sh RUN en fr: one translation per line typed, the same as
    fairseq-generate's greedy hypotheses of those sentences with the same length cap."""
    save, _ = gradvac_run
    from fairseq_gradvac.evaluation import evaluate

    checkpoint = os.path.join(save, "checkpoint_best.pt")
    sources = open(os.path.join(corpus["raw"], "test.en-fr.en")).read().splitlines()[:4]
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "translate.sh"), save, "en", "fr"],
                          input="\n".join(sources) + "\n\n", capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    options = evaluate.checkpoint_task_options(checkpoint)
    generated = evaluate.evaluate_direction(checkpoint, options, "en-fr", corpus["raw"], beam=1,
                                            max_len=(1.5, 10))["hypotheses"][:4]
    assert proc.stdout.splitlines() == generated
    assert "| INFO |" not in proc.stderr  # fairseq's log lines are left out
