"""ConFIG (Liu et al., ICLR 2025), from the Gram matrix."""
import torch

from .combiner import register_combiner
from .gramian import GramianWeighting


@register_combiner("config")
class ConFIG(GramianWeighting):
    """ConFIG: the direction u with equal positive cosine to every task gradient (the
    pseudo-inverse of the unit gradients applied to a vector of ones), of length
    sum_i g_i . u; divided by K here (the mean, not the sum, of the projections).

    TorchJD writes it on the Jacobian (an Aggregator, not a Weighting): pinv(U) 1 for the
    unit rows U. Its Gram form, with d_i = ||g_i||, U U^T = G / (d d^T) and
    pinv(U) = U^T pinv(U U^T): c = pinv(U U^T) 1, u = U^T c / ||U^T c||,
    ||U^T c||^2 = c^T U U^T c, and the update is sum_j w_j g_j with
    w_j = (sum_i (G D^-1 c)_i) c_j / (||U^T c||^2 d_j). A zero gradient counts as a zero
    unit row, as in TorchJD.
    """

    def group_weights(self, gram, group, rows):
        d = gram.diagonal().clamp_min(0).sqrt()
        inv_d = torch.where(d > 0, 1 / torch.where(d > 0, d, torch.ones_like(d)), torch.zeros_like(d))
        units = gram * inv_d[:, None] * inv_d[None, :]
        c = torch.linalg.pinv(units, hermitian=True) @ torch.ones_like(d)
        best_sq = c @ units @ c
        if not best_sq > 0:
            return torch.zeros_like(d)
        length = (gram @ (inv_d * c)).sum()
        return length * c * inv_d / best_sq

    def scale(self, w):
        return w / w.shape[-1]
