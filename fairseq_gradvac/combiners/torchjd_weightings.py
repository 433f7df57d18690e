"""The stateless methods TorchJD implements as Gramian weightings, one registration each.

Each maps a group's mean-loss Gramian to task weights with TorchJD's own class; the scale and
per-token normalisation are the adapter's (gramian.py), the non-finite fallback every
method's (Combiner.weigh).
"""
from .combiner import register_combiner
from .gramian import TorchJDWeighting, check_number, torchjd_weighting
from .options import finite_float


@register_combiner("upgrad")
class UPGrad(TorchJDWeighting):
    """UPGrad (Quinton & Rey, 2024): each gradient projected onto the dual cone of all the
    task gradients (a QP per task), the projections averaged: no task's loss goes up."""

    def __init__(self):
        super().__init__(torchjd_weighting(self.name, "UPGradWeighting"))


@register_combiner("dualproj")
class DualProj(TorchJDWeighting):
    """DualProj (Quinton & Rey, 2024): the mean gradient projected onto the dual cone of the
    task gradients (one QP)."""

    def __init__(self):
        super().__init__(torchjd_weighting(self.name, "DualProjWeighting"))


@register_combiner("cagrad")
class CAGrad(TorchJDWeighting):
    """CAGrad (Liu et al., NeurIPS 2021): the update that maximizes the worst task's
    improvement within a ball of radius c ||g_0|| around the mean gradient g_0."""

    def __init__(self, c: float = 0.4):
        check_number("cagrad", "--cagrad-c", c, 0.0, strict=False)
        super().__init__(torchjd_weighting(self.name, "CAGradWeighting", c=c))
        self.c = c

    @classmethod
    def add_args(cls, parser):
        parser.add_argument("--cagrad-c", type=finite_float, default=0.4,
                            help="CAGrad's radius c >= 0 (0: the mean gradient; paper: 0.4)")

    @classmethod
    def from_args(cls, args, directions):
        return cls(c=args.cagrad_c)


@register_combiner("imtl_g")
class IMTLG(TorchJDWeighting):
    """IMTL-G (Liu et al., ICLR 2021): the update whose projections on every unit task
    gradient are equal (weights summing to 1, possibly negative)."""

    def __init__(self):
        super().__init__(torchjd_weighting(self.name, "IMTLGWeighting"))


@register_combiner("aligned_mtl")
class AlignedMTL(TorchJDWeighting):
    """Aligned-MTL (Senushkin et al., CVPR 2023): the task gradients made orthogonal with
    equal norms (the Gramian's eigendecomposition) before they are summed."""

    def __init__(self):
        super().__init__(torchjd_weighting(self.name, "AlignedMTLWeighting"))


@register_combiner("fairgrad")
class FairGrad(TorchJDWeighting):
    """FairGrad (Ban & Ji, ICML 2024): alpha-fair utility maximization, G w = w^(-1/alpha)
    (alpha = 1: proportional fairness, Nash-MTL's solution; alpha -> inf: max-min)."""

    def __init__(self, alpha: float = 1.0):
        check_number("fairgrad", "--fairgrad-alpha", alpha, 0.0, strict=True)
        super().__init__(torchjd_weighting(self.name, "FairGradWeighting", alpha=alpha))
        self.alpha = alpha

    @classmethod
    def add_args(cls, parser):
        parser.add_argument("--fairgrad-alpha", type=finite_float, default=1.0,
                            help="FairGrad's fairness alpha > 0 (1: proportional fairness)")

    @classmethod
    def from_args(cls, args, directions):
        return cls(alpha=args.fairgrad_alpha)
