"""How much MGDA's min-norm weights and update move when the Gram matrix moves by fp32
rounding, as a function of how aligned the gradients are: why 2 workers and 1 worker with
--update-freq 2 (the same rows, summed in another order) can end further apart under MGDA
than under the other methods. K gradients with pairwise cosine c (a shared part and
independent parts), the Gram matrix perturbed by a symmetric relative 1e-7 (fp32's rounding);
printed: median over draws of the relative change of alpha and of the update, over 1e-7.

    python benchmarks/mgda_conditioning.py --tasks 3,8 --cosines 0.5,0.9,0.985,0.999 --draws 20
"""
import argparse
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a clone

from fairseq_gradvac.combiners.mgda import min_norm_weights  # noqa: E402

EPS = 1e-7


def rows_with_cosine(k, p, cosine, gen):
    """K rows of norm about 1 whose pairwise cosines are about ``cosine`` (norms within 0.1%:
    the min-norm point lies inside the simplex, as for directions of similar loss scale)."""
    shared = torch.randn(p, generator=gen, dtype=torch.float64)
    own = torch.randn(k, p, generator=gen, dtype=torch.float64)
    rows = cosine ** 0.5 * shared / shared.norm() + (1 - cosine) ** 0.5 * own / own.norm(dim=1, keepdim=True)
    return rows * torch.linspace(1, 1.001, k, dtype=torch.float64)[:, None]


def amplification(k, cosine, draws, p=2000):
    """(alpha's, the update's) relative change over EPS, medians over draws."""
    gen = torch.Generator().manual_seed(k)
    moved_alpha, moved_update = [], []
    for _ in range(draws):
        rows = rows_with_cosine(k, p, cosine, gen)
        gram = rows @ rows.T
        noise = torch.randn(k, k, generator=gen, dtype=torch.float64)
        other = gram * (1 + EPS * (noise + noise.T) / 2)
        a, b = min_norm_weights(torch.stack([gram, other]))
        ua, ub = a @ rows, b @ rows
        moved_alpha.append(float((a - b).abs().max() / a.abs().max()) / EPS)
        moved_update.append(float((ua - ub).norm() / ua.norm()) / EPS)
    return statistics.median(moved_alpha), statistics.median(moved_update)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default="3,8")
    p.add_argument("--cosines", default="0.5,0.9,0.985,0.999")
    p.add_argument("--draws", type=int, default=20)
    a = p.parse_args()
    torch.set_num_threads(1)
    print(f"MGDA: relative change over a relative {EPS:g} change of the Gram matrix (median of {a.draws} draws)")
    print("| K | pairwise cosine | alpha | update |")
    print("|---:|---:|---:|---:|")
    for k in (int(x) for x in a.tasks.split(",")):
        for c in (float(x) for x in a.cosines.split(",")):
            alpha, update = amplification(k, c, a.draws)
            print(f"| {k} | {c:g} | {alpha:.3g} | {update:.3g} |")


if __name__ == "__main__":
    main()
