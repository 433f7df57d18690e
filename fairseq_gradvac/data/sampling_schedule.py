"""Sampling schedules: the sampling temperature of each epoch, as training goes.

Cooldown (Li, Xu, Tan, Murray & Khashabi, "Upsample or Upweight? Balanced Training on
Heavily Imbalanced Datasets", NAACL 2025, Section 4): sample at a high temperature first
(low-resource directions upsampled: faster convergence), then at a low one (less
overfitting of the small corpora); in their translation runs tau = 5 for the first 30k of
60k iterations, then tau = 1 (proportional), one switch, which beat denser schedules.
Shares follow fairseq's temperature sampling: direction i gets n_i^(1/T) / sum_j n_j^(1/T)
of the sampled rows.

fairseq draws an epoch's sample when the epoch starts, so here the temperature changes at
an epoch's start: the first epoch that starts at or after update ``at_update`` samples at
``end``, every later one too. Which epoch that was, and the last epoch begun, are the
schedule's state (saved in the checkpoint): a run resumed inside an epoch samples it as it
was sampled when it began, whatever the update count at the resume.
"""
import math
from typing import Optional

from fairseq.data.multilingual.sampling_method import temperature_sampling


def shares(sizes, temperature: float):
    """Each direction's share of the sampled rows at ``temperature`` (fairseq's formula)."""
    ratios = temperature_sampling(list(sizes), temperature)
    total = sum(ratios)
    return [r / total for r in ratios]


class Cooldown:
    """``start`` until the first epoch that starts at or after update ``at_update``, then ``end``."""

    def __init__(self, start: float, end: float, at_update: int):
        for option, value in (("--sampling-temperature", start), ("--cooldown-temperature", end)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{option}: Cooldown needs a finite temperature > 0, got {value}")
        if not (isinstance(at_update, int) and at_update >= 1):
            raise ValueError(f"--cooldown-update: Cooldown needs an update number >= 1, got {at_update}")
        self.start, self.end, self.at_update = float(start), float(end), at_update
        self.switch_epoch: Optional[int] = None  # the first epoch sampled at ``end``
        self.last_epoch = 0  # the last epoch whose temperature was decided

    def temperature(self, epoch: int, updates_done: int) -> float:
        """The temperature of ``epoch``; an epoch not begun before starts now, after
        ``updates_done`` updates."""
        if epoch > self.last_epoch:
            if self.switch_epoch is None and updates_done >= self.at_update:
                self.switch_epoch = epoch
            self.last_epoch = epoch
        return self.end if self.switch_epoch is not None and epoch >= self.switch_epoch else self.start

    def state_dict(self) -> dict:
        return {"schedule": "cooldown", "switch_epoch": self.switch_epoch, "last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict) -> None:
        if state.get("schedule") != "cooldown":
            raise ValueError(f"the checkpoint's sampling schedule is {state.get('schedule')!r}, not cooldown")
        switch, last = state.get("switch_epoch"), state.get("last_epoch")
        if not (isinstance(last, int) and last >= 0) or (
                switch is not None and not (isinstance(switch, int) and 1 <= switch <= last)):
            raise ValueError(f"inconsistent cooldown state: switch epoch {switch!r}, last epoch {last!r}")
        self.switch_epoch, self.last_epoch = switch, last
