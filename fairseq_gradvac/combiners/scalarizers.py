"""The loss-weighting methods, one registration each, each TorchJD's scalarizer
(``torchjd.scalarization``) under the adapter of loss_weighting.py (per-token multipliers,
the state moved by each applied update's losses, the checkpoint)."""
import copy

import torch

from .combiner import register_combiner
from .gramian import check_number, torchjd_weighting
from .loss_weighting import LossWeighting, seed_of
from .options import finite_float

POST_STEP = ("forward", "next")  # FAMO's losses after the step


class _Learnable(LossWeighting):
    """UW and IMTL-L: one parameter per direction, learned by gradient descent on S."""

    learnable = True

    @classmethod
    def add_args(cls, parser):
        parser.add_argument("--loss-weighting-lr", type=finite_float, default=0.025, metavar="LR",
                            help="learning rate of the Adam that learns UW's log-variances / IMTL-L's "
                                 "log-scales from each update's losses (their own optimizer, not the "
                                 "model's)")

    @classmethod
    def from_args(cls, args, directions):
        return cls(directions, seed=seed_of(args), lr=args.loss_weighting_lr)


@register_combiner("uw")
class UW(_Learnable):
    """Uncertainty Weighting (Kendall et al., CVPR 2018): S = sum_i (e^-s_i l_i + s_i) / 2,
    c_i = e^-s_i / 2; s_i learned (its optimum: s_i = log l_i)."""

    def build(self, k):
        return torchjd_weighting(self.name, "UW", "scalarization", shape=k)


@register_combiner("imtl_l")
class IMTLL(_Learnable):
    """IMTL-L (Liu et al., ICLR 2021), the loss-balancing half of IMTL: S = sum_i (e^s_i l_i
    - s_i), c_i = e^s_i; s_i learned (its optimum: s_i = -log l_i)."""

    def build(self, k):
        return torchjd_weighting(self.name, "IMTLL", "scalarization", shape=k)


@register_combiner("rlw")
class RLW(LossWeighting):
    """Random loss weighting (Lin et al., TMLR 2022, Algorithm 2): c = softmax of K standard
    normal draws, drawn afresh for every update (seeded by --seed and the update)."""

    def build(self, k):
        return torchjd_weighting(self.name, "Random", "scalarization")


@register_combiner("geometric_mean")
class GeometricMean(LossWeighting):
    """The geometric mean of the losses (GLS, Chennupati et al., 2019): S = (prod_i l_i)^(1/K),
    c_i = S / (K l_i): a direction's weight is inverse to its loss."""

    def build(self, k):
        return torchjd_weighting(self.name, "GeometricMean", "scalarization")


@register_combiner("stch")
class STCH(LossWeighting):
    """Smooth Tchebycheff scalarization (Lin et al., ICML 2024): S = mu log sum_i
    exp(l_i / (K mu)) with uniform preferences 1/K, c = softmax(l / (K mu)) / K: the
    direction with the highest loss leads, more so as mu falls."""

    def __init__(self, directions, seed=1, mu: float = 1.0):
        check_number("stch", "--stch-mu", mu, 0.0, strict=True)
        self.mu = mu
        super().__init__(directions, seed=seed)

    def build(self, k):
        return torchjd_weighting(self.name, "STCH", "scalarization", mu=self.mu)

    @classmethod
    def add_args(cls, parser):
        parser.add_argument("--stch-mu", type=finite_float, default=1.0, metavar="MU",
                            help="STCH's smoothing mu (losses in nats per token; smaller: closer "
                                 "to the largest loss alone)")

    @classmethod
    def from_args(cls, args, directions):
        return cls(directions, seed=seed_of(args), mu=args.stch_mu)


@register_combiner("dwa")
class DWA(LossWeighting):
    """Dynamic Weight Average (Liu et al., CVPR 2019): c = K softmax(w / T), w_i the ratio of
    direction i's mean loss over the last two epochs (uniform during the first two). An
    epoch is fairseq's; its average is over the epoch's updates."""

    def __init__(self, directions, seed=1, temperature: float = 2.0):
        check_number("dwa", "--dwa-temperature", temperature, 0.0, strict=True)
        self.temperature = temperature
        super().__init__(directions, seed=seed)

    def build(self, k):
        return torchjd_weighting(self.name, "DWA", "scalarization", temperature=self.temperature)

    @classmethod
    def add_args(cls, parser):
        parser.add_argument("--dwa-temperature", type=finite_float, default=2.0, metavar="T",
                            help="DWA's temperature (the paper: 2)")

    @classmethod
    def from_args(cls, args, directions):
        return cls(directions, seed=seed_of(args), temperature=args.dwa_temperature)

    def begin_epoch(self, epoch):
        if self.epoch is not None and epoch > self.epoch:
            self.scalarizer.step()  # the finished epoch's average joins the history
        super().begin_epoch(epoch)

    # TorchJD's DWA keeps its history in plain attributes (torchjd 0.18)
    def state_dict(self):
        state = super().state_dict()
        s = self.scalarizer
        state["history"] = {"loss_sum": s._loss_sum, "batches": s._n_batches,
                            "averages": list(s._previous_averages)}
        return state

    def _load(self, state):
        super()._load(state)
        history = state["history"]
        self.scalarizer._loss_sum = history["loss_sum"]
        self.scalarizer._n_batches = history["batches"]
        self.scalarizer._previous_averages = list(history["averages"])


