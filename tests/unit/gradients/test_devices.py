"""Every tensor of the combination (the rows' exchange, the raw-cosine record, every
combiner's weights and reports) is made on the rows' device: checked on the CPU by making
the default device another one (tests/helpers/device_check.py says how, and what it cannot see).
The distributed exchange runs under the same check in tests/unit/gradients/test_exchange.py."""
import pytest
import torch

from tests.helpers.device_check import wrong_default_device
from fairseq_gradvac.gradients.similarity import SimilarityGroups
from fairseq_gradvac.gradients.direction_gradients import DirectionGradients
from fairseq_gradvac.combiners import ParameterGroups, build_combiner, gradient_methods
from fairseq_gradvac.combiners.combiner import Combiner, StepReport

DIRECTIONS = ["en-fr", "fr-en", "en-cs", "cs-en"]


def _setup(dtype=torch.float32):
    params = [torch.nn.Parameter(torch.zeros(s, dtype=dtype)) for s in (30, 7, 30, 7, 12)]
    groups = ParameterGroups([f"g{i}" for i in range(3)], [
        [("encoder.layers.0.w", params[0]), ("encoder.layers.0.b", params[1])],
        [("decoder.layers.0.w", params[2]), ("decoder.layers.0.b", params[3])], [("embed", params[4])]])
    return params, groups


def _combine_steps(combiner, dtype=torch.float32, steps=3):
    params, groups = _setup(dtype)
    grads = DirectionGradients(groups, DIRECTIONS, similarity=SimilarityGroups(groups, "all_layer"))
    gen = torch.Generator().manual_seed(0)
    outs = []
    for step in range(steps):
        for p in params:
            p.grad = None
        grads.reset()
        for d in DIRECTIONS[step % 2:]:  # directions come and go
            grads.select(d)
            sum((p * torch.randn(p.shape, generator=gen).to(dtype)).sum() for p in params).backward()
            grads.record(d, torch.tensor(2.0, dtype=dtype), 10)
        with wrong_default_device():
            out = grads.combine(combiner, step, record=True)
            combiner.last_report.finite.item()
            assert grads.last_record.rows()  # the record reads its numbers: on the rows' device
        outs.append(out.clone())
    return outs


@pytest.mark.parametrize("name", gradient_methods())
def test_every_combiner_makes_its_tensors_on_the_rows_device(name):
    kwargs = {"beta": 0.3} if name == "gradvac" else {}
    checked = _combine_steps(build_combiner(name, **kwargs))
    plain = _combine_steps(build_combiner(name, **kwargs))  # the check changes nothing
    assert all(torch.equal(a, b) for a, b in zip(checked, plain))


class _CPUWeights(Combiner):
    """The sum's weights made without a device (as SumCombiner made them before the fix)."""

    needs_gram = False

    def _weigh(self, gram, tasks, groups, step, losses, ntokens):
        self.last_report = StepReport(tasks, groups.names, torch.ones((), dtype=torch.bool))
        return torch.ones(len(groups), len(tasks))


def test_a_tensor_made_without_a_device_is_caught():
    with pytest.raises(AssertionError, match="made without a device"):
        _combine_steps(_CPUWeights(), steps=1)
    with pytest.raises(AssertionError, match="__setitem__ mixes"):  # index_put_ of a host tensor
        with wrong_default_device():
            torch.zeros(2, 3, device="cpu")[:, [0, 2]] = torch.ones(2, 2)


@pytest.mark.parametrize("name", ["mgda", "gradnorm", "sum"])
@pytest.mark.parametrize("last_dummy", [False, True])
def test_the_update_keeps_its_scale_when_the_last_micro_batch_is_a_dummy(name, last_dummy):
    """fairseq divides the update by the workers' summed sample sizes, a worker's zeroed when
    its last micro-batch is a dummy (an epoch's end; on one worker: divided by 1). MGDA and
    GradNorm are defined on mean losses: after that division their update is the same
    whatever the divisor. The plain sum is stock fairseq's: the rows as they are."""
    params, groups = _setup(torch.float64)
    gen = torch.Generator().manual_seed(5)
    outs = []
    for dummy in (False, last_dummy):
        grads = DirectionGradients(groups, DIRECTIONS[:3])
        for p in params:
            p.grad = None
        grads.reset()
        for d, n in zip(DIRECTIONS[:3], (10, 30, 20)):
            grads.select(d)
            sum((p * torch.randn(p.shape, generator=gen, dtype=torch.float64)).sum() for p in params).backward()
            grads.record(d, torch.tensor(1.0 * n, dtype=torch.float64), n)
            grads.end_micro_batch(n, dummy=False)
        if dummy:  # a copy of a real batch, zeroed by ignore_grad: adds zeros, not recorded
            grads.select(DIRECTIONS[0])
            sum((p * 0).sum() for p in params).backward()
            grads.end_micro_batch(10, dummy=True)
        combined = grads.combine(build_combiner(name), 0)
        divisor = 1.0 if dummy else 60.0  # fairseq: numer / (sample_size or 1.0)
        outs.append(combined / (1.0 if name == "sum" else divisor))
        gen = torch.Generator().manual_seed(5)  # the same rows again
    assert torch.allclose(outs[0], outs[1], rtol=1e-12, atol=0)


@pytest.mark.parametrize("name,case", [
    ("fairgrad", "opposite"), ("nash_mtl", "opposite"), ("upgrad", "opposite"),  # failed solves, fallbacks
    ("imtl_g", "zero"), ("nash_mtl", "zero"),  # the limit rule of an exactly zero gradient
])
def test_fallbacks_and_the_zero_gradient_rule_make_their_tensors_on_the_rows_device(name, case):
    groups = ParameterGroups.from_sizes([40, 30])
    gen = torch.Generator().manual_seed(1)
    rows = torch.randn(3, 70, generator=gen, dtype=torch.float64)
    if case == "opposite":
        rows[1, :40] = -2 * rows[0, :40]  # no solution of G w = w^(-1/alpha) in group 0
    else:
        rows[2, :40] = 0
    n = torch.tensor([10.0, 20.0, 30.0], dtype=torch.float64)
    combiner = build_combiner(name)
    with wrong_default_device():
        out = combiner.combine(rows, ["a", "b", "c"], groups, 0, ntokens=n)
    assert bool(torch.isfinite(out).all())
    if case == "zero":
        assert not bool(out[:40].any())
