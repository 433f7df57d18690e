"""Reference implementations, written as plainly as possible, for the tests to compare against.

``algorithm1_step`` is a line-by-line transcription of Algorithm 1 of the GradVac paper
(../shared/paper/gradvac-slides.txt): plain Python loops over groups k, tasks i and tasks j,
explicit gradient vectors, and an EMA dict keyed by (task i name, task j name, group name).
It shares nothing with the engine but ``visit_order`` (the random order of line 11, drawn
from (seed, step) so that every distributed worker agrees) and MAX_TARGET (the clamp of
pitfall 3). It is deliberately slow; use it on small layouts only.
"""
import math
from typing import Dict, Optional, Sequence, Tuple

import torch

from fairseq_gradvac.combiners import ParameterGroups, visit_order
from fairseq_gradvac.combiners.gradvac import MAX_TARGET

EmaKey = Tuple[str, str, str]


def algorithm1_step(
    grads: torch.Tensor,
    tasks: Sequence[str],
    groups: ParameterGroups,
    phi_hat: Dict[EmaKey, float],
    step: int,
    seed: int = 1,
    beta: float = 1e-2,
    apply_to: Optional[Sequence[str]] = None,
    fixed_target: Optional[float] = None,
) -> torch.Tensor:
    """One step (lines 7-20) of Algorithm 1; updates ``phi_hat`` in place, returns sum_i g'_i.

    ``grads[i]`` is task ``tasks[i]``'s flat gradient in ``groups``' layout; the batch B is
    ``tasks``, the set G is ``apply_to`` (None: all tasks). Computed in fp64.
    """
    K = len(tasks)
    order = visit_order(seed, step, K, len(groups))
    update = torch.zeros(groups.numel, dtype=torch.float64)
    for k in range(len(groups)):  # line 7: for theta_k in M
        lo, hi = groups.offsets[k], groups.offsets[k] + groups.sizes[k]
        group = groups.names[k]
        g = [grads[i, lo:hi].double() for i in range(K)]  # line 8
        g_mod = [g[i].clone() for i in range(K)]  # line 9: g'_ik <- g_ik
        for i in range(K):  # line 10: for T_i in G n B
            if apply_to is not None and tasks[i] not in apply_to:
                continue
            for j in order[k, i].tolist():  # line 11: T_j in B \ T_i, in random order
                assert j != i
                norm_i = torch.linalg.vector_norm(g_mod[i]).item()
                norm_j = torch.linalg.vector_norm(g[j]).item()
                if norm_i == 0.0 or norm_j == 0.0:
                    continue  # a task without tokens has no direction (pitfall 3)
                # line 12: the MODIFIED g'_ik against the ORIGINAL g_jk
                phi = torch.dot(g_mod[i], g[j]).item() / (norm_i * norm_j)
                phi = min(1.0, max(-1.0, phi))
                key = (tasks[i], tasks[j], group)
                target = fixed_target if fixed_target is not None else phi_hat.get(key, 0.0)
                # sqrt(1 - target^2) divides line 14: the target is clamped away from +-1,
                # and line 13 compares with the target line 14 can actually reach.
                target = min(MAX_TARGET, max(-MAX_TARGET, target))
                if phi < target:  # line 13
                    a = (
                        norm_i
                        * (target * math.sqrt(1 - phi * phi) - phi * math.sqrt(1 - target * target))
                        / (norm_j * math.sqrt(1 - target * target))
                    )
                    g_mod[i] = g_mod[i] + a * g[j]  # line 14
                if fixed_target is None:  # line 16: EVERY visit, phi from before line 14
                    phi_hat[key] = (1 - beta) * phi_hat.get(key, 0.0) + beta * phi
        total = torch.zeros(hi - lo, dtype=torch.float64)
        for i in range(K):  # line 19: update theta_k with sum_i g'_ik
            total = total + g_mod[i]
        update[lo:hi] = total
    return update


def pcgrad_step(grads: torch.Tensor, groups: ParameterGroups, step: int, seed: int = 1) -> torch.Tensor:
    """PCGrad (Yu et al. 2020, Algorithm 1) per group, visiting j in ``visit_order``; fp64."""
    K = grads.shape[0]
    order = visit_order(seed, step, K, len(groups))
    update = torch.zeros(groups.numel, dtype=torch.float64)
    for k in range(len(groups)):
        lo, hi = groups.offsets[k], groups.offsets[k] + groups.sizes[k]
        g = [grads[i, lo:hi].double() for i in range(K)]
        total = torch.zeros(hi - lo, dtype=torch.float64)
        for i in range(K):
            gi = g[i].clone()
            for j in order[k, i].tolist():
                dot = torch.dot(gi, g[j])
                if dot < 0:
                    gi = gi - dot / torch.dot(g[j], g[j]) * g[j]
            total = total + gi
        update[lo:hi] = total
    return update


# ---------------------------------------------------------------------------------------
# Test data: a small fairseq-like transformer and correlated per-task gradients.


class _Encoder(torch.nn.Module):
    def __init__(self, embed: torch.nn.Embedding, d: int, layers: int):
        super().__init__()
        self.embed_tokens = embed
        self.layers = torch.nn.ModuleList(
            torch.nn.TransformerEncoderLayer(d, 2, 2 * d, dropout=0.0, batch_first=True)
            for _ in range(layers)
        )
        self.layer_norm = torch.nn.LayerNorm(d)


class _Decoder(torch.nn.Module):
    def __init__(self, embed: torch.nn.Embedding, d: int, layers: int, vocab: int):
        super().__init__()
        self.embed_tokens = embed
        self.layers = torch.nn.ModuleList(
            torch.nn.TransformerDecoderLayer(d, 2, 2 * d, dropout=0.0, batch_first=True)
            for _ in range(layers)
        )
        self.layer_norm = torch.nn.LayerNorm(d)
        self.output_projection = torch.nn.Linear(d, vocab, bias=False)
        self.output_projection.weight = embed.weight  # tied, like --share-all-embeddings


class TinyTransformer(torch.nn.Module):
    """Parameter names like fairseq's ``transformer`` (encoder.layers.N..., decoder.layers.N...),
    with one embedding matrix shared by the encoder, the decoder and the output projection."""

    def __init__(self, vocab: int = 13, d: int = 8, layers: int = 2):
        super().__init__()
        torch.manual_seed(0)
        embed = torch.nn.Embedding(vocab, d)
        self.encoder = _Encoder(embed, d, layers)
        self.decoder = _Decoder(embed, d, layers, vocab)


def correlated_grads(
    gen: torch.Generator, num_tasks: int, groups: ParameterGroups, dtype=torch.float64
) -> torch.Tensor:
    """[K, P] gradients whose pairwise cosines vary by group and pair, from about -0.8 to 0.8,
    with norms spanning two orders of magnitude: every branch of lines 13-16 gets exercised."""
    base = torch.randn(groups.numel, generator=gen, dtype=torch.float64)
    mix = torch.empty(num_tasks, len(groups), dtype=torch.float64).uniform_(-2, 2, generator=gen)
    scale = 10 ** torch.empty(num_tasks, 1, dtype=torch.float64).uniform_(-1, 1, generator=gen)
    per_group = torch.repeat_interleave(mix, torch.tensor(groups.sizes), dim=1)
    noise = torch.randn(num_tasks, groups.numel, generator=gen, dtype=torch.float64)
    return (scale * (per_group * base + noise)).to(dtype)
