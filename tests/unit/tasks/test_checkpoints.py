"""The combiner state goes back to the training task only from the checkpoint the trainer
resumes from: other checkpoints read in the same process (evaluate's options, a probe)
leave a training task alone, even one of another granularity."""
import os

import pytest
import torch
from fairseq import checkpoint_utils, options, tasks

import fairseq_gradvac  # noqa: F401  (registers the task, wraps fairseq's checkpoint loading)
from fairseq_gradvac.evaluation.evaluate import checkpoint_task_options
from tests.helpers import ROOT, tiny_corpus
from tests.helpers.fairseq_runs import TINY_MODEL, task_args

# saved by --gradient-combiner gradvac --combine-granularity all_layer (tests/integration/test_checkpoint_before_layout.py)
CHECKPOINT = os.path.join(ROOT, "tests", "fixtures", "run_before_layout", "checkpoint_last.pt")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tiny_corpus.build(str(tmp_path_factory.mktemp("tiny")))


def test_only_the_trainers_resume_restores_the_combiner(corpus):
    args = options.parse_args_and_arch(
        options.get_training_parser(),
        task_args(corpus) + TINY_MODEL + ["--gradient-combiner", "gradvac", "--combine-granularity", "whole_model",
                                          "--optimizer", "adam", "--lr", "1e-3"],
    )
    task = tasks.setup_task(args)  # a training task: expects its resume checkpoint
    torch.manual_seed(1)
    task.build_model(args)
    before = task.combiner.state_dict()

    assert checkpoint_task_options(CHECKPOINT)["lang_pairs"] == ",".join(corpus["directions"])
    checkpoint_utils.load_checkpoint_to_cpu(CHECKPOINT)
    assert task.combiner.state_dict() == before  # not restored, not refused

    # the trainer's load (it passes load_on_all_ranks) hands the state over: refused here by name
    with pytest.raises(ValueError, match="covers 5 parameter groups.*whole_model gives 1"):
        checkpoint_utils.load_checkpoint_to_cpu(CHECKPOINT, load_on_all_ranks=False)
