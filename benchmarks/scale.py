"""Each method's update norm over the plain sum's when one direction's gradient shrinks.

Every method's weights are rescaled to the plain sum's convention (docs/methods/README.md:
weights on the mean-loss gradients summing to 1), which fixes the scale of the WEIGHTS, not
of the update: a method that puts most weight on the smallest gradient shrinks the whole
update with it. K conflicting mean-loss gradients (equal token counts), one of them scaled
by s; the table gives ||update(s)|| / ||plain sum(s)||, per method, median over draws.

    python benchmarks/scale.py --tasks 3 --scales 1,0.1,0.001,0 --draws 5
"""
import argparse
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.nash_solver import conflicting_rows  # noqa: E402
from fairseq_gradvac.combiners import ParameterGroups, build_combiner, gradient_methods  # noqa: E402


def ratios(method, k, scales, draws, size):
    """{scale: median over draws of ||update|| / ||plain sum||} with row 0 scaled."""
    out = {s: [] for s in scales}
    groups = ParameterGroups.from_sizes([size])
    tasks = [f"t{i}" for i in range(k)]
    for draw in range(draws):
        base = conflicting_rows(k, size, seed=draw)
        for s in scales:
            rows = base.clone()
            rows[0] *= s
            ones = torch.ones(k, dtype=torch.float64)
            update = build_combiner(method).combine(rows, tasks, groups, 0, losses=ones, ntokens=ones)
            out[s].append(float(update.norm() / rows.sum(0).norm()))
    return {s: statistics.median(v) for s, v in out.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=3)
    p.add_argument("--scales", default="1,0.1,0.001,0")
    p.add_argument("--draws", type=int, default=5)
    p.add_argument("--size", type=int, default=300, help="gradient entries per direction")
    p.add_argument("--methods", default="", help="comma-separated (default: every one)")
    a = p.parse_args()
    torch.set_num_threads(1)
    import logging
    logging.disable(logging.WARNING)  # the solvers' first-failure warnings (the fallbacks are the point here)
    import warnings
    warnings.filterwarnings("ignore")
    scales = [float(x) for x in a.scales.split(",")]
    methods = [m for m in a.methods.split(",") if m] or gradient_methods()
    print(f"||update|| / ||plain sum||, K = {a.tasks}, direction 0's gradient times s; median of {a.draws} draws")
    print("| method | " + " | ".join(f"s = {s:g}" for s in scales) + " |")
    print("|---|" + "---:|" * len(scales))
    for m in methods:
        r = ratios(m, a.tasks, scales, a.draws, a.size)
        print(f"| `{m}` | " + " | ".join(f"{r[s]:.3g}" for s in scales) + " |")


if __name__ == "__main__":
    main()
