"""The loss weightings in the task (real fairseq objects, in process): fairseq's mixed batches
labelled by direction, one update's gradient against the scalarizer's gradient through the
model, and the state moving only with an applied update."""
import pytest
import torch
from fairseq.data.multilingual.sampled_multi_dataset import SampledMultiDataset
from fairseq.optim.amp_optimizer import AMPOptimizer
from torchjd import scalarization

from fairseq_gradvac.data.direction_batches import direction_of
from fairseq_gradvac.tasks.loss_weights import check_criterion
from tests.helpers.tolerance import assert_near
from tests.unit.tasks.test_task_gradients import (  # noqa: F401 (corpus, mined: the fixtures)
    _Backward, _extra_data, _flat_grad, _samples, _setup, corpus, mined)


def _rows(batch, pad, where=None):
    src, tgt = batch["net_input"]["src_tokens"], batch["target"]
    keep = range(len(src)) if where is None else where.nonzero().flatten().tolist()
    return sorted((src[i][src[i] != pad].tolist(), tgt[i][tgt[i] != pad].tolist()) for i in keep)


@pytest.mark.parametrize("extra", [False, True])
def test_mixed_batches_are_fairseqs_own_with_each_rows_direction(corpus, mined, extra):
    _, task, _, _ = _setup(corpus, "--gradient-combiner", "famo", *(_extra_data(mined) if extra else ()))
    assert task.args.direction_batching == "mixed"  # the loss weightings' default
    dataset, samples = _samples(task)
    mixed = dataset.collater(samples)
    stock = SampledMultiDataset.collater(dataset, samples)
    assert set(mixed) == set(stock) | {"direction"}
    for key in ("id", "target", "ntokens", "nsentences"):
        assert torch.equal(torch.as_tensor(mixed[key]), torch.as_tensor(stock[key])), key
    for key, value in stock["net_input"].items():
        assert torch.equal(mixed["net_input"][key], value), key
    # each row's label is its direction: the rows labelled d are the rows of d's own batch
    task.args.direction_batching = "split"
    dataset.direction_batching = "split"
    by_direction = dataset.collater(samples)
    pad = task.source_dictionary.pad()
    names = list(dict.fromkeys(direction_of(k) for k in dataset.keys))
    labels = task._row_direction[mixed["direction"]]
    assert sorted({names[i] for i in mixed["direction"].tolist()}) == sorted(by_direction)
    for direction, batch in by_direction.items():
        number = task.training_directions.index(direction)
        assert _rows(mixed, pad, labels == number) == _rows(batch, pad), direction


REFERENCE = {
    "famo": lambda: scalarization.FAMO(4), "uw": lambda: scalarization.UW(4),
    "imtl_l": lambda: scalarization.IMTLL(4), "rlw": scalarization.Random,
    "stch": lambda: scalarization.STCH(mu=1.0), "geometric_mean": scalarization.GeometricMean,
    "dwa": lambda: scalarization.DWA(2.0),
}


@pytest.mark.parametrize("method", sorted(REFERENCE))
@pytest.mark.parametrize("batching", ["mixed", "split"])
def test_an_update_is_the_gradient_of_the_scalarized_mean_losses(corpus, method, batching):
    """With the batch's own token shares and losses, the update fairseq applies (the summed
    weighted losses' gradient divided by the batch's tokens) is grad S(l_1, ..., l_K) of
    TorchJD's scalarizer, l_i each direction's mean loss per token through the model."""
    _, task, model, criterion = _setup(corpus, "--gradient-combiner", method, "--direction-batching", batching)
    dataset, samples = _samples(task)
    by_direction = SampledMultiDataset.collater(dataset, samples)  # (fairseq's, for the reference)
    dataset.direction_batching = "split"
    split = dataset.collater(samples)
    dataset.direction_batching = batching
    sample = dataset.collater(samples)
    directions = task.training_directions
    assert list(split) == directions
    # the reference: S of the mean losses, through the model
    losses, ntokens = [], []
    for direction in directions:
        loss, _, log = criterion(model, split[direction])
        losses.append(loss / log["ntokens"])
        ntokens.append(float(log["ntokens"]))
    mean = torch.stack(losses).double()
    torch.manual_seed(1 * 1_000_003 + 0)  # (Random: the plugin's draw for update 0 with --seed 1)
    scalarized = REFERENCE[method]().double()(mean)
    (c,) = torch.autograd.grad(scalarized, mean, retain_graph=True)
    scalarized.backward()
    expected = _flat_grad(model) / c.sum()  # (every method's weights rescaled to sum 1)
    model.zero_grad(set_to_none=True)
    # the plugin: this batch's token shares and losses are the ones it weighs with
    n = torch.tensor(ntokens, dtype=torch.float64)
    task._token_shares = n / n.sum()
    task.combiner.losses = mean.detach().clone()
    _, size, log = task.train_step(sample, model, criterion, _Backward(), 0)
    assert size == by_direction["ntokens"] == n.sum()
    got = _flat_grad(model) / size  # fairseq's division by the update's tokens
    assert_near(got, expected, 1e-5, method)
    for i, d in enumerate(directions):
        assert_near(log[f"{d}:loss"] / log[f"{d}:ntokens"], mean[i].detach(), 1e-5, d)
    # the token shares matter: the epoch's (not this batch's) give another update
    model.zero_grad(set_to_none=True)
    task._weighed, task._token_shares = None, torch.full((4,), 0.25, dtype=torch.float64)
    task.train_step(sample, model, criterion, _Backward(), 0)
    assert (_flat_grad(model) / size - expected).abs().max() > 1e-3 * expected.abs().max()


class _FakeAMP(AMPOptimizer):
    """An AMP optimizer whose step finds an overflow (its loss scale halves) or not."""

    def __init__(self, overflow):
        self.overflow, self._scale = overflow, 128.0

    @property
    def scaler(self):
        return self

    def get_scale(self):
        return self._scale

    def step(self):
        if self.overflow:
            self._scale /= 2


@pytest.mark.parametrize("overflow", [False, True])
def test_the_state_moves_only_with_an_applied_update(corpus, overflow):
    _, task, model, criterion = _setup(corpus, "--gradient-combiner", "famo")
    dataset, samples = _samples(task)
    task._token_shares = torch.full((4,), 0.25, dtype=torch.float64)
    task.train_step(dataset.collater(samples), model, criterion, _Backward(), 0)
    before = task.combiner.state_dict()
    task.optimizer_step(_FakeAMP(overflow), model, 0)
    after = task.combiner.state_dict()
    assert (after["updates"], repr(after) == repr(before)) == ((0, True) if overflow else (1, False))


def test_a_criterion_without_per_row_losses_is_refused_for_mixed_batches():
    from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion
    from fairseq.criterions.label_smoothed_cross_entropy_with_alignment import (
        LabelSmoothedCrossEntropyCriterionWithAlignment)

    class Plain(LabelSmoothedCrossEntropyCriterion):  # (the same forward: accepted)
        pass

    check_criterion(object.__new__(Plain), "mixed")
    for cls in (LabelSmoothedCrossEntropyCriterionWithAlignment, type("Other", (), {"forward": lambda self: 0})):
        with pytest.raises(ValueError, match="computes its loss otherwise: use --direction-batching split or single"):
            check_criterion(object.__new__(cls), "mixed")
        check_criterion(object.__new__(cls), "single")
