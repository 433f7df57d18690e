"""Part I's figures (the paper's Figures 1, 2a, 2b and 3) from recorded gradient cosines.

    python -m fairseq_gradvac.analysis.figures RUN_OR_PROBE_DIR --out DIR
    python -m fairseq_gradvac.analysis.figures XX_EN_PROBE --figure2a EN_XX_PROBE --out DIR
    python -m fairseq_gradvac.analysis.figures --figure2b RUNS_DIR --anchor en-fr --out DIR

The first reads the folder's similarity.csv (and direction_losses.csv, when there): Figure 1
(clustered matrices of mean cosine between xx-en directions and between en-xx directions,
encoder and decoder), with, per matrix over all updates and at each checkpoint, the within-
vs between-family/genus/script tests and the Mantel tests against URIEL+'s genetic,
geographic and syntactic distances (fig1_statistics.json/.csv); Figure 2a (cos(x-en, y-en)
against cos(en-x, en-y), with the paired tests) when the run has both kinds; Figure 3
(encoder vs decoder, by layer, by layer over updates), the share of conflicting (negative)
cosines per layer over updates, and the per-direction training losses. The second draws
Figure 2a from two models, an xx-en one and an en-xx one. The third reads the runs of
scripts/figure2b.sh (one folder each, with similarity.csv, scores.json and probe/): the
anchor's BLEU and chrF against its cosine with the other direction (the mean of the
training records and, where probed, the probe's), their rank correlations, and the anchor
trained alone as the reference line. Every PNG comes with the CSV of the numbers
it shows; figures whose data is absent are skipped, with the reason printed.
"""
import argparse
import csv
import glob
import json
import math
import os
import re
from collections import defaultdict

import numpy as np

from . import languages

SIDES = {"encoder": "encoder_layers", "decoder": "decoder_layers"}
KINDS = ("xx-en", "en-xx")
_LAYER = re.compile(r"^(encoder|decoder)\.layers\.(\d+)$")


def read_similarity(path):
    """{(group, (a, b)): {update: cosine}}, the pair in sorted order; rows without a finite
    cosine (a direction whose gradient was zero) are left out."""
    series = defaultdict(dict)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                cosine = float(row["cosine"])
            except ValueError:
                continue
            if math.isfinite(cosine):
                series[row["group"], tuple(sorted((row["a"], row["b"])))][int(row["update"])] = cosine
    return series


def direction_kind(direction):
    src, tgt = direction.split("-")
    return "xx-en" if tgt == "en" != src else "en-xx" if src == "en" != tgt else None


def pair_kind(pair):
    """"xx-en" or "en-xx" when both directions are, else "other"."""
    kinds = {direction_kind(d) for d in pair}
    return kinds.pop() if len(kinds) == 1 and None not in kinds else "other"


def language_of(direction):
    """The non-English side of an xx-en or en-xx direction."""
    src, tgt = direction.split("-")
    return src if tgt == "en" else tgt


def pair_means(series, group):
    """{pair: mean cosine over the updates recorded} in one parameter group."""
    return {pair: float(np.mean(list(v.values()))) for (g, pair), v in series.items() if g == group}


def _updates(series, group):
    return sorted({u for (g, _), v in series.items() if g == group for u in v})


def language_matrix(means, kind):
    """Languages of the ``kind`` directions and their symmetric matrix of mean cosines (1 on
    the diagonal, NaN for a pair never recorded)."""
    codes = sorted({language_of(d) for pair in means if pair_kind(pair) == kind for d in pair})
    matrix = np.full((len(codes), len(codes)), np.nan)
    np.fill_diagonal(matrix, 1.0)
    for pair, value in means.items():
        if pair_kind(pair) == kind:
            i, j = (codes.index(language_of(d)) for d in pair)
            matrix[i, j] = matrix[j, i] = value
    return codes, matrix


