"""Time MGDA's min-norm solver against Frank-Wolfe, side by side, on batches of groups.

  wolfe         fairseq_gradvac.combiners.mgda.min_norm_weights (Wolfe's algorithm, exact)
  frank-wolfe   Sener & Koltun's Algorithm 2, 100 iterations, all groups at once (the
                engine's solver before Wolfe's; not exact on a face of the simplex)

Gram matrices of K conflicting gradients of spread norms, a third of the groups in few
dimensions (tests/unit/combiners/test_baselines.py's hard family). Medians over --reps, the two
solvers interleaved rep by rep (the machine may be shared).

  OMP_NUM_THREADS=1 python benchmarks/min_norm.py
  python benchmarks/min_norm.py --cases 252x16 --reps 3
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fairseq_gradvac.combiners.mgda import min_norm_weights  # noqa: E402


def frank_wolfe(gram, iterations=100):
    """Sener & Koltun's Frank-Wolfe with exact line search, all groups at once."""
    n, k, _ = gram.shape
    gram = gram / gram.diagonal(dim1=1, dim2=2).amax(-1)[:, None, None]
    alpha = gram.new_full((n, k), 1.0 / k)
    diag = gram.diagonal(dim1=1, dim2=2)
    eye = torch.eye(k, dtype=gram.dtype)
    for _ in range(iterations):
        ga = torch.bmm(gram, alpha.unsqueeze(-1)).squeeze(-1)
        t = ga.argmin(-1, keepdim=True)
        xx, xt, tt = (alpha * ga).sum(-1), ga.gather(1, t).squeeze(1), diag.gather(1, t).squeeze(1)
        dist = xx - 2 * xt + tt
        gamma = torch.where(dist > 0, (xx - xt) / dist.clamp_min(torch.finfo(gram.dtype).tiny), 0.0)
        alpha = (1 - gamma.clamp(0, 1).unsqueeze(-1)) * alpha + gamma.clamp(0, 1).unsqueeze(-1) * eye[t.squeeze(1)]
    return alpha


def grams(groups, k, seed=0, dim=60):
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(groups, k, dim, generator=gen, dtype=torch.float64)
    g[: groups // 3, :, 5:] = 0  # gradients spanning 5 dimensions: singular Gram matrices
    g[:, 1] -= 1.5 * g[:, 0]
    g = g * 10 ** (2 * torch.rand(groups, k, 1, generator=gen, dtype=torch.float64) - 1)
    return (g @ g.transpose(1, 2)).float()  # the engine's Gram matrices are fp32


def excess(alpha, gram):
    """max over groups of ||x||^2 - min_m (G alpha)_m, relative to max ||g_i||^2: the duality
    gap, 0 at the minimum."""
    gram = gram.double()
    alpha = alpha.double()
    ga = torch.einsum("nij,nj->ni", gram, alpha)
    gap = (alpha * ga).sum(1) - ga.amin(1)
    return (gap / gram.diagonal(dim1=1, dim2=2).amax(1)).max().item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cases", default="14x8,252x8,252x16,14x40,252x40", help="GROUPSxK, comma-separated")
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; times in ms (median of {args.reps})")
    print("| groups | K | frank-wolfe | wolfe | wolfe / frank-wolfe | gap frank-wolfe | gap wolfe |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for case in args.cases.split(","):
        groups, k = (int(v) for v in case.split("x"))
        gram = grams(groups, k)
        solvers = {"frank-wolfe": frank_wolfe, "wolfe": min_norm_weights}
        times = {name: [] for name in solvers}
        results = {name: solve(gram) for name, solve in solvers.items()}  # warm-up
        for _ in range(args.reps):
            for name, solve in solvers.items():
                start = time.perf_counter()
                solve(gram)
                times[name].append(1e3 * (time.perf_counter() - start))
        fw, wolfe = (statistics.median(times[name]) for name in solvers)
        print(f"| {groups} | {k} | {fw:.1f} | {wolfe:.1f} | {wolfe / fw:.2f} | "
              f"{excess(results['frank-wolfe'], gram):.1e} | {excess(results['wolfe'], gram):.1e} |")


if __name__ == "__main__":
    main()
