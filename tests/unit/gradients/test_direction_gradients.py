"""DirectionGradients on one worker: rows routed by direction, presence, untouched parameters."""
import pytest
import torch

from fairseq_gradvac.gradients.direction_gradients import DirectionGradients
from fairseq_gradvac.combiners import ParameterGroups, build_combiner
from tests.helpers.tolerance import assert_near

DIRECTIONS = ["en-fr", "fr-en", "en-cs", "cs-en"]


def _model():
    torch.manual_seed(0)
    return torch.nn.ModuleDict({"a": torch.nn.Linear(3, 2), "b": torch.nn.Linear(2, 1)})


def _setup(model):
    groups = ParameterGroups.from_named_parameters(model.named_parameters(), "all_matrix")
    return groups, DirectionGradients(groups, DIRECTIONS)


def _backward(model, x, use_b=True):
    h = model["a"](x)
    (model["b"](h) if use_b else h).pow(2).sum().backward()


def _expected(model, groups, x, use_b=True):
    model.zero_grad(set_to_none=True)
    _backward(model, x, use_b)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in groups.params]
    model.zero_grad(set_to_none=True)
    return groups.flatten(grads)


def test_each_direction_accumulates_in_its_own_row_whatever_the_order():
    model = _model()
    groups, grads = _setup(model)
    xs = {d: torch.randn(4, 3, generator=torch.Generator().manual_seed(i)) for i, d in enumerate(DIRECTIONS)}
    expected = {d: _expected(model, groups, xs[d]) for d in DIRECTIONS}
    # micro-batches in a mixed order, some directions twice (--update-freq)
    for d in ["cs-en", "en-fr", "cs-en", "fr-en", "en-fr"]:
        grads.select(d)
        _backward(model, xs[d])
        grads.record(d, 1.0, 5)
    for d in DIRECTIONS:
        times = {"cs-en": 2, "en-fr": 2, "fr-en": 1, "en-cs": 0}[d]
        if times == 0:
            assert grads.row(d) is None  # no row is taken for a direction without a batch
        else:
            assert_near(grads.row(d), times * expected[d])
    assert grads.present_directions() == ["en-fr", "fr-en", "cs-en"]  # training order


def test_rows_are_taken_in_first_use_order_and_capped():
    """A worker holds rows only for the directions of its update: with rows=2 (single
    batches, --update-freq 2) two directions fit, a third is refused with the reason; the
    combination is that of the directions in training order, whatever row holds which."""
    model = _model()
    groups = ParameterGroups.from_named_parameters(model.named_parameters(), "all_matrix")
    grads = DirectionGradients(groups, DIRECTIONS, rows=2)
    assert grads.buffer.shape == (2, groups.numel)
    xs = {d: torch.randn(4, 3, generator=torch.Generator().manual_seed(i)) for i, d in enumerate(DIRECTIONS)}
    for d in ["cs-en", "fr-en"]:  # rows 0 and 1, against training order
        grads.select(d)
        _backward(model, xs[d])
        grads.record(d, 1.0, 5)
    assert grads.buffer.data_ptr() == grads.row("cs-en").data_ptr()
    with pytest.raises(RuntimeError, match=r"en-fr is direction 3 of this update, but this worker keeps rows for 2 \(cs-en, fr-en\)"):
        grads.select("en-fr")
    combiner = build_combiner("mgda")
    combined = grads.combine(combiner, step=0)
    assert combiner.last_report.tasks == ["fr-en", "cs-en"]
    reference = DirectionGradients(groups, DIRECTIONS)
    for d in ["fr-en", "cs-en"]:
        reference.select(d)
        _backward(model, xs[d])
        reference.record(d, 1.0, 5)
    assert_near(combined, reference.combine(build_combiner("mgda"), step=0))
    assert combiner.last_report.weights.shape[1] == 2
    with pytest.raises(ValueError, match="rows must be between 1 and the 4 directions"):
        DirectionGradients(groups, DIRECTIONS, rows=5)
    with pytest.raises(RuntimeError, match=r"record\('en-cs'\) before select"):
        grads.record("en-cs", 1.0, 5)