def cluster(matrix):
    """Average-linkage tree on the distance 1 - cosine (a pair never recorded counts as
    cosine 0) and the leaf order it puts the languages in."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    distance = 1.0 - np.nan_to_num(matrix, nan=0.0)
    np.fill_diagonal(distance, 0.0)
    tree = linkage(squareform(distance, checks=False), method="average")
    return tree, leaves_list(tree)


def layer_groups(series):
    """[(side, index, group)] of the per-layer groups recorded (all_layer granularity)."""
    found = {(m[1], int(m[2]), g) for g, _ in series for m in [_LAYER.match(g)] if m}
    return sorted(found, key=lambda f: (f[0] != "encoder", f[1]))


class Report:
    """The files written and the figures skipped, with why."""

    def __init__(self, out):
        self.out, self.written, self.skipped = out, [], []
        os.makedirs(out, exist_ok=True)

    def path(self, name):
        self.written.append(name)
        return os.path.join(self.out, name)

    def csv(self, name, header, rows):
        with open(self.path(name), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)

    def png(self, name, fig):
        fig.tight_layout()
        fig.savefig(self.path(name), dpi=120)
        _pyplot().close(fig)

    def skip(self, figure, reason):
        self.skipped.append((figure, reason))

    def __str__(self):
        """The files written, then the figures skipped: one line per reason."""
        lines = [f"[figures] wrote {os.path.join(self.out, n)}" for n in self.written]
        reasons = {}
        for figure, reason in self.skipped:
            reasons.setdefault(reason, []).append(figure)
        return "\n".join(lines + [f"[figures] skipped {_names(f)}: {r}" for r, f in reasons.items()])


def _names(figures):
    """'Figure 1 (encoder, xx-en)', 'Figure 1 (decoder, en-xx)' -> 'Figure 1 (encoder, xx-en;
    decoder, en-xx)': one line per reason stays short at 4 matrices."""
    details = {}
    for figure in figures:
        base, _, detail = figure.partition(" (")
        details.setdefault(base, []).append(detail[:-1] if detail else "")
    return ", ".join(f"{b} ({'; '.join(d)})" if any(d) else b for b, d in details.items())


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fmt(value):
    return f"{value:.6g}" if math.isfinite(value) else ""


# Language proximity (Figure 1's clustering and tests, Figure 2a's paired test) needs at
# least this many languages besides English: two give one pair, a 2 x 2 matrix and p = nan.
MIN_LANGUAGES = 3


def too_few_languages(codes):
    return (f"{len(codes)} language{'s' if len(codes) != 1 else ''} besides English "
            f"({', '.join(codes)}); proximity needs {MIN_LANGUAGES} or more")


def figure1(series, report, permutations, seed, max_checkpoints=12):
    """Clustered matrices with their dendrograms; returns the proximity statistics of each
    matrix over all updates and, when at most ``max_checkpoints`` updates were recorded
    (a probe of checkpoints), at each update alone."""
    statistics = {}
    for side, group in SIDES.items():
        means = pair_means(series, group)
        if not means:
            report.skip(f"Figure 1 ({side})", f"no '{group}' rows in similarity.csv")
            continue
        updates = _updates(series, group)
        for kind in KINDS:
            codes, matrix = language_matrix(means, kind)
            if len(codes) < MIN_LANGUAGES:
                report.skip(f"Figure 1 ({side}, {kind})", too_few_languages(codes))
                continue
            tree, order = cluster(matrix)
            codes, matrix = [codes[i] for i in order], matrix[np.ix_(order, order)]
            name = f"fig1_{side}_{kind}"
            report.csv(name + ".csv", ["language"] + codes,
                       [[c] + [_fmt(v) for v in row] for c, row in zip(codes, matrix)])
            _clustered_heatmap(report, name + ".png", tree, codes, matrix,
                               f"{side} gradient cosine between {kind} directions\nmean over "
                               f"{len(updates)} recorded updates ({updates[0]}-{updates[-1]})")
            statistics[f"{side} {kind}"] = proximity_statistics(matrix, codes, permutations, seed)
            if 1 < len(updates) <= max_checkpoints:
                for update in updates:
                    at = pair_means(only_updates(series, update, update), group)
                    at_codes, at_matrix = language_matrix(at, kind)
                    if len(at_codes) >= MIN_LANGUAGES:
                        statistics[f"{side} {kind}, update {update}"] = proximity_statistics(
                            at_matrix, at_codes, permutations, seed)
            elif len(updates) > max_checkpoints:
                report.skip(f"Figure 1 statistics per update ({side}, {kind})",
                            f"{len(updates)} updates recorded (more than {max_checkpoints}): use --updates")
    if statistics:
        with open(report.path("fig1_statistics.json"), "w") as f:
            json.dump(statistics, f, indent=2)
        report.csv("fig1_statistics.csv", ["matrix", "test", "by", "statistic", "value", "pairs", "p_value",
                                           "permutations"], statistics_rows(statistics))
    return statistics


