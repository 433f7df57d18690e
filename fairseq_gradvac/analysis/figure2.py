"""Figure 2a: cos(x-en, y-en) against cos(en-x, en-y), with the paired tests, from one run or
from an xx-en and an en-xx model; Figure 2b: the anchor's BLEU and chrF against its cosine
with the other direction, over the runs of scripts/figure2b.sh."""
import glob
import json
import math
import os
from collections import defaultdict

import numpy as np

from ..gradients.similarity import AGGREGATES
from .figure1 import MIN_LANGUAGES, too_few_languages
from .plotting import Report, fmt, pyplot
from .records import language_of, pair_kind, pair_means, read_similarity


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
    panels = [(g, x_en_vs_en_x(series, g)) for g in AGGREGATES]
    panels = [(g, rows) for g, rows in panels if rows]
    if not panels:
        report.skip("Figure 2a", "no language pair with both cos(x-en, y-en) and cos(en-x, en-y)")
        return []
    languages = sorted({lang for _, rows in panels for x, y, _, _ in rows for lang in (x, y)})
    if len(languages) < MIN_LANGUAGES:  # one language pair: no scatter, no test
        report.skip("Figure 2a", too_few_languages(languages))
        return []
    report.csv("fig2a_xx-en_vs_en-xx.csv", ["group", "x", "y", "cos_xx_en", "cos_en_xx"],
               [(g, x, y, fmt(a), fmt(b)) for g, rows in panels for x, y, a, b in rows])
    tests = paired_tests(panels)
    report.csv("fig2a_paired_test.csv", ["group", "pairs", "mean_cos_xx_en", "mean_cos_en_xx", "mean_difference",
                                         "pairs_positive", "alternative", "wilcoxon_p"],
               [(g, n, fmt(a), fmt(b), fmt(d), k, alt, fmt(p)) for g, n, a, b, d, k, alt, p in tests])
    plt = pyplot()
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
               [(n, p, fmt(c), u, fmt(pc), b, ch) for n, p, c, u, pc, b, ch in rows]
               + [(n, "", "", "", "", b, ch) for n, b, ch in reference])
    means = partner_means(rows)
    correlations = rank_correlations(means)
    report.csv("fig2b_correlation.csv", ["cosine", "metric", "partners", "spearman", "p_value"],
               [(c, m, n, fmt(r), fmt(p)) for c, m, n, r, p in correlations])
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
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
