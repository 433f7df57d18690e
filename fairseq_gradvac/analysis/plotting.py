"""What every figure shares: matplotlib without a display, the report of the files written and
the figures skipped (one line per reason), the number format of the CSVs, the colour scale,
the clustered heatmap with its dendrogram."""
import csv
import math
import os

import numpy as np

from . import languages


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
        pyplot().close(fig)

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


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fmt(value):
    return f"{value:.6g}" if math.isfinite(value) else ""


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


def clustered_heatmap(report, name, tree, codes, matrix, title):
    """The matrix (already in the tree's leaf order) under its dendrogram; rows labelled
    with genus, columns coloured by script."""
    from matplotlib.patches import Patch
    from scipy.cluster.hierarchy import dendrogram

    plt = pyplot()
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
