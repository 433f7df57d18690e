"""What GradVac did in a study's runs: the gradient cosines of the training batches
(``--similarity-interval`` records, similarity.csv) by direction pair and layer, the share
of conflicts (negative cosines) and of corrected (pair, layer) visits (the train log's
``corrected``) over training, next to the probe's offline cosines of the same runs'
checkpoints (RUN/probe/similarity.csv, fairseq_gradvac.analysis.probe): do training-batch
gradients conflict where the probe's, on a fixed multi-way set, do not?

    python -m fairseq_gradvac.analysis.conflicts RUNS_DIR --out RUNS_DIR/conflicts

RUNS_DIR holds run folders named ROW_SAMPLING_seedN. Statistics are over the per-layer
groups (encoder.layers.N, decoder.layers.N) and every pair of directions, averaged over
seeds; a probe at checkpoint U is set beside the training records within --window updates
of U. Writes conflicts.md, CSVs of every table, and conflicts_over_training.png.
"""
import argparse
import csv
import glob
import os
import re
import sys
from collections import defaultdict

import numpy as np

from .plotting import pyplot
from ..combiners.parameter_names import parse_layer
from .records import read_similarity

_RUN = re.compile(r"^(?P<key>.+_(?:t\d+|[a-z]+))_seed(?P<seed>\d+)$")  # (a temperature, or a schedule)
_CORRECTED = re.compile(r"\btrain_inner\b.*?\bcorrected=(?P<share>[0-9.eE+-]+).*?\bnum_updates=(?P<update>\d+)")


def read_corrected(train_log):
    """{update: share of (pair, layer) visits corrected, fairseq's mean over the log interval
    ending there}; an update logged twice (a resume) keeps its last value."""
    shares = {}
    if os.path.exists(train_log):
        with open(train_log) as f:
            for line in f:
                m = _CORRECTED.search(line)
                if m:
                    shares[int(m["update"])] = float(m["share"])
    return shares


def layer_cells(path):
    """[(update, pair, layer group, cosine)] of the per-layer groups of a similarity.csv."""
    return [(u, pair, group, c) for (group, pair), values in read_similarity(path).items()
            if parse_layer(group) for u, c in values.items()]


def _stats(cosines):
    values = np.asarray(cosines, dtype=float)
    return float(values.mean()), float((values < 0).mean())


def run_tables(run, window):
    """One run's statistics: by update (training), by pair and by layer (training, probe),
    and probe checkpoints beside the training records around them."""
    train = layer_cells(os.path.join(run, "similarity.csv"))
    probe_path = os.path.join(run, "probe", "similarity.csv")
    probe = layer_cells(probe_path) if os.path.exists(probe_path) else []
    corrected = read_corrected(os.path.join(run, "train.log"))
    out = {"over_updates": {}, "pairs": {}, "layers": {}, "checkpoints": {}, "corrected": corrected}
    by_update = defaultdict(list)
    for u, _, _, c in train:
        by_update[u].append(c)
    out["over_updates"] = {u: _stats(cs) for u, cs in by_update.items()}
    for source, cells in (("train", train), ("probe", probe)):
        for index, table in ((1, "pairs"), (2, "layers")):
            grouped = defaultdict(list)
            for cell in cells:
                grouped[cell[index]].append(cell[3])
            for key, cs in grouped.items():
                out[table].setdefault(key, {})[source] = _stats(cs)
    probe_updates = defaultdict(list)
    for u, _, _, c in probe:
        probe_updates[u].append(c)
    for u, cs in probe_updates.items():
        near = [c for v, _, _, c in train if abs(v - u) <= window]
        out["checkpoints"][u] = {"probe": _stats(cs), "train": _stats(near) if near else None}
    return out


def collect(runs_dir, window):
    """{ROW_SAMPLING: [run_tables per seed]} of the runs with a similarity.csv; a run that
    recorded no per-layer groups (trained without --similarity-granularity all_layer) is
    skipped with a message."""
    runs = defaultdict(list)
    for path in sorted(glob.glob(os.path.join(runs_dir, "*", "similarity.csv"))):
        m = _RUN.match(os.path.basename(os.path.dirname(path)))
        if m:
            tables = run_tables(os.path.dirname(path), window)
            if not tables["over_updates"]:
                print(f"[conflicts] skipped {os.path.dirname(path)}: no per-layer cosines in its "
                      "similarity.csv (record them with --similarity-granularity all_layer)", file=sys.stderr)
                continue
            runs[m["key"]].append(tables)
    return runs


def _seed_mean(values):
    """Mean over seeds of (mean cosine, conflict share) pairs, None when none."""
    values = [v for v in values if v is not None]
    return tuple(np.mean(values, axis=0)) if values else None


def _fmt(stat):
    return "-" if stat is None else f"{stat[0]:.3f} / {100 * stat[1]:.1f}%"


def _quarters(seeds):
    """Per quarter of the updates recorded: (mean cosine, conflicts) and the corrected share."""
    rows = []
    last = max(u for s in seeds for u in s["over_updates"])
    for q in range(4):
        lo, hi = q * last / 4, (q + 1) * last / 4
        stats = _seed_mean([_stats_in(s["over_updates"], lo, hi) for s in seeds])
        shares = [v for s in seeds for u, v in s["corrected"].items() if lo < u <= hi]
        rows.append((f"{int(lo) + 1}-{int(hi)}", stats, float(np.mean(shares)) if shares else None))
    return rows