def test_absent_and_dummy_directions_are_left_out():
    """en-cs only ran a dummy batch (zeros, not recorded): MGDA over the recorded directions,
    not over a zero row (which would make the min-norm update zero)."""
    model = _model()
    groups, grads = _setup(model)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(3))
    for d in ["en-fr", "fr-en"]:
        grads.select(d)
        _backward(model, x if d == "en-fr" else -0.5 * x)
        grads.record(d, 1.0, 10)
    grads.select("en-cs")
    (0 * model["b"](model["a"](x)).sum()).backward()  # what fairseq's dummy batch does
    combiner = build_combiner("mgda")
    combined = grads.combine(combiner, step=0)
    assert combiner.last_report.tasks == ["en-fr", "fr-en"]
    assert combined.abs().sum() > 0


def test_parameters_no_direction_reached_keep_grad_none():
    """As in stock fairseq (e.g. a layer LayerDrop skipped): no gradient, so Adam leaves
    the parameter alone; the others get the combined gradient."""
    model = _model()
    groups, grads = _setup(model)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(4))
    for d in ["en-fr", "cs-en"]:
        grads.select(d)
        _backward(model, x, use_b=False)  # model["b"] unused in this update
        grads.record(d, 1.0, 10)
    combined = grads.combine(build_combiner("sum"), step=0)
    assert model["b"].weight.grad is None and model["b"].bias.grad is None
    assert_near(model["a"].weight.grad, 2 * _expected(model, groups, x, use_b=False)[: 6].view(2, 3))
    assert combined.shape == (groups.numel,)
    # next update: b is used again and gets its gradient
    model.zero_grad(set_to_none=True)
    grads.reset()
    grads.select("en-fr")
    _backward(model, x)
    grads.record("en-fr", 1.0, 10)
    grads.combine(build_combiner("sum"), step=1)
    assert model["b"].weight.grad is not None


def test_the_update_vector_is_kept_and_rewritten_whole_each_update():
    """combine() writes every update into one P-vector made at the first update (a fresh one
    each time costs a first touch of its pages); each update is that update's alone."""
    model = _model()
    groups, grads = _setup(model)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(5))
    kept = None
    for step, (directions, scale) in enumerate([(["en-fr", "cs-en"], 1.0), (["fr-en"], -3.0)]):
        model.zero_grad(set_to_none=True)
        for d in directions:
            grads.select(d)
            _backward(model, scale * x)
            grads.record(d, 1.0, 10)
        combined = grads.combine(build_combiner("sum"), step=step)
        kept = combined.data_ptr() if kept is None else kept
        assert combined.data_ptr() == kept
        assert model["a"].weight.grad.data_ptr() == kept  # .grad is a view of it
        assert_near(combined, len(directions) * _expected(model, groups, scale * x))


def test_unknown_direction_is_refused():
    _, grads = _setup(_model())
    with pytest.raises(ValueError, match="'de-en' is not a training direction"):
        grads.select("de-en")
    with pytest.raises(ValueError, match="unique"):
        DirectionGradients(grads.groups, ["en-fr", "en-fr"])


def test_an_update_the_trainer_dropped_contributes_nothing():
    """fairseq's OOM recovery: zero_grad() mid-update, then the trainer still reaches the
    all-reduce point (with several workers it must join the collectives): this worker's
    rows from before count as nothing, and nothing is left over for the next update."""
    model = _model()
    groups, grads = _setup(model)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(5))
    grads.select("en-fr")
    _backward(model, x)
    grads.record("en-fr", 1.0, 10)
    model.zero_grad(set_to_none=True)  # the trainer after an OOM
    assert grads.combine(build_combiner("gradvac"), step=0) is None
    assert all(p.grad is None for p in model.parameters())
    grads.select("fr-en")  # the next update starts clean
    _backward(model, x)
    grads.record("fr-en", 1.0, 10)
    combiner = build_combiner("sum")
    combined = grads.combine(combiner, step=1)
    assert combiner.last_report.tasks == ["fr-en"]
    assert_near(combined, _expected(model, groups, x))


def test_the_finiteness_check_sees_every_entry_and_no_false_overflow():
    from fairseq_gradvac.combiners.groups import all_finite as _all_finite

    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        x = torch.full((3 * 1000 + 7,), 60000.0, dtype=dtype)  # its fp16 sum would overflow
        assert _all_finite(x)
        for where in (0, 1500, -1):
            for bad in (float("inf"), float("-inf"), float("nan")):
                y = x.clone()
                y[where] = bad
                assert not _all_finite(y), (dtype, where, bad)
    z = torch.full((10,), 3e38)  # fp32 entries whose fp32 sum would overflow
    assert _all_finite(z) and not _all_finite(torch.tensor([1.0, float("nan")]))
