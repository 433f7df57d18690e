"""Loss weighting: methods that read only the K per-direction losses (TorchJD's scalarizers),
so that their cost does not grow with K and no per-direction gradient is kept.

A scalarizer S(l_1, ..., l_K) of the directions' mean losses per token l_i has the gradient
sum_i c_i grad l_i, c = dS/dl (Kendall et al.'s, Liu et al.'s, ... update). fairseq backs
up one loss per micro-batch, summed over tokens, and divides the update by its N tokens. A
token of direction i whose loss is multiplied by

    m_i = c_i / pi_i,   pi_i: direction i's share of the epoch's target tokens,

gives (1/N) sum_i m_i grad L_i = sum_i c_i (n_i / (N pi_i)) grad l_i (L_i = n_i l_i, n_i
the update's tokens of direction i), and n_i / N is pi_i in expectation over the sampled
batches: the update is the scalarizer's, with each direction's factor n_i / (N pi_i)
(about 1; 0 for a direction absent from the update). Every worker multiplies by the same
m, one backward per micro-batch as stock fairseq.

Where c depends on the current losses (FAMO's normaliser, STCH, the geometric mean), the
losses are not known before the backward that needs them: c is evaluated at the last
measured loss of each direction (the previous update's, or the last update that held the
direction); the method's page says how far that is from c at the update's own losses.

After the update (only an update the optimizer applied: an fp16/AMP overflow leaves the
state as it was), the update's mean losses per direction, summed over workers, move the
method's state: learnable scalarizer parameters (UW, IMTL-L) take one step of their own
Adam on S at those losses; DWA accumulates them into its epoch averages; FAMO moves its
logits from the losses before and after the step. A direction absent from an update keeps
its last measured loss in every place a loss vector of all K directions is needed.
"""
import copy
import logging
import math
from typing import Optional, Sequence

import torch

from .combiner import Combiner

logger = logging.getLogger(__name__)


def seed_of(args) -> int:
    """fairseq's --seed (the random weights' draws are seeded by it and the update)."""
    return int(getattr(args, "seed", 1) or 1)