@register_combiner("famo")
class FAMO(LossWeighting):
    """FAMO (Liu et al., NeurIPS 2023): S = c sum_i z_i log(l_i - b_i), z = softmax(w),
    c = (sum_i z_i / (l_i - b_i))^-1 held constant: c_i = c z_i / (l_i - b_i), a convex
    combination. The logits w take an Adam step towards the directions whose log-loss fell
    least over the step: delta_i = log l_i(before) - log l_i(after), the losses after the
    step measured on the same batches by one more forward (--famo-post-step forward, the
    paper's code) or read from the next update's batches (next: no extra forward)."""

    lr_option = "--famo-lr"

    def __init__(self, directions, seed=1, lr: float = 0.025, weight_decay: float = 1e-3,
                 post_step: str = "forward"):
        if post_step not in POST_STEP:
            raise ValueError(f"--famo-post-step must be one of {', '.join(POST_STEP)}, got {post_step!r}")
        check_number("famo", "--famo-weight-decay", weight_decay, 0.0, strict=False)
        self.weight_decay = weight_decay
        self.post_step = post_step
        super().__init__(directions, seed=seed, lr=lr)

    @property
    def post_step_losses(self):
        return self.post_step == "forward"

    def build(self, k):
        return torchjd_weighting(self.name, "FAMO", "scalarization", shape=k, lr=self.lr,
                                 weight_decay=self.weight_decay)

    @classmethod
    def add_args(cls, parser):
        # fmt: off
        parser.add_argument("--famo-lr", type=finite_float, default=0.025, metavar="LR",
                            help="learning rate of FAMO's Adam on its logits (the paper: 0.025)")
        parser.add_argument("--famo-weight-decay", type=finite_float, default=1e-3, metavar="WD",
                            help="weight decay of FAMO's logits (the paper's Algorithm 2: 1e-3; its code: 1e-5)")
        parser.add_argument("--famo-post-step", choices=POST_STEP, default="forward",
                            help="where the losses after a step come from: forward: one more forward "
                                 "(no backward) on the update's batches after the optimizer step, as the "
                                 "paper's code; next: the next update's losses on its own batches (no "
                                 "extra cost, noisier)")
        # fmt: on

    @classmethod
    def from_args(cls, args, directions):
        return cls(directions, seed=seed_of(args), lr=args.famo_lr,
                   weight_decay=args.famo_weight_decay, post_step=args.famo_post_step)

    def _observe(self, current, after):
        famo = self.scalarizer
        if self.post_step == "forward":
            famo(current)  # the losses before the step
            famo.update(after)
        else:  # the change from the last update's losses to this one's
            if famo._prev_losses is not None:
                famo.update(current)
            famo(current)

    # TorchJD's FAMO keeps its Adam and the losses before the step in plain attributes (torchjd 0.18)
    def state_dict(self):
        state = super().state_dict()
        famo = self.scalarizer
        state["before"] = None if famo._prev_losses is None else famo._prev_losses.clone()
        state["logit_optimizer"] = None if famo._optimizer is None else copy.deepcopy(famo._optimizer.state_dict())
        return state

    def _load(self, state):
        super()._load(state)
        famo = self.scalarizer
        famo._prev_losses = None if state["before"] is None else state["before"].clone().double()
        famo._optimizer = None
        if state["logit_optimizer"] is not None:
            famo._optimizer = torch.optim.Adam([famo._w], lr=famo.lr, weight_decay=famo.weight_decay)
            famo._optimizer.load_state_dict(state["logit_optimizer"])
            for group in famo._optimizer.param_groups:  # this run's --famo-lr/-weight-decay
                group.update(lr=famo.lr, weight_decay=famo.weight_decay)