def proximity_statistics(matrix, codes, permutations, seed):
    """Within- vs between-group tests (family, genus, script) and Mantel tests (genetic,
    geographic, syntactic distance) of one matrix."""
    return {"groups": {g: languages.proximity_test(matrix, codes, g, permutations, seed)
                       for g in languages.GROUPINGS},
            "mantel": languages.mantel_tests(matrix, codes, permutations, seed)}


def statistics_rows(statistics):
    """fig1_statistics.csv: one row per matrix and test (statistic: within - between, or
    Spearman's rho of cosine against distance)."""
    rows = []
    for name, tests in statistics.items():
        for grouping, t in tests["groups"].items():
            if t is not None:
                rows.append((name, "within-between", grouping, "difference", _fmt(t["difference"]),
                             t["pairs_within"] + t["pairs_between"], _fmt(t["p_value"]), t["permutations"]))
        for kind, t in tests["mantel"].items():
            if t is not None:
                rows.append((name, "mantel", kind, "spearman", _fmt(t["spearman"]), t["pairs"],
                             _fmt(t["p_value"]), t["permutations"]))
    return rows


def color_scale(values):
    """(colormap, vmin, vmax) for an image of ``values``: sequential over the data's range
    (darker = higher), diverging and centred at 0 only where the values straddle 0."""
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if low < 0 < high:
        limit = max(-low, high)
        return "RdBu_r", -limit, limit
    if high - low < 1e-6:
        low, high = low - 1e-3, high + 1e-3
    return "Blues", low, high


def _clustered_heatmap(report, name, tree, codes, matrix, title):
    """The matrix (already in the tree's leaf order) under its dendrogram; rows labelled
    with genus, columns coloured by script."""
    from matplotlib.patches import Patch
    from scipy.cluster.hierarchy import dendrogram

    plt = _pyplot()
    n = len(codes)
    fig = plt.figure(figsize=(3.5 + 0.45 * n, 3.8 + 0.4 * n))
    grid = fig.add_gridspec(2, 2, height_ratios=[1, 4], width_ratios=[20, 1])
    top, ax, bar = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1])
    dendrogram(tree, ax=top, no_labels=True, color_threshold=0, above_threshold_color="k")
    top.axis("off")
    top.set_title(title, fontsize=9)
    diagonal = np.eye(n, dtype=bool)
    off = np.where(diagonal, np.nan, matrix)
    cmap, low, high = color_scale(off)
    image = ax.imshow(np.ma.masked_where(diagonal | np.isnan(matrix), matrix), aspect="auto",
                      cmap=plt.get_cmap(cmap).with_extremes(bad="0.85"), vmin=low, vmax=high)
    genera = [languages.group_of(c, "genus") or "?" for c in codes]
    scripts = [languages.group_of(c, "script") or "?" for c in codes]
    palette = plt.get_cmap("Dark2")
    by_count = sorted(set(scripts), key=lambda s: (-scripts.count(s), scripts.index(s)))
    script_colors = {s: "black" if i == 0 else palette((i - 1) % 8) for i, s in enumerate(by_count)}
    ax.set_xticks(range(n), codes, rotation=90)
    ax.set_yticks(range(n), [f"{g}  {c}" for c, g in zip(codes, genera)])
    for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
        for label, s in zip(labels, scripts):
            label.set_color(script_colors[s])
            label.set_fontweight("bold")
    ax.set_ylabel("genus, language", fontsize=8)
    ax.legend(handles=[Patch(color=c, label=s) for s, c in script_colors.items()],
              title="language colour = script", fontsize=7, title_fontsize=7, loc="upper center",
              bbox_to_anchor=(0.5, -0.1), ncol=min(len(script_colors), 6), frameon=False)
    if n <= 12:
        for i, j in zip(*np.nonzero(~diagonal & np.isfinite(matrix))):
            level = (matrix[i, j] - low) / (high - low)  # 0..1 along the colour bar
            dark = abs(2 * level - 1) > 0.6 if cmap == "RdBu_r" else level > 0.6
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if dark else "black")
    colorbar = fig.colorbar(image, cax=bar)
    colorbar.set_ticks(sorted(set(np.round(np.linspace(low, high, 5), 3))))
    colorbar.set_label(f"cosine (off-diagonal range {np.nanmin(off):.3f} to {np.nanmax(off):.3f})", fontsize=8)
    report.png(name, fig)


