""""The same command resumes", also when there is nothing left to do, when checkpoint_last.pt
was damaged outside the plugin, and refused when torchrun's processes would each train alone
(real fairseq-train on the tiny corpus)."""
import hashlib
import os
import shutil
import subprocess
import sys

import pytest
import torch

from tests.helpers import tiny_corpus
from tests.helpers.fairseq_runs import ROOT, _env, load_checkpoint, run_cli, train, train_args

RUN = ("--save-interval-updates", "4", "--gradient-combiner", "gradvac")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tiny_corpus.build(str(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="module")
def finished(corpus, tmp_path_factory):
    """A run that reached --max-update 8 (checkpoints at updates 4 and 8)."""
    save = tmp_path_factory.mktemp("finished")
    train(corpus, str(save), "--max-update", "8", *RUN)
    return save


def _digests(folder):
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in sorted(os.listdir(folder))}


def _updates(path):
    return load_checkpoint(path)["optimizer_history"][-1]["num_updates"]


def test_rerunning_a_finished_run_changes_nothing(corpus, finished, tmp_path):
    save = tmp_path / "run"
    shutil.copytree(finished, save)
    before = _digests(save)
    proc = train(corpus, str(save), "--max-update", "8", *RUN)
    log = proc.stdout + proc.stderr
    assert "this run has already finished (8 updates, --max-update 8)" in log
    assert "begin training epoch" not in log
    assert _digests(save) == before  # no checkpoint, CSV log or other file touched
    assert _updates(save / "checkpoint_last.pt") == 8
    # a larger limit trains on
    train(corpus, str(save), "--max-update", "10", *RUN)
    assert _updates(save / "checkpoint_last.pt") == 10


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_a_damaged_checkpoint_last_resumes_from_the_newest_intact_one(corpus, finished, tmp_path, damage):
    clean, damaged = tmp_path / "clean", tmp_path / "damaged"
    shutil.copytree(finished, clean)
    shutil.copytree(finished, damaged)
    last = damaged / "checkpoint_last.pt"
    data = last.read_bytes()
    last.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    proc = train(corpus, str(damaged), "--max-update", "12", *RUN)
    log = proc.stdout + proc.stderr
    assert f"{last} is damaged" in log
    newest = log.split("resuming from the newest intact checkpoint, ", 1)[1].split()[0]
    assert os.path.basename(newest) in ("checkpoint_best.pt", "checkpoint_1_8.pt")  # update 8's state
    train(corpus, str(clean), "--max-update", "12", *RUN)  # the same run from the intact checkpoint_last
    a, b = load_checkpoint(clean / "checkpoint_last.pt"), load_checkpoint(damaged / "checkpoint_last.pt")
    assert _updates(damaged / "checkpoint_last.pt") == 12
    for key, value in a["model"].items():
        assert torch.equal(b["model"][key], value), key
    assert torch.equal(a["task_state"]["combiner"]["phi_hat"], b["task_state"]["combiner"]["phi_hat"])


def test_a_damaged_checkpoint_without_an_intact_one_is_named(corpus, finished, tmp_path):
    (tmp_path / "checkpoint_last.pt").write_bytes(b"")
    proc = run_cli("train", train_args(corpus, str(tmp_path), "--max-update", "12", *RUN), check=False)
    assert proc.returncode != 0
    assert f"{tmp_path / 'checkpoint_last.pt'} is damaged" in proc.stderr
    assert "no other checkpoint" in proc.stderr and "remove it to start the run afresh" in proc.stderr
    # an explicit --restore-file that is damaged: the checkpoint to pass instead
    save = tmp_path / "run"
    shutil.copytree(finished, save)
    (save / "checkpoint_1_8.pt").write_bytes((save / "checkpoint_1_8.pt").read_bytes()[:1000])
    os.utime(save / "checkpoint_1_4.pt")  # the newest intact one
    proc = run_cli("train", train_args(corpus, str(save), "--max-update", "12", *RUN,
                                       "--restore-file", str(save / "checkpoint_1_8.pt")), check=False)
    assert proc.returncode != 0
    assert f"pass --restore-file {save / 'checkpoint_1_4.pt'}" in proc.stderr


def test_torchrun_without_a_world_size_is_refused(corpus, tmp_path):
    """fairseq's default world size is the number of CUDA devices: on CPUs, torchrun's two
    processes would each train alone into one save dir."""
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "fairseq_cli.train", *train_args(corpus, str(tmp_path), "--max-update", "2", "--cpu")],
        capture_output=True, text=True, env=dict(_env(), OMP_NUM_THREADS="1"), cwd=ROOT, timeout=300,
    )
    assert proc.returncode != 0
    log = proc.stdout + proc.stderr
    assert "started WORLD_SIZE=2 processes, but this one trains alone" in log
    assert "--distributed-world-size 2" in log and "--distributed-rank $RANK" in log
    assert not os.path.exists(tmp_path / "checkpoint_last.pt")
