"""The loss weightings against TorchJD's scalarizers driven by hand: the weights, the state
each applied update moves, a direction absent from an update, a non-finite loss, the
checkpoint round trip and bad options."""
import math

import pytest
import torch
from torchjd import scalarization

from fairseq_gradvac.combiners import build_combiner
from tests.helpers.tolerance import assert_near

DIRECTIONS = ["en-fr", "fr-en", "en-hi", "hi-en"]
METHODS = ["famo", "uw", "imtl_l", "rlw", "stch", "geometric_mean", "dwa"]
LOSSES = [torch.tensor(v, dtype=torch.float64) for v in
          ([5.0, 4.0, 6.5, 7.0], [4.6, 3.9, 6.4, 6.1], [4.4, 3.5, 6.3, 6.0], [4.1, 3.4, 5.2, 5.9])]
NTOKENS = torch.tensor([300.0, 280.0, 60.0, 50.0], dtype=torch.float64)


def _observe(c, losses, ntokens=NTOKENS, after=0.97):
    """One applied update with mean losses ``losses``; FAMO's losses after the step: ``after`` x."""
    return c.observe(losses * ntokens, ntokens, post=losses * after * ntokens, post_ntokens=ntokens)


def _weights_by_hand(scalarizer, losses):
    """dS/dl, rescaled to sum 1 (the plugin's convention for every method's weights)."""
    values = losses.double().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(scalarizer(values), values)
    return g / g.sum()


@pytest.mark.parametrize("method", METHODS)
def test_weights_are_the_scalarizers_gradient_at_the_last_losses(method):
    c = build_combiner(method, directions=DIRECTIONS)
    reference = {
        "famo": lambda: scalarization.FAMO(4), "uw": lambda: scalarization.UW(4),
        "imtl_l": lambda: scalarization.IMTLL(4), "rlw": scalarization.Random,
        "stch": lambda: scalarization.STCH(mu=1.0), "geometric_mean": scalarization.GeometricMean,
        "dwa": lambda: scalarization.DWA(2.0),
    }[method]().double()
    # before any update every direction's loss counts as equal: the weights are the
    # scalarizer's at equal losses
    torch.manual_seed(1_000_003 + 0)
    assert_near(c.weights(0), _weights_by_hand(reference, torch.ones(4)), msg="first update")
    c.losses = LOSSES[0].double()  # (what observe() leaves: the last measured losses)
    torch.manual_seed(1_000_003 + 7)  # Random: the plugin seeds its draw with --seed and the update
    expected = _weights_by_hand(reference, LOSSES[0])
    got = c.weights(7)
    assert_near(got, expected, msg=method)
    assert_near(c.weights(7), got, msg="the same again: weights() changes no state")
    assert abs(float(got.sum()) - 1) < 1e-12
    shares = NTOKENS.double() / NTOKENS.sum()
    assert_near(c.multipliers(7, shares), got / shares, msg="m = c / pi")
    if method in ("famo", "stch", "geometric_mean"):  # they read the losses
        assert (c.weights(7, LOSSES[3]) - got).abs().max() > 1e-3
    if method == "rlw":
        assert (c.weights(8) - got).abs().max() > 1e-3  # drawn afresh each update


def test_uw_and_imtl_l_take_adam_steps_on_the_scalarization():
    for method, cls in (("uw", scalarization.UW), ("imtl_l", scalarization.IMTLL)):
        c = build_combiner(method, directions=DIRECTIONS, lr=0.05)
        reference = cls(4).double()
        adam = torch.optim.Adam(reference.parameters(), lr=0.05)
        for losses in LOSSES:
            assert _observe(c, losses)
            adam.zero_grad()
            reference(losses.double()).backward()
            adam.step()
        (got,), (expected,) = c.scalarizer.parameters(), reference.parameters()
        assert_near(got.detach(), expected.detach(), msg=method)
        assert expected.abs().max() > 0.1  # they moved
        assert_near(c.weights(4), _weights_by_hand(reference, LOSSES[-1]), msg=method)


@pytest.mark.parametrize("post_step", ["forward", "next"])
def test_famo_moves_its_logits_as_torchjds_famo(post_step):
    c = build_combiner("famo", directions=DIRECTIONS, post_step=post_step, lr=0.1)
    reference = scalarization.FAMO(4, lr=0.1).double()
    after = torch.tensor([0.99, 0.95, 0.999, 0.9], dtype=torch.float64)  # each direction's fall over a step
    for i, losses in enumerate(LOSSES):
        c.observe(losses * NTOKENS, NTOKENS, post=losses * after * NTOKENS, post_ntokens=NTOKENS)
        if post_step == "forward":  # the paper's code: the same batch before and after the step
            reference(losses.double())
            reference.update((losses * after).double())
        else:  # the loss of update t after the step is read from update t + 1
            if i:
                reference.update(losses.double())
            reference(losses.double())
    assert_near(c.scalarizer._w.detach(), reference._w.detach(), msg=post_step)
    assert reference._w.abs().max() > 0.05
    assert_near(c.weights(4), _weights_by_hand(reference, LOSSES[-1]), msg="weights")