def summarize_statistics(statistics):
    """Two lines per matrix: the within/between tests, the Mantel tests."""
    lines = []
    for name, tests in statistics.items():
        groups = [f"{grouping} -" if t is None else
                  f"{grouping} {t['within']:.3f}/{t['between']:.3f} ({t['pairs_within']}/{t['pairs_between']} "
                  f"pairs) p={t['p_value']:.4f}" for grouping, t in tests["groups"].items()]
        lines.append(f"[figures] {name} | mean cosine within/between groups: " + "; ".join(groups))
        mantel = [f"{kind} -" if t is None else f"{kind} {t['spearman']:+.3f} (p={t['p_value']:.4f})"
                  for kind, t in tests["mantel"].items()]
        pairs = {t["pairs"] for t in tests["mantel"].values() if t}
        lines.append(f"[figures] {name} | Mantel, Spearman vs URIEL+ distance (one-sided p"
                     f"{', %d pairs' % pairs.pop() if len(pairs) == 1 else ''}): " + "; ".join(mantel))
    return "\n".join(lines)


def x_en_vs_en_x(series, group):
    """[(x, y, cos(x-en, y-en), cos(en-x, en-y))] for the language pairs with both."""
    means = pair_means(series, group)
    rows = []
    for pair, value in means.items():
        if pair_kind(pair) == "xx-en":
            x, y = (language_of(d) for d in pair)
            mirrored = tuple(sorted((f"en-{x}", f"en-{y}")))
            if mirrored in means:
                rows.append((*sorted((x, y)), value, means[mirrored]))
    return sorted(rows)


def paired_tests(panels):
    """The paper's "X-EN more similar than EN-X", over language pairs: per parameter group,
    the means, how many pairs have the higher cosine in X-EN, and the one-sided Wilcoxon
    signed-rank p-value of cos(x-en, y-en) - cos(en-x, en-y) > 0; then where the gap is
    larger, encoder or decoder (two-sided Wilcoxon over the pairs both groups have). Pairs
    share languages, so they are not independent: read the p-values as descriptive."""
    from scipy.stats import wilcoxon

    def test(differences, alternative):
        d = np.asarray(differences)
        return float(wilcoxon(d, alternative=alternative).pvalue) if len(d) >= 2 and np.any(d != 0) else math.nan

    rows = []
    for group, pairs in panels:
        xs, ys = np.array([r[2] for r in pairs]), np.array([r[3] for r in pairs])
        rows.append((group, len(pairs), float(xs.mean()), float(ys.mean()), float((xs - ys).mean()),
                     int((xs > ys).sum()), "greater", test(xs - ys, "greater")))
    gaps = {g: {(r[0], r[1]): r[2] - r[3] for r in pairs} for g, pairs in panels}
    if "encoder_layers" in gaps and "decoder_layers" in gaps:
        both = sorted(set(gaps["encoder_layers"]) & set(gaps["decoder_layers"]))
        d = np.array([gaps["encoder_layers"][p] - gaps["decoder_layers"][p] for p in both])
        if len(both):
            rows.append(("encoder - decoder gap", len(both), math.nan, math.nan, float(d.mean()),
                         int((d > 0).sum()), "two-sided", test(d, "two-sided")))
    return rows


