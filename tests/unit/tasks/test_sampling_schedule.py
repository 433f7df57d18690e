"""The task samples each epoch at its schedule's temperature (real fairseq objects): Cooldown's
shares of an epoch's rows are fairseq's temperature formula at the temperature of that epoch."""
import numpy as np
import pytest

from fairseq_gradvac.data.direction_batches import direction_numbers
from fairseq_gradvac.data.sampling_schedule import shares
from tests.helpers import tiny_corpus
from tests.unit.tasks.test_task_gradients import _setup


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tiny_corpus.build(str(tmp_path_factory.mktemp("tiny")), train_sizes={"cs": 60})


def _epoch_shares(task, dataset, epoch):
    """Each direction's share of the rows ``epoch`` samples, as the epoch's batches see them."""
    construct = task.create_batch_sampler_func(task.max_positions(), True, 400, None)
    batches = construct(dataset, epoch)
    rows = np.concatenate([np.asarray(b) for b in batches])
    numbers = direction_numbers(dataset, rows)
    return np.bincount(numbers, minlength=len(dataset.keys)) / len(rows)


def test_each_epoch_is_sampled_at_its_temperature(corpus):
    args, task, _, _ = _setup(corpus, "--cooldown-temperature", "1", "--cooldown-update", "10")
    dataset = task.datasets["train"]
    sizes = [len(d) for d in dataset.datasets]
    assert len(set(sizes)) > 1  # unequal directions, or every temperature samples alike
    hot, cold = shares(sizes, 5), shares(sizes, 1)
    assert max(abs(a - b) for a, b in zip(hot, cold)) > 0.05  # the two can be told apart
    tolerance = len(sizes) / len(dataset)  # fairseq rounds each direction's count
    assert _epoch_shares(task, dataset, 1) == pytest.approx(hot, abs=tolerance)
    task._updates_done = 9  # epoch 2 starts before update 10: still hot
    assert _epoch_shares(task, dataset, 2) == pytest.approx(hot, abs=tolerance)
    task._updates_done = 20  # epoch 3 starts after it: cold from here on
    assert _epoch_shares(task, dataset, 3) == pytest.approx(cold, abs=2 * len(sizes) / len(dataset))
    assert task.state_dict()["sampling_schedule"] == {"schedule": "cooldown", "switch_epoch": 3, "last_epoch": 3}
    # a training set loaded again (fairseq does so every epoch for sharded data) comes at
    # --sampling-temperature: the schedule samples it again at the epoch's temperature
    del task.datasets["train"]  # (fairseq rebuilds only sharded training sets; here by hand)
    task.load_dataset("train", epoch=4)
    again = task.datasets["train"]
    assert again is not dataset
    assert _epoch_shares(task, again, 4) == pytest.approx(cold, abs=2 * len(sizes) / len(again))


@pytest.mark.parametrize("extra,message", [
    (("--cooldown-temperature", "1"), "needs both --cooldown-temperature and --cooldown-update"),
    (("--cooldown-update", "10"), "needs both"),
    (("--cooldown-temperature", "0", "--cooldown-update", "10"), "--cooldown-temperature"),
    (("--cooldown-temperature", "1", "--cooldown-update", "0"), "--cooldown-update"),
    (("--cooldown-temperature", "1", "--cooldown-update", "10", "--virtual-epoch-size", "100"),
     "--virtual-epoch-size"),
    (("--cooldown-temperature", "1", "--cooldown-update", "10", "--sampling-method", "uniform"),
     "needs --sampling-method temperature"),
])
def test_bad_cooldown_options_are_refused(corpus, extra, message):
    with pytest.raises(ValueError, match=message):
        _setup(corpus, *extra)
