"""The cosine of two gradients from their dot product and norms: the one implementation that
GradVac's phi (Algorithm 1, line 12) and the recorded raw similarities (Part I) share."""
import torch


def cosine(dot: torch.Tensor, norm_a: torch.Tensor, norm_b: torch.Tensor) -> torch.Tensor:
    """a.b / (|a| |b|), clamped to [-1, 1] (rounding can leave it just outside).

    A zero norm gives 0 instead of a division by zero: callers that must tell "no
    direction" apart mask zero norms themselves.
    """
    tiny = torch.finfo(dot.dtype).tiny
    return (dot / norm_a.clamp_min(tiny) / norm_b.clamp_min(tiny)).clamp(-1, 1)


def gram_cosines(gram: torch.Tensor):
    """Cosines and norms of the gradients behind Gram matrices [..., K, K]:
    cos[..., i, j] = G_ij / sqrt(G_ii G_jj) (NaN where a gradient is zero) and norms [..., K]."""
    norms = gram.diagonal(dim1=-2, dim2=-1).clamp_min(0).sqrt()
    cos = cosine(gram, norms.unsqueeze(-1), norms.unsqueeze(-2))
    empty = (norms == 0).unsqueeze(-1) | (norms == 0).unsqueeze(-2)
    return cos.masked_fill(empty, float("nan")), norms
