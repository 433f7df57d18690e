"""GradNorm (Chen et al., 2018): learned task weights that balance gradient norms.

The weights apply to the whole task gradients; the norms are only read on one shared
layer W (Chen et al. use the last shared layer): a module's parameters, contiguous in the
flat layout, whose Gram matrix weigh() gets through gram_columns (the per-group Gram
matrices of W's columns, summed). The initial loss L_i(0) of a task is its loss at the
first STEP it appears in, not at the start of an epoch.
"""
import math
from typing import Optional

import torch

from .combiner import Combiner, StepReport, register_combiner, token_counts
from .options import finite_float
from .parameter_names import layer_name


@register_combiner("gradnorm")
class GradNorm(Combiner):
    """Update sum_i w_i grad(L_i) on the per-task mean losses L_i (loss per token); then move
    w towards w_i ||grad_W L_i|| = mean_j(w_j ||grad_W L_j||) r_i^alpha (Chen et al., Eq. 2).

    r_i = (L_i / L_i(0)) / mean_j(L_j / L_j(0)). grad(L_i) = g_i / n_i: the rows are
    gradients of token-summed losses, and balancing their norms w_i n_i ||grad_W L_i||
    would undo temperature sampling. The weights of the tasks present in a step are
    renormalized to sum to the number of those tasks. Without token counts (ntokens None)
    the rows count as mean-loss gradients.
    """

    def __init__(self, alpha: float = 1.5, lr: float = 0.025, layer: Optional[str] = None):
        """``layer``: the parameter or module (name prefix, e.g. ``decoder.layers.5``) whose
        gradient norms are balanced; None: the last parameter group."""
        super().__init__()
        # written so that NaN fails too (every comparison with NaN is False)
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"GradNorm's alpha must be a finite number >= 0, got {alpha}")
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"GradNorm's lr must be a finite number > 0, got {lr}")
        self.alpha = alpha
        self.lr = lr
        self.layer = layer
        self.weights = torch.zeros(0)  # rows = task_names
        self.initial_loss = torch.zeros(0)
        self._pending = None  # (rows, new weights, initial losses) of the last weigh()

    mean_losses = True

    @classmethod
    def add_args(cls, parser):
        # fmt: off
        parser.add_argument("--gradnorm-alpha", type=finite_float, default=1.5,
                            help="GradNorm's asymmetry alpha")
        parser.add_argument("--gradnorm-lr", type=finite_float, default=0.025,
                            help="learning rate of GradNorm's task weights")
        parser.add_argument("--gradnorm-layer", default=None, metavar="NAME",
                            help="the layer whose gradient norms GradNorm balances: a module or "
                                 "parameter name, e.g. decoder.layers.0 (default: the last decoder "
                                 "layer, the last shared layer as in Chen et al.); the weights "
                                 "apply to the whole gradients whatever --combine-granularity")
        # fmt: on

    @classmethod
    def from_args(cls, args, directions):
        layer = args.gradnorm_layer
        if layer is None:
            if getattr(args, "decoder_layers", None) is None:
                raise ValueError("--gradnorm-layer: this model has no --decoder-layers; "
                                 "name the layer whose gradient norms GradNorm balances")
            layer = layer_name("decoder", args.decoder_layers - 1)
        return cls(alpha=args.gradnorm_alpha, lr=args.gradnorm_lr, layer=layer)

    def check_groups(self, groups):
        """The layer GradNorm measures must exist: say so at start-up, not at the first update."""
        try:
            self.gram_columns(groups)
        except ValueError as e:
            raise ValueError(f"--gradnorm-layer {self.layer}: {e}") from None

    def _prepare_state(self, device):
        n = len(self.task_names)
        old_w, old_l = self.weights.to(device), self.initial_loss.to(device)
        self.weights = torch.ones(n, device=device)
        self.initial_loss = torch.full((n,), float("nan"), device=device)
        self.weights[: old_w.numel()] = old_w
        self.initial_loss[: old_l.numel()] = old_l

    def gram_columns(self, groups):
        if self.layer is None:
            return groups.offsets[-1], groups.numel
        return groups.columns(self.layer)

    def _weigh(self, gram, tasks, groups, step, losses, ntokens):
        if losses is None or losses.shape != (len(tasks),):
            raise ValueError("gradnorm needs the per-task losses of this step, shape [K]")
        device = gram.device
        rows = self._rows(tasks)
        self._prepare_state(device)
        idx = torch.tensor(rows, device=device)
        n = token_counts(ntokens, len(tasks), gram)
        # ||grad_W L_i|| of the mean loss L_i on the measured layer W: ||g_iW|| / n_i, with
        # ||g_iW||^2 the sum over groups of the Gram matrices of W's columns (gram_columns)
        norms = gram.sum(0).diagonal().clamp_min(0).sqrt() / n
        losses = losses.detach().float().to(device)

        # The stored weights of the tasks present may not sum to K when the set of tasks
        # changes between steps: renormalize before use, so the update keeps the scale of
        # the plain sum.
        w = self.weights[idx]
        w = w * len(tasks) / w.sum()
        # A NaN/Inf loss leaves the weights alone (a non-finite Gram: Combiner.weigh's rule);
        # commit() checks the update, so an overflow outside the measured group leaves them
        # alone too (pitfall 6).
        finite = torch.isfinite(losses).all()
        initial = torch.where(torch.isnan(self.initial_loss[idx]), losses, self.initial_loss[idx])
        ratio = losses / initial.clamp_min(torch.finfo(torch.float32).tiny)
        rel = ratio / ratio.mean().clamp_min(torch.finfo(torch.float32).tiny)
        weighted = w * norms
        target = weighted.mean() * rel.pow(self.alpha)  # a constant in the GradNorm loss
        # d/dw_i sum_j |w_j n_j - target_j| = sign(.) n_i, divided by the mean norm so the
        # step does not depend on the loss scale.
        step_w = torch.sign(weighted - target) * norms / norms.mean().clamp_min(torch.finfo(torch.float32).tiny)
        new_w = (w - self.lr * step_w).clamp_min(1e-3)
        new_w = (new_w * len(tasks) / new_w.sum()).to(self.weights.dtype)  # fp64 gradients: fp64 math
        self._pending = (idx, new_w, initial)
        self.last_report = StepReport(tasks, groups.names, finite, weights=w)
        # w_i weighs the mean-loss gradient g_i / n_i: row weight w_i (N / K) / n_i, N
        # fairseq's divisor (MGDA's docstring: the division by N then leaves
        # sum_i (w_i / K) grad(L_i / n_i)).
        return (w * (self._divisor(n) / len(tasks) / n)).expand(len(groups), -1)

    def _commit(self, finite):
        idx, new_w, initial = self._pending
        self._pending = None
        self.weights[idx] = torch.where(finite, new_w, self.weights[idx])
        self.initial_loss[idx] = torch.where(finite, initial, self.initial_loss[idx])

    def state_dict(self) -> dict:
        state = super().state_dict()
        state.update(weights=self.weights.cpu().clone(), initial_loss=self.initial_loss.cpu().clone())
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.weights = state["weights"].clone()
        self.initial_loss = state["initial_loss"].clone()