def _stats_in(over_updates, lo, hi):
    inside = [v for u, v in over_updates.items() if lo < u <= hi]
    return tuple(np.mean(inside, axis=0)) if inside else None


def report(runs, out):
    os.makedirs(out, exist_ok=True)
    lines = ["# What GradVac did: training-batch gradient cosines, conflicts and corrections", "",
             "Cells: mean cosine / share of negative cosines, over the per-layer groups and every pair",
             "of directions, averaged over seeds.", "",
             "## Over training (training batches) and GradVac/PCGrad's corrected share", "",
             "| row | updates | cosine / conflicts | corrected |", "|---|---|---:|---:|"]
    quarters_csv = []
    for key, seeds in runs.items():
        for span, stats, share in _quarters(seeds):
            lines.append(f"| {key} | {span} | {_fmt(stats)} | {'-' if share is None else f'{100 * share:.1f}%'} |")
            quarters_csv.append((key, span, *(stats or ("", "")), "" if share is None else share))
    lines += ["", "## Training batches vs the probe at the same checkpoints", "",
              "| row | checkpoint | training batches (nearby records) | probe |", "|---|---:|---:|---:|"]
    checkpoints_csv = []
    for key, seeds in runs.items():
        for u in sorted({u for s in seeds for u in s["checkpoints"]}):
            train = _seed_mean([s["checkpoints"][u]["train"] for s in seeds if u in s["checkpoints"]])
            probe = _seed_mean([s["checkpoints"][u]["probe"] for s in seeds if u in s["checkpoints"]])
            lines.append(f"| {key} | {u} | {_fmt(train)} | {_fmt(probe)} |")
            checkpoints_csv.append((key, u, *(train or ("", "")), *(probe or ("", ""))))
    tables = {}
    for table, title, label in (("pairs", "By direction pair", "pair"), ("layers", "By layer", "layer")):
        lines += ["", f"## {title} (whole training; probe: all its checkpoints)", "",
                  f"| row | {label} | training batches | probe |", "|---|---|---:|---:|"]
        tables[table] = []
        for key, seeds in runs.items():
            names = sorted({n for s in seeds for n in s[table]}, key=str)
            for name in names:
                cells = [_seed_mean([s[table].get(name, {}).get(src) for s in seeds]) for src in ("train", "probe")]
                shown = "/".join(name) if table == "pairs" else name
                lines.append(f"| {key} | {shown} | {_fmt(cells[0])} | {_fmt(cells[1])} |")
                tables[table].append((key, shown, *(cells[0] or ("", "")), *(cells[1] or ("", ""))))
    _csv(out, "over_training.csv", ["row", "updates", "cosine", "conflicts", "corrected"], quarters_csv)
    _csv(out, "checkpoints.csv", ["row", "update", "train_cosine", "train_conflicts", "probe_cosine",
                                  "probe_conflicts"], checkpoints_csv)
    for table, label in (("pairs", "pair"), ("layers", "layer")):
        _csv(out, f"{table}.csv", ["row", label, "train_cosine", "train_conflicts", "probe_cosine",
                                   "probe_conflicts"], tables[table])
    _figure(runs, os.path.join(out, "conflicts_over_training.png"))
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "conflicts.md"), "w") as f:
        f.write(text)
    return text


def _csv(out, name, header, rows):
    with open(os.path.join(out, name), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _figure(runs, path):
    plt = pyplot()
    # the corrected share's panel only where a run has one (GradVac, PCGrad)
    any_corrected = any(s["corrected"] for seeds in runs.values() for s in seeds)
    fig, axes = plt.subplots(2 if any_corrected else 1, 1, figsize=(7, 6 if any_corrected else 3.5),
                             sharex=True, squeeze=False)
    top, bottom = axes[0, 0], axes[-1, 0]
    for key, seeds in runs.items():
        updates = sorted({u for s in seeds for u in s["over_updates"]})
        share = [np.mean([s["over_updates"][u][1] for s in seeds if u in s["over_updates"]]) for u in updates]
        line, = top.plot(updates, share, lw=1, label=key)
        probes = sorted({u for s in seeds for u in s["checkpoints"]})
        if probes:
            top.plot(probes, [np.mean([s["checkpoints"][u]["probe"][1] for s in seeds if u in s["checkpoints"]])
                              for u in probes], "o--", color=line.get_color(), ms=4, lw=0.8)
        corrected = sorted({u for s in seeds for u in s["corrected"]})
        if corrected:
            bottom.plot(corrected, [np.mean([s["corrected"][u] for s in seeds if u in s["corrected"]])
                                    for u in corrected], lw=1, color=line.get_color(), label=key)
    top.set_ylabel("share of negative cosines")
    top.set_title("conflicts per layer and pair: training batches (lines), probe (dots)", fontsize=9)
    top.legend(fontsize=7)
    if any_corrected:
        bottom.set_ylabel("corrected share of visits")
    bottom.set_xlabel("update")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs_dir")
    p.add_argument("--out", default=None, help="output folder [RUNS_DIR/conflicts]")
    p.add_argument("--window", type=int, default=500,
                   help="training records within this many updates of a probed checkpoint [500]")
    a = p.parse_args(argv)
    runs = collect(a.runs_dir, a.window)
    if not runs:
        raise SystemExit(f"no run with a similarity.csv (ROW_T_seedN/similarity.csv) under {a.runs_dir}")
    print(report(runs, a.out or os.path.join(a.runs_dir, "conflicts")))


if __name__ == "__main__":
    main()
