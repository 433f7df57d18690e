"""Figure 3: encoder vs decoder, by layer, by layer over updates; the share of conflicting
(negative) cosines per layer over updates; the per-direction training losses."""
import csv
from collections import defaultdict

import numpy as np

from ..gradients.similarity import SIDE_AGGREGATES
from .plotting import color_scale, fmt, pyplot
from .records import KINDS, layer_groups, pair_kind, pair_means


def encoder_vs_decoder(series):
    """[(side, kind of pair, mean over pairs of the mean over updates, pairs)]."""
    rows = []
    for side, group in SIDE_AGGREGATES.items():
        means = pair_means(series, group)
        for kind in KINDS + ("other", "all"):
            values = [v for p, v in means.items() if kind in ("all", pair_kind(p))]
            if values:
                rows.append((side, kind, float(np.mean(values)), len(values)))
    return rows


def by_layer(series):
    """[(side, layer, kind of pair, mean cosine over pairs and updates, pairs)]."""
    rows = []
    for side, index, group in layer_groups(series):
        means = pair_means(series, group)
        for kind in ("all",) + KINDS:
            values = [v for p, v in means.items() if kind in ("all", pair_kind(p))]
            if values:
                rows.append((side, index, kind, float(np.mean(values)), len(values)))
    return rows


def layers_over_updates(series):
    """[(update, side, layer, mean cosine over pairs, share of negative cosines, pairs)]."""
    rows = []
    for side, index, group in layer_groups(series):
        by_update = defaultdict(list)
        for (g, _), values in series.items():
            if g == group:
                for update, cosine in values.items():
                    by_update[update].append(cosine)
        for update, cosines in by_update.items():
            c = np.array(cosines)
            rows.append((update, side, index, float(c.mean()), float((c < 0).mean()), len(c)))
    return sorted(rows, key=lambda r: r[0])


def figure3(series, report):
    figure3_sides(series, report)
    if not layer_groups(series):
        report.skip("Figure 3 by layer and over updates, conflicts",
                    "no per-layer groups (record at the all_layer granularity)")
        return
    figure3_layers(series, report)
    figure3_over_updates(series, report)


def figure3_sides(series, report):
    rows = encoder_vs_decoder(series)
    if not rows:
        report.skip("Figure 3 encoder vs decoder", "no 'encoder_layers'/'decoder_layers' rows")
        return
    plt = pyplot()
    report.csv("fig3_encoder_vs_decoder.csv", ["side", "pairs_kind", "mean_cosine", "pairs"],
                   [(s, k, fmt(m), n) for s, k, m, n in rows])
    kinds = [k for k in KINDS + ("other", "all") if any(r[1] == k for r in rows)]
    fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(kinds), 3.5))
    for offset, side in ((-0.2, "encoder"), (0.2, "decoder")):
        values = {k: m for s, k, m, _ in rows if s == side}
        ax.bar([i + offset for i, k in enumerate(kinds) if k in values],
               [values[k] for k in kinds if k in values], width=0.4, label=side)
    ax.set_xticks(range(len(kinds)), [f"{k} pairs" for k in kinds])
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_ylabel("mean gradient cosine")
    ax.set_title("encoder vs decoder (mean over pairs and updates)", fontsize=9)
    ax.legend(fontsize=7)
    report.png("fig3_encoder_vs_decoder.png", fig)


def figure3_layers(series, report):
    plt = pyplot()
    rows = by_layer(series)
    report.csv("fig3_by_layer.csv", ["side", "layer", "pairs_kind", "mean_cosine", "pairs"],
               [(s, i, k, fmt(m), n) for s, i, k, m, n in rows])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    styles = {"all": "-o", "xx-en": "--s", "en-xx": ":^"}
    for side, kind in dict.fromkeys((r[0], r[2]) for r in rows):
        points = [(i, m) for s, i, k, m, _ in rows if (s, k) == (side, kind)]
        ax.plot(*zip(*points), styles[kind], color="C0" if side == "encoder" else "C1", label=f"{side}, {kind} pairs")
    ax.set_xticks(sorted({r[1] for r in rows}))
    ax.set_xlabel("layer")
    ax.set_ylabel("mean gradient cosine")
    ax.set_title("by layer (mean over pairs and updates)", fontsize=9)
    ax.legend(fontsize=7)
    report.png("fig3_by_layer.png", fig)


def figure3_over_updates(series, report):
    """Per layer over updates: the mean cosine, and the share of conflicting pairs."""
    rows = layers_over_updates(series)
    updates = sorted({r[0] for r in rows})
    if len(updates) < 2:
        report.skip("Figure 3 over updates, conflicts", f"only update {updates[0]} recorded")
        return
    report.csv("fig3_layers_over_updates.csv",
               ["update", "side", "layer", "mean_cosine", "negative_share", "pairs"],
               [(u, s, i, fmt(m), fmt(neg), n) for u, s, i, m, neg, n in rows])
    plt = pyplot()
    layers = list(dict.fromkeys((r[1], r[2]) for r in rows))
    for column, name, title in ((3, "fig3_layers_over_updates", "mean gradient cosine"),
                                (4, "conflicts_over_updates", "share of negative cosines")):
        grid = np.full((len(layers), len(updates)), np.nan)
        for r in rows:
            grid[layers.index((r[1], r[2])), updates.index(r[0])] = r[column]
        cmap, low, high = color_scale(grid) if column == 3 else ("Reds", 0.0, 1.0)
        fig, ax = plt.subplots(figsize=(7, 1.2 + 0.3 * len(layers)))
        image = ax.imshow(grid, aspect="auto", cmap=cmap, interpolation="nearest", vmin=low, vmax=high,
                          extent=(-0.5, len(updates) - 0.5, len(layers) - 0.5, -0.5))
        ticks = np.linspace(0, len(updates) - 1, min(len(updates), 8)).round().astype(int)
        ax.set_xticks(ticks, [updates[t] for t in ticks])
        ax.set_yticks(range(len(layers)), [f"{s} {i}" for s, i in layers])
        ax.set_xlabel("update")
        ax.set_title(f"{title} per layer (over the {len(set(p for _, p in series))} direction pairs)",
                     fontsize=9)
        fig.colorbar(image, ax=ax)
        report.png(name + ".png", fig)


def losses(path, report):
    """Per-direction training loss, a running mean over 1/50 of the updates recorded."""
    curves = defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            curves[row["direction"]].append((int(row["update"]), float(row["loss"])))
    if not curves:
        report.skip("losses", f"{path} has no rows")
        return
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    rows = []
    for direction, points in sorted(curves.items()):
        points.sort()
        window = max(1, len(points) // 50)
        smooth = np.convolve([l for _, l in points], np.ones(window) / window, mode="valid")
        updates = [u for u, _ in points][window - 1:]
        rows += [(u, direction, fmt(l)) for u, l in zip(updates, smooth)]
        ax.plot(updates, smooth, label=direction, lw=1)
    report.csv("losses.csv", ["update", "direction", "loss_running_mean"], rows)
    ax.set_xlabel("update")
    ax.set_ylabel("training loss (bits per token)")
    ax.set_title("per-direction training loss (running mean)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    report.png("losses.png", fig)
