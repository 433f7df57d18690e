"""Time each combiner's K x K part (weigh: the weights from the per-group Gram matrices) at
K = 8, 50, 200 directions on the transformer-base layout's groups.

A step of every Gram-based method is two passes over the K x P rows (the Gram matrices and
the weighted sum, benchmarks/combine.py) plus this part, which depends on K and the number
of groups but not on P. At K = 200 the rows of transformer base (60.5M parameters) are
48 GB of fp32, more than a workstation holds, so the passes are timed by combine.py where
they fit and this part is timed here on its own, side by side with one plain sum of the
rows where they fit (--sum-up-to). TorchJD's methods run a solver per group on the host
(a QP for UPGrad/DualProj, a cone program for CAGrad, scipy for FairGrad, a sequence of
convex programs for Nash-MTL): that is what grows with K.

  python benchmarks/weigh.py                          # all_layer, K = 8,50,200
  python benchmarks/weigh.py --tasks 8 --methods upgrad,mgda --reps 3
"""
import argparse
import datetime
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.combine import build_model, make_grads  # noqa: E402
from fairseq_gradvac.combiners import ParameterGroups, build_combiner, gradient_methods  # noqa: E402


def gram_matrices(num_groups: int, k: int, seed: int = 0) -> torch.Tensor:
    """Gram matrices [num_groups, K, K] of conflicting rows (as combine.py's), 1024 columns
    per group: the solvers see what a real step gives them, a PSD matrix of rank K."""
    rows = make_grads(k, num_groups * 1024, torch.device("cpu"), seed).view(k, num_groups, 1024)
    return torch.einsum("igp,jgp->gij", rows, rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="8,50,200", help="comma-separated K")
    parser.add_argument("--granularity", default="all_layer")
    parser.add_argument("--methods", default="", help="comma-separated combiners (default: every one)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--sum-up-to", type=int, default=8,
                        help="time one plain sum of the K x P rows for K up to this (making the rows takes "
                             "2 K x P x 4 bytes: 24 GB at K = 50 on transformer base)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="the small layout of combine.py --quick")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = [m for m in args.methods.split(",") if m] or gradient_methods()
    model, source = build_model(args.quick)
    groups = ParameterGroups.from_named_parameters(list(model.named_parameters()), args.granularity)
    print(f"# benchmarks/weigh.py {' '.join(sys.argv[1:])}")
    print(f"# {datetime.date.today()}  torch {torch.__version__}  {platform.processor() or platform.machine()}  "
          f"threads {torch.get_num_threads()}  load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"# layout: {source}, {groups.numel / 1e6:.1f}M parameters, {args.granularity}: {len(groups)} groups")
    print()
    print("| K | method | weigh ms (median) | x one plain sum |")
    print("|---:|---|---:|---:|")
    for k in (int(x) for x in args.tasks.split(",")):
        tasks = [f"d{i}" for i in range(k)]
        gram = gram_matrices(len(groups), k)
        ntokens = torch.linspace(500, 1500, k)
        losses = torch.linspace(2.0, 4.0, k)
        plain = None
        if k <= args.sum_up_to:
            rows = make_grads(k, groups.numel, torch.device("cpu"))
            times = []
            for _ in range(args.reps + 1):
                start = time.perf_counter()
                rows.sum(0)
                times.append(time.perf_counter() - start)
            plain = statistics.median(times[1:])
            del rows
            print(f"| {k} | (one plain sum of the rows) | {plain * 1e3:.1f} | 1.00 |")
        for name in methods:
            combiner = build_combiner(name)
            times = []
            for step in range(args.reps + 1):  # the first call builds solvers: a warm-up
                start = time.perf_counter()
                combiner.weigh(gram, tasks, groups, step, losses=losses, ntokens=ntokens)
                combiner.commit(torch.ones((), dtype=torch.bool))
                times.append(time.perf_counter() - start)
            t = statistics.median(times[1:])
            ratio = f"{t / plain:.2f}" if plain else ""
            print(f"| {k} | {name} | {t * 1e3:.1f} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