class LossWeighting(Combiner):
    """Base of the loss-weighting methods: a TorchJD scalarizer over all training directions,
    its weights c = dS/dl, and its state moved by the losses of each applied update."""

    needs_rows = False  # no per-direction gradient rows: the task weighs each token's loss
    needs_gram = False
    mean_losses = True
    # the losses after the optimizer step on the same batches (FAMO), from one more forward
    post_step_losses = False
    # the learnable scalarizer parameters take their own Adam step (UW, IMTL-L)
    learnable = False
    lr_option = "--loss-weighting-lr"  # the option of the learned weights' rate (FAMO: its own)

    def __init__(self, directions: Sequence[str], seed: int = 1, lr: float = 0.025):
        super().__init__()
        directions = list(directions)
        if not directions or len(set(directions)) != len(directions):
            raise ValueError(f"training directions must be unique and at least one, got {directions}")
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"{self.lr_option}: {self.name}'s learning rate must be a finite number > 0, got {lr}")
        self.task_names = directions
        self.seed = int(seed)
        self.lr = lr
        self.scalarizer = self.build(len(directions)).double()
        # the last measured mean loss per token of each direction (NaN: never measured)
        self.losses = torch.full((len(directions),), math.nan, dtype=torch.float64)
        self.updates = 0  # updates observed
        self.epoch: Optional[int] = None  # the epoch under way (DWA's clock)
        self.skipped = 0  # updates with a non-finite loss: no state change
        self._optimizer = (torch.optim.Adam(self.scalarizer.parameters(), lr=lr)
                           if self.learnable else None)

    @classmethod
    def from_args(cls, args, directions):
        return cls(directions, seed=seed_of(args))

    def build(self, k: int) -> torch.nn.Module:
        """TorchJD's scalarizer for ``k`` values."""
        raise NotImplementedError

    # ------------------------------------------------------------------ weights
    def held(self) -> torch.Tensor:
        """The loss vector of all K directions the weights are evaluated at: each direction's
        last measured loss; one never measured takes the mean of those measured (all equal
        before the first update: every method then weighs the directions alike)."""
        measured = ~torch.isnan(self.losses)
        fill = self.losses[measured].mean() if measured.any() else torch.tensor(1.0, dtype=torch.float64)
        return torch.where(measured, self.losses, fill)

    def weights(self, step: int, losses: Optional[torch.Tensor] = None) -> torch.Tensor:
        """c = dS/dl / sum(dS/dl) [K] (float64, CPU) at ``losses`` (default: held()), for
        update ``step``. Rescaled to sum 1, as every method's weights (docs/methods): the
        scalarizers' own sums differ (DWA: K, STCH: 1/K, UW: K/2 at the start), and the
        plain sum's, sum_i n_i / N, is 1, so --lr and --clip-norm mean the same for every
        method. The scalarizer is not changed (a copy is evaluated: DWA and FAMO record
        what they are called on). Random weights are drawn from the CPU generator seeded by
        --seed and the update (the same on every worker and after a resume), restored after."""
        values = (self.held() if losses is None else losses).detach().double().clone().requires_grad_(True)
        probe = copy.deepcopy(self.scalarizer)
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            torch.default_generator.manual_seed(self.seed * 1_000_003 + int(step))  # (not CUDA's generators)
            (c,) = torch.autograd.grad(probe(values), values)
        c = c.detach()
        total = c.sum()
        return c / total if total > 0 else c

    def multipliers(self, step: int, token_shares: torch.Tensor) -> torch.Tensor:
        """m_i = c_i / pi_i [K]: what the task multiplies direction i's token losses by in
        update ``step``; ``token_shares``: pi, each direction's share of the epoch's tokens
        (0 for a direction the epoch does not sample: its m is 0, it has no tokens)."""
        shares = token_shares.detach().double().cpu()
        if shares.shape != self.losses.shape:
            raise ValueError(f"expected {len(self.task_names)} token shares, got {tuple(shares.shape)}")
        c = self.weights(step)
        return torch.where(shares > 0, c / shares.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(c))

    def current(self, losses: torch.Tensor, ntokens: torch.Tensor) -> torch.Tensor:
        """The loss vector of an update with these token-summed losses and counts [K]: each
        measured direction's mean loss per token, the others' held() loss."""
        losses, ntokens = losses.detach().double().cpu(), ntokens.detach().double().cpu()
        return torch.where(ntokens > 0, losses / ntokens.clamp_min(1), self.held())

    # ------------------------------------------------------------------ state
    def observe(self, losses: torch.Tensor, ntokens: torch.Tensor, post: Optional[torch.Tensor] = None,
                post_ntokens: Optional[torch.Tensor] = None) -> bool:
        """An applied update's token-summed losses and token counts per direction [K] (summed
        over workers), and with ``post_step_losses`` the same on the same batches after the
        step: the state moves. Returns False (state untouched, counted, warned once) when a
        measured loss is not finite."""
        losses, ntokens = losses.detach().double().cpu(), ntokens.detach().double().cpu()
        measured = ntokens > 0
        mean = losses / ntokens.clamp_min(1)
        after = None
        if self.post_step_losses:
            if post is None or post_ntokens is None:
                raise ValueError(f"{self.name} needs the losses after the step")
            after = post.detach().double().cpu() / post_ntokens.detach().double().cpu().clamp_min(1)
        finite = bool(torch.isfinite(mean[measured]).all()) and (
            after is None or bool(torch.isfinite(after[measured]).all()))
        if not finite:
            if not self.skipped:
                logger.warning(f"{self.name}: a direction's loss is not finite at update {self.updates + 1}; "
                               "the weights' state is left as it was (further cases are counted, not warned)")
            self.skipped += 1
            return False
        current = self.current(losses, ntokens)
        if after is not None:
            after = torch.where(measured, after, current)
        self._observe(current, after)
        self.losses = torch.where(measured, mean, self.losses)
        self.updates += 1
        return True

    def _observe(self, current: torch.Tensor, after: Optional[torch.Tensor]) -> None:
        """Move the scalarizer's state with the update's losses of all K directions."""
        value = self.scalarizer(current)  # (DWA adds them to its epoch's sums)
        if self._optimizer is not None:
            # their own Adam on S at the update's losses: d/ds of S is a function of the
            # losses only, exact here (no lag)
            params = list(self.scalarizer.parameters())
            grads = torch.autograd.grad(value, params)
            for p, g in zip(params, grads):
                p.grad = g
            self._optimizer.step()
            self._optimizer.zero_grad(set_to_none=True)

    def begin_epoch(self, epoch: int) -> None:
        """fairseq begins ``epoch`` (also the epoch a resumed run continues)."""
        self.epoch = int(epoch)

    def state_dict(self) -> dict:
        state = super().state_dict()
        state.update(losses=self.losses.clone(), updates=self.updates, epoch=self.epoch, skipped=self.skipped,
                     scalarizer={k: v.clone() for k, v in self.scalarizer.state_dict().items()})
        if self._optimizer is not None:
            state["optimizer"] = copy.deepcopy(self._optimizer.state_dict())
        return state

    def _check_state(self, state: dict) -> None:
        super()._check_state(state)
        if list(state["task_names"]) != self.task_names:
            raise ValueError(
                f"the checkpoint's {self.name} state weighs the directions "
                f"{', '.join(state['task_names'])}, this run trains {', '.join(self.task_names)}; "
                "pass --reset-optimizer to start the weights afresh")

    def _load(self, state: dict) -> None:
        self.losses = state["losses"].clone().double()
        self.updates, self.epoch, self.skipped = int(state["updates"]), state["epoch"], int(state["skipped"])
        self.scalarizer.load_state_dict(state["scalarizer"])
        if self._optimizer is not None:
            self._optimizer.load_state_dict(state["optimizer"])
            for group in self._optimizer.param_groups:  # this run's --loss-weighting-lr, not the checkpoint's
                group["lr"] = self.lr

    def _weigh(self, gram, tasks, groups, step, losses, ntokens):
        raise TypeError(f"{self.name} weighs losses, not gradients: the task multiplies each token's loss "
                        "(LossWeighting.multipliers)")