def test_dwa_weighs_by_the_ratio_of_the_last_two_epochs_mean_losses():
    c = build_combiner("dwa", directions=DIRECTIONS, temperature=2.0)
    epochs = [LOSSES[:2], LOSSES[2:], LOSSES[:1]]
    for epoch, updates in enumerate(epochs, start=1):
        c.begin_epoch(epoch)
        c.begin_epoch(epoch)  # (a resumed run begins its epoch again: no second roll)
        assert torch.equal(c.weights(0), torch.full((4,), 0.25, dtype=torch.float64)) or epoch == 3
        for losses in updates:
            _observe(c, losses)
    averages = [torch.stack(u).double().mean(0) for u in epochs[:2]]
    expected = torch.softmax(averages[1] / averages[0] / 2.0, 0)  # (K softmax, rescaled to sum 1)
    assert_near(c.weights(0), expected, msg="DWA, epoch 3")
    assert (expected - 0.25).abs().max() > 1e-3


def test_a_direction_absent_from_an_update_keeps_its_last_loss():
    c = build_combiner("geometric_mean", directions=DIRECTIONS)
    _observe(c, LOSSES[0])
    absent = NTOKENS.clone()
    absent[2] = 0
    _observe(c, LOSSES[1], ntokens=absent)
    expected = LOSSES[1].clone()
    expected[2] = LOSSES[0][2]
    assert_near(c.held(), expected.double(), msg="held losses")
    # a direction never measured takes the mean of those measured
    fresh = build_combiner("geometric_mean", directions=DIRECTIONS)
    _observe(fresh, LOSSES[0], ntokens=absent)
    assert math.isclose(float(fresh.held()[2]), float(LOSSES[0][[0, 1, 3]].mean()), rel_tol=1e-6)


@pytest.mark.parametrize("method", ["famo", "uw", "dwa"])
def test_a_non_finite_loss_leaves_the_state_alone(method):
    c = build_combiner(method, directions=DIRECTIONS)
    _observe(c, LOSSES[0])
    before = c.state_dict()
    bad = LOSSES[1].clone()
    bad[1] = math.inf
    assert not _observe(c, bad)
    assert c.skipped == 1
    after = c.state_dict()
    after.pop("skipped"), before.pop("skipped")
    assert repr(after) == repr(before)


@pytest.mark.parametrize("method", METHODS)
def test_the_state_round_trip_continues_the_same_weights(method):
    a = build_combiner(method, directions=DIRECTIONS)
    a.begin_epoch(1)
    for losses in LOSSES[:2]:
        _observe(a, losses)
    a.begin_epoch(2)
    _observe(a, LOSSES[2])
    b = build_combiner(method, directions=DIRECTIONS)
    b.load_state_dict(a.state_dict())
    for c in (a, b):
        c.begin_epoch(3)
        _observe(c, LOSSES[3])
    assert torch.equal(a.weights(5), b.weights(5)), method
    assert repr(a.state_dict()) == repr(b.state_dict())


def test_a_state_for_other_directions_is_refused():
    a = build_combiner("famo", directions=DIRECTIONS)
    b = build_combiner("famo", directions=DIRECTIONS[:3])
    with pytest.raises(ValueError, match="this run trains en-fr, fr-en, en-hi"):
        b.load_state_dict(a.state_dict())


@pytest.mark.parametrize("method,kwargs,message", [
    ("famo", {"lr": 0.0}, "learning rate"), ("famo", {"weight_decay": -1.0}, "--famo-weight-decay"),
    ("famo", {"post_step": "later"}, "--famo-post-step"), ("uw", {"lr": math.nan}, "learning rate"),
    ("stch", {"mu": 0.0}, "--stch-mu"), ("dwa", {"temperature": -2.0}, "--dwa-temperature"),
])
def test_bad_values_are_refused(method, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_combiner(method, directions=DIRECTIONS, **kwargs)


def test_they_weigh_losses_not_gradients():
    c = build_combiner("famo", directions=DIRECTIONS)
    assert not c.needs_rows and c.mean_losses
    with pytest.raises(TypeError, match="weighs losses"):
        c._weigh(None, DIRECTIONS, None, 0, None, None)


def test_the_random_draws_leave_every_other_generator_alone(monkeypatch):
    """RLW's draw is seeded from --seed and the update on the CPU generator, which is
    restored: fairseq's own seeding (dropout, on the CPU or the GPU) is untouched."""
    c = build_combiner("rlw", directions=DIRECTIONS)
    torch.manual_seed(5)
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: pytest.fail("a CUDA generator was reseeded"))
    state = torch.get_rng_state()
    first = c.weights(3)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(c.weights(3), first)


@pytest.mark.parametrize("method,kwargs,lr", [("uw", {"lr": 0.1}, 0.1), ("famo", {"lr": 0.2}, 0.2)])
def test_a_resumed_run_learns_at_its_own_rate(method, kwargs, lr):
    """The learned weights' Adam comes back from the checkpoint with this run's rate."""
    a = build_combiner(method, directions=DIRECTIONS)
    for losses in LOSSES[:2]:
        _observe(a, losses)
    b = build_combiner(method, directions=DIRECTIONS, **kwargs)
    b.load_state_dict(a.state_dict())
    optimizer = b._optimizer if method == "uw" else b.scalarizer._optimizer
    assert [g["lr"] for g in optimizer.param_groups] == [lr]
