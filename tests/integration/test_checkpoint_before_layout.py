"""A run saved by the plugin before its modules moved into rooms (combiners/, gradients/,
tasks/, evaluation/) resumes and scores with the plugin as it is now.

tests/fixtures/run_before_layout/ was written at commit 0f25b7c (the layout before the
move) by 4 updates of the tests' tiny model on tiny_corpus.build()'s corpus (its default
seed) with ``--gradient-combiner gradvac --combine-granularity all_layer
--similarity-interval 2`` (tests/helpers/fairseq_runs.py's train()), on this project's
2-core AMD EPYC (AVX-512 kernels)."""
import json
import os
import shutil

import pytest
import torch

from tests.helpers import ROOT, tiny_corpus
from tests.helpers.fairseq_runs import LR, load_checkpoint, train
from tests.helpers.tolerance import assert_near

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "run_before_layout")
OPTIONS = ("--gradient-combiner", "gradvac", "--combine-granularity", "all_layer", "--similarity-interval", "2")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tiny_corpus.build(str(tmp_path_factory.mktemp("tiny")))


def test_the_old_run_resumes_as_if_it_had_never_stopped(corpus, tmp_path):
    """Resumed to update 6 from the fixture == 6 updates straight with today's code, up to
    the rounding of another CPU's kernels in the fixture's first 4 updates."""
    resumed = tmp_path / "resumed"
    shutil.copytree(FIXTURE, resumed)
    log = train(corpus, str(resumed), "--max-update", "6", *OPTIONS)
    assert "restored gradvac state for 4 directions" in log.stdout + log.stderr
    straight = tmp_path / "straight"
    train(corpus, str(straight), "--max-update", "6", *OPTIONS)
    a, b = (load_checkpoint(p / "checkpoint_last.pt") for p in (resumed, straight))
    assert a["optimizer_history"][-1]["num_updates"] == b["optimizer_history"][-1]["num_updates"] == 6
    # Adam moves a parameter by about --lr per update whatever its size, so another CPU's
    # rounding in the first 4 updates shows up as a fraction of lr x updates, not of a
    # parameter's magnitude: measured 1.4e-5 (Intel Xeon, AVX-512 kernels) and 2.5e-5 (AVX2)
    # against the fixture's AMD EPYC. A resume that lost Adam's moments, the learning-rate
    # schedule or the update count moves parameters by up to lr (3e-3) at update 5.
    bound = 0.01 * float(LR) * 6
    for name, value in b["model"].items():
        assert (a["model"][name] - value).abs().max() <= bound, name
    old, new = a["task_state"]["combiner"], b["task_state"]["combiner"]
    assert old["task_names"] == new["task_names"]
    assert torch.count_nonzero(new["phi_hat"]) > 0
    assert_near(old["phi_hat"], new["phi_hat"], 1e-4)
    updates = [line.split(",")[0] for line in open(resumed / "similarity.csv").read().splitlines()[1:]]
    assert sorted(set(updates), key=int) == ["2", "4", "6"]  # the old record, continued


def test_the_old_checkpoint_scores_every_direction(corpus, tmp_path, capsys):
    """The checkpoint names the data folder of the machine it was trained on: --data and
    --lang-dict point to this one; a folder that does not exist is named."""
    from fairseq_gradvac.evaluation import evaluate

    checkpoint = os.path.join(FIXTURE, "checkpoint_last.pt")
    with pytest.raises(SystemExit):
        evaluate.main(["--checkpoint", checkpoint, "--data", str(tmp_path / "gone"), "--out", str(tmp_path / "no")])
    assert f"--data {tmp_path / 'gone'} does not exist here" in capsys.readouterr().err
    out = str(tmp_path / "bleu")
    evaluate.main(["--checkpoint", checkpoint, "--data", corpus["bin"], "--lang-dict", corpus["lang_dict"],
                   "--raw", corpus["raw"], "--directions", "en-fr", "--zero-shot", "fr-cs", "--beam", "1",
                   "--max-len-a", "1.5", "--max-len-b", "10", "--out", out])
    result = json.load(open(out + ".json"))
    assert list(result["directions"]) == ["en-fr", "fr-cs"]
    assert all(r["sentences"] == 20 and 0 <= r["bleu"] <= 100 for r in result["directions"].values())
