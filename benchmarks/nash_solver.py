"""How often Nash-MTL's solves reach the bargaining condition G alpha = 1 / alpha, fresh (alpha
starting at 1), on conflicting rows: TorchJD's solver on the trace-1 Gramian (what the plugin
passed before), TorchJD as the plugin now calls it (NashMTL.torchjd_solve: the Gramian at
trace nash_mtl.SOLVER_SCALE, started above its solution), and the plugin's whole solve (that,
then the exact Newton solve). Counts of solves whose residual max_i |alpha_i (G alpha)_i - 1|
is within alpha_fair.TOLERANCE.

    python benchmarks/nash_solver.py --tasks 3,5,8,16 --draws 30
"""
import argparse
import os
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a clone

from fairseq_gradvac.combiners import ParameterGroups, alpha_fair, build_combiner  # noqa: E402
from fairseq_gradvac.combiners.gramian import gram_factor, torchjd_weighting  # noqa: E402


def conflicting_rows(k, p, seed):
    """A shared direction, task-specific parts, a quarter of the tasks pulling against the others."""
    gen = torch.Generator().manual_seed(seed)
    shared = torch.randn(p, generator=gen, dtype=torch.float64)
    rows = 0.6 * shared + torch.randn(k, p, generator=gen, dtype=torch.float64)
    rows[: max(1, k // 4)] -= 1.2 * shared
    return rows


def torchjd_alone(gram):
    """TorchJD's solver as a user of it gets it, on the trace-1 Gramian, from alpha = 1."""
    solver = torchjd_weighting("nash_mtl", "NashMTL", n_tasks=gram.shape[0], max_norm=0.0).weighting
    return solver(gram_factor(gram)).double()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default="3,5,8,16")
    p.add_argument("--draws", type=int, default=30)
    p.add_argument("--size", type=int, default=300, help="gradient entries per task")
    a = p.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")  # cvxpy: the problem is not DPP
    print(f"fresh Nash-MTL solves within residual {alpha_fair.TOLERANCE:g}, of {a.draws} draws per K")
    print(f"{'K':>3} | {'TorchJD, trace 1':>16} | {'TorchJD as called':>17} | {'plugin':>6} | plugin ms/solve")
    for k in (int(x) for x in a.tasks.split(",")):
        counts = [0, 0, 0]
        seconds = 0.0
        for draw in range(a.draws):
            rows = conflicting_rows(k, a.size, seed=1000 * k + draw)
            gram = rows @ rows.T
            gram = gram / gram.trace()
            ones = torch.ones(k, dtype=torch.float64)
            counts[0] += alpha_fair.residual(gram, torchjd_alone(gram)) <= alpha_fair.TOLERANCE
            first = build_combiner("nash_mtl").torchjd_solve(gram, ones)
            counts[1] += alpha_fair.residual(gram, first) <= alpha_fair.TOLERANCE
            combiner = build_combiner("nash_mtl")
            start = time.perf_counter()
            combiner.combine(rows, [f"t{i}" for i in range(k)], ParameterGroups.from_sizes([a.size]), 0)
            seconds += time.perf_counter() - start
            counts[2] += combiner.last_report.failed_solves == 0
        print(f"{k:>3} | {counts[0]:>16} | {counts[1]:>17} | {counts[2]:>6} | {1000 * seconds / a.draws:.0f}")


if __name__ == "__main__":
    main()