def figure2a(series, report):
    """cos(x-en, y-en) against cos(en-x, en-y) per language pair, with the paired tests;
    ``series`` holds the xx-en and en-xx pairs (one model with both, or the two models' merged
    by ``merge_models``). Returns the tests' rows."""
    panels = [(g, x_en_vs_en_x(series, g)) for g in ("model",) + tuple(SIDES.values())]
    panels = [(g, rows) for g, rows in panels if rows]
    if not panels:
        report.skip("Figure 2a", "no language pair with both cos(x-en, y-en) and cos(en-x, en-y)")
        return []
    languages = sorted({lang for _, rows in panels for x, y, _, _ in rows for lang in (x, y)})
    if len(languages) < MIN_LANGUAGES:  # one language pair: no scatter, no test
        report.skip("Figure 2a", too_few_languages(languages))
        return []
    report.csv("fig2a_xx-en_vs_en-xx.csv", ["group", "x", "y", "cos_xx_en", "cos_en_xx"],
               [(g, x, y, _fmt(a), _fmt(b)) for g, rows in panels for x, y, a, b in rows])
    tests = paired_tests(panels)
    report.csv("fig2a_paired_test.csv", ["group", "pairs", "mean_cos_xx_en", "mean_cos_en_xx", "mean_difference",
                                         "pairs_positive", "alternative", "wilcoxon_p"],
               [(g, n, _fmt(a), _fmt(b), _fmt(d), k, alt, _fmt(p)) for g, n, a, b, d, k, alt, p in tests])
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.3), squeeze=False)
    for ax, (group, rows), t in zip(axes[0], panels, tests):
        xs, ys = np.array([r[2] for r in rows]), np.array([r[3] for r in rows])
        low, high = min(xs.min(), ys.min()), max(xs.max(), ys.max())
        margin = 0.05 * max(high - low, 1e-3)
        ax.plot([low - margin, high + margin], [low - margin, high + margin], color="0.6", lw=1,
                label="cos(x-en, y-en) = cos(en-x, en-y)")
        ax.scatter(xs, ys, s=14)
        ax.scatter([xs.mean()], [ys.mean()], marker="x", color="red", s=60,
                   label=f"mean ({xs.mean():.3f}, {ys.mean():.3f})")
        ax.set_xlim(low - margin, high + margin)
        ax.set_ylim(low - margin, high + margin)
        ax.set_xlabel("cos(x-en, y-en)")
        ax.set_ylabel("cos(en-x, en-y)")
        ax.set_title(f"{group}: {len(rows)} language pairs\nX-EN higher in {t[5]}, Wilcoxon p = {t[7]:.2g}",
                     fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    report.png("fig2a_xx-en_vs_en-xx.png", fig)
    return tests


def summarize_paired_tests(tests):
    lines = []
    for group, n, a, b, d, k, alternative, p in tests:
        if group == "encoder - decoder gap":
            lines.append(f"[figures] Figure 2a, gap X-EN minus EN-X, encoder minus decoder: mean {d:+.3f} over "
                         f"{n} pairs (encoder larger in {k}), two-sided Wilcoxon p = {p:.4g}")
        else:
            lines.append(f"[figures] Figure 2a, {group}: cos(x-en, y-en) {a:.3f} vs cos(en-x, en-y) {b:.3f} "
                         f"over {n} language pairs, X-EN higher in {k}, one-sided Wilcoxon p = {p:.4g}")
    return "\n".join(lines)


def merge_models(xx_en_similarity, en_xx_similarity):
    """The xx-en pairs of one model's similarity.csv and the en-xx pairs of the other's:
    Figure 2a from an xx-en and an en-xx model."""
    merged = {}
    for path, kind in ((xx_en_similarity, "xx-en"), (en_xx_similarity, "en-xx")):
        kept = {key: v for key, v in read_similarity(path).items() if pair_kind(key[1]) == kind}
        if not kept:
            raise SystemExit(f"{path} has no {kind} pairs")
        merged.update(kept)
    return merged


def draw_figure2a(xx_en_path, en_xx_path, out):
    """Figure 2a and its paired tests from the probes of the xx-en and the en-xx model."""
    paths = [os.path.join(p, "similarity.csv") if os.path.isdir(p) else p for p in (xx_en_path, en_xx_path)]
    for p in paths:
        if not os.path.exists(p):
            raise SystemExit(f"no such file: {p}")
    report = Report(out)
    print(summarize_paired_tests(figure2a(merge_models(*paths), report)))
    return report


def encoder_vs_decoder(series):
    """[(side, kind of pair, mean over pairs of the mean over updates, pairs)]."""
    rows = []
    for side, group in SIDES.items():
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
    plt = _pyplot()
    report.csv("fig3_encoder_vs_decoder.csv", ["side", "pairs_kind", "mean_cosine", "pairs"],
                   [(s, k, _fmt(m), n) for s, k, m, n in rows])
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
    plt = _pyplot()
    rows = by_layer(series)
    report.csv("fig3_by_layer.csv", ["side", "layer", "pairs_kind", "mean_cosine", "pairs"],
               [(s, i, k, _fmt(m), n) for s, i, k, m, n in rows])
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
               [(u, s, i, _fmt(m), _fmt(neg), n) for u, s, i, m, neg, n in rows])
    plt = _pyplot()
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
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    rows = []
    for direction, points in sorted(curves.items()):
        points.sort()
        window = max(1, len(points) // 50)
        smooth = np.convolve([l for _, l in points], np.ones(window) / window, mode="valid")
        updates = [u for u, _ in points][window - 1:]
        rows += [(u, direction, _fmt(l)) for u, l in zip(updates, smooth)]
        ax.plot(updates, smooth, label=direction, lw=1)
    report.csv("losses.csv", ["update", "direction", "loss_running_mean"], rows)
    ax.set_xlabel("update")
    ax.set_ylabel("training loss (bits per token)")
    ax.set_title("per-direction training loss (running mean)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    report.png("losses.png", fig)


def only_updates(series, first, last):
    """The series restricted to updates first..last (e.g. Figure 1 at one checkpoint)."""
    kept = {key: {u: c for u, c in values.items() if first <= u <= last} for key, values in series.items()}
    return {key: values for key, values in kept.items() if values}


def draw(path, out, permutations=10000, seed=0, updates=None):
    """Every figure of one run or probe folder (or its similarity.csv); ``updates``
    (first, last) keeps only those updates' rows."""
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    similarity = path if not os.path.isdir(path) else os.path.join(folder, "similarity.csv")
    report = Report(out)
    if os.path.exists(similarity):
        series = read_similarity(similarity)
        if updates is not None:
            series = only_updates(series, *updates)
            if not series:
                raise SystemExit(f"{similarity} has no rows of updates {updates[0]}-{updates[1]}")
        statistics = figure1(series, report, permutations, seed)
        if statistics:
            print(summarize_statistics(statistics))
        tests = figure2a(series, report)
        if tests:
            print(summarize_paired_tests(tests))
        figure3(series, report)
    else:
        report.skip("Figures 1, 2a, 3, conflicts", f"no {similarity} (train with --similarity-interval)")
    loss_path = os.path.join(folder, "direction_losses.csv")
    if os.path.exists(loss_path):
        losses(loss_path, report)
    else:
        report.skip("losses", f"no {loss_path}")
    return report


REFERENCE = "alone"  # Figure 2b: run folders named alone* trained the anchor by itself
COSINES = ("training", "probe")  # Figure 2b's x axes: per-batch training records, the probe
# Where each cosine and metric sits in figure2b_rows' rows and in partner_means' means.
ROW_COLUMN = {"training": 2, "probe": 4, "bleu": 5, "chrf": 6}
MEAN_COLUMN = {"training": 2, "probe": 3, "bleu": 4, "chrf": 5}


def _pair_mean(path, group, anchor):
    """(partner, mean cosine over the recorded updates, updates) of the one pair with the
    anchor in group of the similarity.csv at path; None when it has not exactly one."""
    series = read_similarity(path) if os.path.exists(path) else {}
    pairs = [p for g, p in series if g == group and anchor in p]
    if len(pairs) != 1:
        return None
    values = list(series[group, pairs[0]].values())
    return next(d for d in pairs[0] if d != anchor), float(np.mean(values)), len(values)


def figure2b_rows(runs_dir, anchor, group):
    """Runs under runs_dir (folders with a train.log, from scripts/figure2b.sh): [(run,
    partner, mean cosine of anchor and partner over the training records, records, the
    probe's mean cosine (NaN without RUN/probe/similarity.csv), anchor BLEU, chrF)] of the
    two-direction runs, [(run, BLEU, chrF)] of the anchor-alone runs (folders named alone*),
    and [(run, why it was left out)]."""
    rows, reference, left_out = [], [], []
    for log in sorted(glob.glob(os.path.join(runs_dir, "*", "train.log"))):
        run = os.path.dirname(log)
        name = os.path.basename(run)
        scores_path = os.path.join(run, "scores.json")
        if not os.path.exists(scores_path):
            left_out.append((name, "no scores.json yet"))
            continue
        with open(scores_path) as f:
            scores = json.load(f)
        if scores.get("direction") != anchor:
            left_out.append((name, f"scores.json scores {scores.get('direction')}, not {anchor}"))
            continue
        if name.startswith(REFERENCE):
            reference.append((name, scores["bleu"], scores["chrf"]))
            continue
        training = _pair_mean(os.path.join(run, "similarity.csv"), group, anchor)
        if training is None:
            left_out.append((name, f"not one pair with {anchor} in group '{group}' of similarity.csv"))
            continue
        partner, cosine, records = training
        probe = _pair_mean(os.path.join(run, "probe", "similarity.csv"), group, anchor)
        if probe is not None and probe[0] != partner:
            raise SystemExit(f"{run}: the probe measured {anchor} with {probe[0]}, training with {partner}")
        rows.append((name, partner, cosine, records, math.nan if probe is None else probe[1],
                     scores["bleu"], scores["chrf"]))
    return rows, reference, left_out


def partner_means(rows):
    """[(partner, runs, mean training cosine, mean probe cosine, mean BLEU, mean chrF)] over
    each partner's seeds."""
    by_partner = defaultdict(list)
    for _, partner, cosine, _, probe, bleu, chrf in rows:
        by_partner[partner].append((cosine, probe, bleu, chrf))
    return [(p, len(v), *map(float, np.mean(v, axis=0))) for p, v in sorted(by_partner.items())]


def rank_correlations(means):
    """[(cosine, metric, partners, Spearman's rho, two-sided p)] of the anchor's BLEU and chrF
    against its cosine with the partner (training records', and the probe's where every
    partner was probed), over the partners (seeds averaged); NaN below 3 partners or for a
    constant axis."""
    from scipy.stats import spearmanr

    result = []
    for cosine in COSINES:
        xs = [m[MEAN_COLUMN[cosine]] for m in means]
        if cosine == "probe" and not all(map(math.isfinite, xs)):
            continue
        for metric in ("bleu", "chrf"):
            ys = [m[MEAN_COLUMN[metric]] for m in means]
            if len(means) >= 3 and np.ptp(xs) > 0 and np.ptp(ys) > 0:
                r = spearmanr(xs, ys)
                result.append((cosine, metric, len(means), float(r.statistic), float(r.pvalue)))
            else:
                result.append((cosine, metric, len(means), math.nan, math.nan))
    return result


def figure2b(runs_dir, out, anchor, group):
    report = Report(out)
    rows, reference, left_out = figure2b_rows(runs_dir, anchor, group)
    for name, reason in left_out:
        report.skip(f"Figure 2b run {name}", reason)
    if not rows:
        report.skip("Figure 2b", f"no finished two-direction run under {runs_dir}")
        return report
    report.csv("fig2b_bleu_vs_similarity.csv",
               ["run", "partner", "mean_cosine", "updates", "probe_cosine", f"bleu_{anchor}", f"chrf_{anchor}"],
               [(n, p, _fmt(c), u, _fmt(pc), b, ch) for n, p, c, u, pc, b, ch in rows]
               + [(n, "", "", "", "", b, ch) for n, b, ch in reference])
    means = partner_means(rows)
    correlations = rank_correlations(means)
    report.csv("fig2b_correlation.csv", ["cosine", "metric", "partners", "spearman", "p_value"],
               [(c, m, n, _fmt(r), _fmt(p)) for c, m, n, r, p in correlations])
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    cosines = sorted({c for c, *_ in correlations}, key=COSINES.index)
    fig, axes = plt.subplots(len(cosines), 2, figsize=(10, 4.2 * len(cosines)), squeeze=False)
    x_label = {"training": f"mean per-batch gradient cosine of {anchor} with X over training",
               "probe": f"probe gradient cosine of {anchor} with X (scored checkpoint)"}
    for ax, (cosine, metric, n, rho, p) in zip(axes.flat, correlations):
        ax.scatter([r[ROW_COLUMN[cosine]] for r in rows], [r[ROW_COLUMN[metric]] for r in rows], s=18,
                   label="one run")
        for m in means:
            ax.annotate(m[0], (m[MEAN_COLUMN[cosine]], m[MEAN_COLUMN[metric]]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        name = {"bleu": "BLEU", "chrf": "chrF"}[metric]
        if reference:
            level = float(np.mean([r[1 if metric == "bleu" else 2] for r in reference]))
            ax.axhline(level, color="C3", ls="--", lw=1,
                       label=f"{anchor} alone ({len(reference)} run{'s' * (len(reference) > 1)}): {level:.2f}")
        rank = f"Spearman rho = {rho:.2f}, p = {p:.2g}" if math.isfinite(rho) else "no rank correlation"
        ax.set_title(f"{anchor} {name} vs {cosine} cos({anchor}, X) in '{group}'\n{rank} over {n} partners",
                     fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.margins(x=0.15)
        ax.set_xlabel(x_label[cosine], fontsize=8)
        ax.set_ylabel(f"{anchor} {name}")
        ax.legend(fontsize=7)
    report.png("fig2b_bleu_vs_similarity.png", fig)
    for cosine, metric, n, rho, p in correlations:
        why = ("fewer than 3 partners" if n < 3 else "the cosine is the same for every partner"
               if np.ptp([m[MEAN_COLUMN[cosine]] for m in means]) == 0 else f"{metric} is the same for every partner")
        print(f"[figures] Figure 2b, {anchor} {metric} vs {cosine} cosine: Spearman {rho:+.3f} over {n} "
              f"partners, p = {p:.4g}" if math.isfinite(rho) else
              f"[figures] Figure 2b, {anchor} {metric} vs {cosine} cosine: no rank correlation, {why}")
    return report


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="a run or probe folder, or its similarity.csv; with --figure2b the "
                                "folder of scripts/figure2b.sh's runs")
    p.add_argument("--out", help="output folder (default: PATH's folder/figures)")
    p.add_argument("--figure2b", action="store_true", help="draw Figure 2b from a folder of runs")
    p.add_argument("--figure2a", metavar="EN_XX_PATH", default=None,
                   help="draw Figure 2a and its paired tests from PATH (the xx-en model's probe) and "
                        "EN_XX_PATH (the en-xx model's)")
    p.add_argument("--anchor", default="en-fr", help="Figure 2b: the direction whose BLEU is plotted")
    p.add_argument("--group", default="model", help="Figure 2b: the parameter group of the cosine")
    p.add_argument("--permutations", type=int, default=10000, help="of the proximity tests")
    p.add_argument("--seed", type=int, default=0, help="of the proximity tests")
    p.add_argument("--updates", default=None, metavar="FIRST-LAST",
                   help="only these updates' rows (e.g. 800-800: Figure 1 at one checkpoint)")
    a = p.parse_args(argv)
    updates = None
    if a.updates:
        try:
            first, _, last = a.updates.partition("-")
            updates = (int(first), int(last or first))
        except ValueError:
            p.error(f"--updates: expected FIRST-LAST, got {a.updates!r}")
    out = a.out or os.path.join(a.path if os.path.isdir(a.path) else os.path.dirname(a.path), "figures")
    if a.figure2b:
        report = figure2b(a.path, out, a.anchor, a.group)
    elif a.figure2a:
        report = draw_figure2a(a.path, a.figure2a, a.out or os.path.join(
            a.path if os.path.isdir(a.path) else os.path.dirname(a.path), "figure2a"))
    elif os.path.exists(a.path):
        report = draw(a.path, out, a.permutations, a.seed, updates)
    else:
        raise SystemExit(f"no such file or folder: {a.path}")
    print(report)


if __name__ == "__main__":
    main()
