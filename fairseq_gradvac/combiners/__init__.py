"""Gradient combination in pure PyTorch (no fairseq import): GradVac and its baselines."""
from .combiner import Combiner, StepReport, available_combiners, build_combiner, combiner_class, gradient_methods
from .gradnorm import GradNorm
from .gradvac import GradVac, PCGrad, vaccinate, visit_order
from .groups import GRANULARITIES, ParameterGroups
from .mgda import MGDA, min_norm_weights
from .sum import SumCombiner
from . import config, cr_mogm, nash_mtl, scalarizers, torchjd_weightings  # noqa: F401 (they register themselves)

__all__ = [
    "Combiner", "StepReport", "SumCombiner", "GradVac", "PCGrad", "MGDA", "GradNorm",
    "ParameterGroups", "GRANULARITIES", "available_combiners", "build_combiner", "gradient_methods",
    "vaccinate", "visit_order", "min_norm_weights",
]
