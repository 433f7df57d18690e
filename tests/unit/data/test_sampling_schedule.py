"""Cooldown (Li et al., NAACL 2025): one switch of the sampling temperature, at the start of
the first epoch at or after the chosen update; shares by fairseq's temperature formula."""
import pytest

from fairseq_gradvac.data.sampling_schedule import Cooldown, shares


def test_the_temperature_falls_at_the_first_epoch_starting_at_or_after_the_update():
    schedule = Cooldown(5, 1, at_update=10)
    assert schedule.temperature(1, 0) == 5
    assert schedule.temperature(2, 9) == 5  # epoch 2 starts before update 10
    assert schedule.temperature(3, 14) == 1 and schedule.switch_epoch == 3
    assert schedule.temperature(3, 14) == 1  # the same epoch asked again (a resumed run)
    assert schedule.temperature(4, 20) == 1
    assert schedule.temperature(2, 9) == 5  # an earlier epoch keeps its temperature


def test_the_switch_epoch_is_the_state():
    first = Cooldown(5, 1, at_update=10)
    first.temperature(1, 0)
    first.temperature(2, 13)
    resumed = Cooldown(5, 1, at_update=10)
    resumed.load_state_dict(first.state_dict())
    # resumed inside epoch 2 with a clock read from the checkpoint (say 16 updates)
    assert resumed.temperature(2, 16) == 1 and resumed.switch_epoch == 2
    before = Cooldown(5, 1, at_update=10)
    before.load_state_dict(Cooldown(5, 1, at_update=10).state_dict())  # saved before the switch
    assert before.temperature(1, 8) == 5 and before.temperature(2, 13) == 1
    # epoch 2 began after 13 updates, before the switch at 15; resumed at update 16 inside
    # it, it is still hot: the decision was the epoch's start's, not the resume's
    late = Cooldown(5, 1, at_update=15)
    late.temperature(1, 0)
    late.temperature(2, 13)
    again = Cooldown(5, 1, at_update=15)
    again.load_state_dict(late.state_dict())
    assert again.temperature(2, 16) == 5 and again.temperature(3, 26) == 1 and again.switch_epoch == 3
    with pytest.raises(ValueError, match="not cooldown"):
        before.load_state_dict({"schedule": "dpl"})
    for bad in ({"switch_epoch": 0, "last_epoch": 2}, {"switch_epoch": 3, "last_epoch": 2}, {"switch_epoch": None}):
        with pytest.raises(ValueError, match="inconsistent cooldown state"):
            before.load_state_dict({"schedule": "cooldown", **bad})


@pytest.mark.parametrize("start,end,update,option", [
    (0, 1, 10, "--sampling-temperature"), (5, float("nan"), 10, "--cooldown-temperature"),
    (5, -1, 10, "--cooldown-temperature"), (5, 1, 0, "--cooldown-update"), (5, 1, 2.5, "--cooldown-update"),
])
def test_bad_values_are_refused_naming_the_option(start, end, update, option):
    with pytest.raises(ValueError, match=option):
        Cooldown(start, end, update)


def test_shares_follow_the_temperature_formula():
    sizes = [20000, 4000, 100]
    for t in (1, 5, 100):
        expected = [n ** (1 / t) / sum(m ** (1 / t) for m in sizes) for n in sizes]
        assert shares(sizes, t) == pytest.approx(expected, rel=1e-12)
    assert shares(sizes, 1) == pytest.approx([n / sum(sizes) for n in sizes], rel=1e-12)
