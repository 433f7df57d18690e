"""The noise floor of a per-direction gradient cosine: how many target tokens a direction's
batch needs before the cosine of two directions' gradients measures the pair, not the batch.

For a checkpoint, each direction's gradient (the checkpoint's criterion, summed over
tokens, dropout off: only the choice of sentences varies) is taken on independent random
draws of its training sentences holding about S target tokens, for each S of --sizes, and
--draws draws each. Per pair of directions, parameter group (--granularity, all_layer: the
groups GradVac works on) and size: the mean and the spread (standard deviation over draws)
of the cosine of two draws' gradients, against the pair's reference cosine in that group,
that of the gradients summed over all draws of the largest size. A small batch's cosine is
pulled towards 0 (its own noise is orthogonal to the other's) and spread out.

    python -m fairseq_gradvac.analysis.noise_floor RUN/checkpoint_*_2000.pt RUN/checkpoint_*_5000.pt \\
        --out docs/data/noise_floor --sizes 125,250,500,1000,2000,4000,8000,16000 --draws 4

writes noise_floor.csv (checkpoint update, size, pair, group, draw, cosine, reference),
summary.csv and noise_floor.png (per size, the mean over pairs and groups of the cosine's
spread and of its ratio to the reference); ``--out DIR --replot`` rebuilds the last two
from the first.
"""
import argparse
import csv
import itertools
import logging
import math
import os
import statistics
import sys

import numpy as np
import torch

from .plotting import Report, pyplot
from .probe import load

logger = logging.getLogger("fairseq_gradvac.analysis.noise_floor")


def _draw(dataset, tokens, rng):
    """Indices of random sentences of ``dataset`` until they hold ``tokens`` target tokens."""
    order = rng.permutation(len(dataset))
    sizes = np.asarray(dataset.sizes)
    target = sizes[:, 1] if sizes.ndim == 2 else sizes
    cut = int(np.searchsorted(np.cumsum(target[order]), tokens)) + 1
    return np.sort(order[:cut])


def _model(path, device):
    """The checkpoint's model (dropout off, training mode), criterion, training data sets by
    direction, and its number of updates."""
    from ..data.direction_batches import direction_of

    model, criterion, task, updates = load(path, device)
    datasets, _ = task.data_manager.load_split_datasets("train", True, epoch=1)
    return model, criterion, {direction_of(key): d for key, d in datasets}, updates


def gradients(model, criterion, dataset, groups, size, draws, seed, max_tokens, device):
    """The gradients (flat fp32, the groups' layout) of ``draws`` random batches of about
    ``size`` target tokens of one direction's ``dataset``."""
    from fairseq import utils
    from fairseq.data import data_utils

    out = []
    for r in range(draws):
        rng = np.random.default_rng([seed, size, r])
        indices, _ = dataset.filter_indices_by_size(_draw(dataset, size, rng), model.max_positions())
        model.zero_grad(set_to_none=True)
        for batch in data_utils.batch_by_size(indices, dataset.num_tokens, max_tokens=max_tokens):
            sample = dataset.collater([dataset[i] for i in batch])
            sample = utils.move_to_cuda(sample) if device.type == "cuda" else sample
            criterion(model, sample)[0].backward()
        out.append(groups.flatten([p.grad if p.grad is not None else torch.zeros_like(p) for p in groups.params])
                   .float().cpu())
    return out


def _cos(a, b):
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-30))


def cosines(grads, totals, groups):
    """Rows (pair, group, draw, cosine, reference) of one size: draw r of one direction
    against draw r of the other, in each group; the reference: ``totals``, each direction's
    gradients summed over the largest size's draws."""
    slices = [(name, slice(o, o + n)) for name, o, n in zip(groups.names, groups.offsets, groups.sizes)]
    rows = []
    for a, b in itertools.combinations(list(grads), 2):
        for name, part in slices:
            reference = _cos(totals[a][part], totals[b][part])
            for r, (ga, gb) in enumerate(zip(grads[a], grads[b])):
                rows.append((f"{a}:{b}", name, r, _cos(ga[part], gb[part]), reference))
    return rows


def measure(path, sizes, draws, directions=None, max_tokens=4000, seed=1, device=torch.device("cpu"),
            granularity="all_layer"):
    """Rows (update, size, pair, group, draw, cosine, reference) of one checkpoint; the sizes
    from the largest down (its totals are the references), one size's gradients at a time."""
    from ..combiners import ParameterGroups

    model, criterion, datasets, update = _model(path, device)
    directions = directions or list(datasets)
    groups = ParameterGroups.from_named_parameters(model.named_parameters(), granularity)
    rows, totals = [], None
    for size in sorted(sizes, reverse=True):
        grads = {d: gradients(model, criterion, datasets[d], groups, size, draws,
                              [seed, directions.index(d)], max_tokens, device) for d in directions}
        if totals is None:
            totals = {d: torch.stack(g).sum(0) for d, g in grads.items()}
        rows += [(update, size, *row) for row in cosines(grads, totals, groups)]
        logger.info(f"{path}: {len(directions)} directions x {draws} draws of {size} target tokens")
    return rows


def summarize(rows):
    """Per (update, size): the mean over pairs and groups of the cosine's spread (std over
    draws), and of the ratio of its mean to the reference (where |reference| >= 0.05)."""
    cells = {}
    for update, size, pair, group, _, cos, ref in rows:
        cells.setdefault((update, size, pair, group), ([], ref))[0].append(cos)
    out = {}
    for (update, size, _, _), (values, ref) in cells.items():
        spread = statistics.stdev(values) if len(values) > 1 else math.nan
        ratio = statistics.mean(values) / ref if abs(ref) >= 0.05 else math.nan
        out.setdefault((update, size), []).append((spread, ratio, abs(ref)))
    summary = []
    for (update, size), cell in sorted(out.items()):
        ratios = [r for _, r, _ in cell if not math.isnan(r)]
        summary.append((update, size, statistics.mean(s for s, _, _ in cell),
                        statistics.mean(ratios) if ratios else math.nan, statistics.mean(a for _, _, a in cell)))
    return summary


def draw(summary, report):
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for update in sorted({u for u, *_ in summary}):
        mine = [row for row in summary if row[0] == update]
        sizes = [row[1] for row in mine]
        left.plot(sizes, [row[2] for row in mine], marker="o", label=f"update {update}")
        left.plot(sizes, [row[4] for row in mine], linestyle=":", color=left.lines[-1].get_color(),
                  label=f"update {update}: mean |reference cosine|")
        right.plot(sizes, [row[3] for row in mine], marker="o", label=f"update {update}")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("target tokens per direction's batch")
        ax.grid(alpha=0.3)
    left.set_ylabel("std of the cosine over draws")
    left.set_title("noise: the cosine's spread between batches\n(mean over pairs and layers)", fontsize=10)
    right.axhline(1.0, color="grey", linewidth=0.8)
    right.set_ylabel("mean cosine / the pair's cosine")
    right.set_title("signal: how much of the pair's cosine a batch sees\n(pairs and layers with |cosine| >= 0.05)",
                    fontsize=10)
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    report.png("noise_floor.png", fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="*")
    ap.add_argument("--out", required=True)
    ap.add_argument("--replot", action="store_true",
                    help="no checkpoints: the summary and the figure again from OUT/noise_floor.csv")
    ap.add_argument("--sizes", default="125,250,500,1000,2000,4000,8000,16000",
                    help="target tokens per direction's batch, comma-separated")
    ap.add_argument("--draws", type=int, default=4, help="independent batches per direction and size (>= 2)")
    ap.add_argument("--directions", default=None, help="comma-separated (default: the model's training directions)")
    ap.add_argument("--max-tokens", type=int, default=4000, help="tokens per forward pass (a batch is accumulated)")
    ap.add_argument("--granularity", default="all_layer", help="the parameter groups [all_layer: GradVac's]")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cpu", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", level=logging.INFO)
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    if args.draws < 2 or not sizes or sizes[0] < 1:
        ap.error("--draws must be >= 2 and --sizes positive")
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    directions = [d.strip() for d in args.directions.split(",")] if args.directions else None
    if args.replot == bool(args.checkpoints):
        ap.error("give checkpoints, or --replot without them")
    report = Report(args.out)
    if args.replot:
        with open(os.path.join(args.out, "noise_floor.csv")) as f:
            rows = [(int(r["update"]), int(r["size"]), r["pair"], r["group"], int(r["draw"]), float(r["cosine"]),
                     float(r["reference"])) for r in csv.DictReader(f)]
    else:
        rows = []
        for path in args.checkpoints:
            rows += measure(path, sizes, args.draws, directions, args.max_tokens, args.seed, device, args.granularity)
        report.csv("noise_floor.csv", ["update", "size", "pair", "group", "draw", "cosine", "reference"],
                   [(u, s, p, g, r, f"{c:.6f}", f"{ref:.6f}") for u, s, p, g, r, c, ref in rows])
    summary = summarize(rows)
    report.csv("summary.csv", ["update", "size", "spread", "mean_over_reference", "mean_abs_reference"],
               [(u, s, f"{sp:.4f}", f"{ratio:.4f}", f"{ref:.4f}") for u, s, sp, ratio, ref in summary])
    draw(summary, report)
    print(report)
    for update, size, spread, ratio, ref in summary:
        print(f"update {update}, {size} tokens: spread {spread:.3f}, mean/reference {ratio:.3f}, |reference| {ref:.3f}")


if __name__ == "__main__":
    sys.exit(main())
