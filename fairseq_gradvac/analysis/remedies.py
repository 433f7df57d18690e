"""Which remedy helps, and where: every row of the study against the baseline row (multilingual
T=5), seed by seed, drawn as one figure.

    python -m fairseq_gradvac.analysis.remedies docs/data/study/libreoffice_study-demo_cpu \
        --langs fr,cs,tr,hi --low-resource en-hi,hi-en \
        --zero-shot fr-cs,cs-fr,fr-tr,tr-fr,fr-hi,hi-fr,cs-tr,tr-cs,cs-hi,hi-cs,tr-hi,hi-tr \
        --baseline multilingual_t5 --out docs/data/study/libreoffice_study-demo_cpu/remedies

Read from the result bundles alone (RUN/bleu.json at the budget, RUN/half/bleu.json at half of
it; run.json and train.log for the time). For each row, budget and cell (the En->Any, Any->En
and zero-shot averages, each low-resource direction; BLEU and chrF) the seeds' differences
delta_s = row_s - baseline_s, their mean and t-based 95% interval and the two-sided paired
t-test (results_table.paired_t: the row and the baseline share each seed's initialisation
and, at the same T, its batch order); the same for the zero-shot off-target rate (percentage
points). Holm's correction runs over a row's tests in this figure (its cells x metrics x the
two budgets, the off-target rate included). Time: fairseq's "done training in" per update of
each run's finished invocations, on the study's machines with the other core busy (not a
benchmark: benchmarks/ measures cost).

Writes OUT/remedies.csv (every test), OUT/remedies.md (the tables, as printed) and
OUT/remedies.png (one panel per cell, BLEU; off-target in its own panel).
"""
import argparse

from ..evaluation import results_table as rt
from .plotting import Report, fmt, pyplot

BUDGETS = (("full", ""), ("half", "half"))
OFF_TARGET = "zero-shot off-target"
HEADER = ["row", "sampling", "label", "budget", "metric", "cell", "seeds", "differences", "mean",
          "ci_low", "ci_high", "p", "p_holm"]


def row_label(row, sampling):
    """'FAMO T=5', 'Multilingual T=1', 'Multilingual T=cooldown': the paper's number dropped."""
    label = rt._label(row).split(") ", 1)[-1]
    return f"{label} T={rt._t(sampling)}"


def _cells(langs, zero_shot, low, present):
    """{cell: directions}: the three averages, then each low-resource direction."""
    every = rt.seed_cells(langs, zero_shot, present)
    cells = {c: every[c] for c in ("En->Any avg", "Any->En avg", "zero-shot avg") if c in every}
    return {**cells, **{d: [d] for d in low if d in present}}


def differences(runs_dir, baseline, langs, zero_shot, low):
    """Every row against ``baseline`` (ROW_SAMPLING), per budget, metric and cell, and the
    zero-shot off-target rate: [{row, sampling, label, budget, metric, cell, seeds,
    differences, mean, ci, p, p_holm}], Holm over each row's tests here."""
    base_key = tuple(baseline.rsplit("_", 1))
    tests = []
    for budget, at in BUDGETS:
        found = []
        for metric in rt.METRICS:  # (a metric the baseline was not scored with gives none)
            runs = rt.collect_seeds(runs_dir, metric, at)
            found += rt.seed_differences(runs, base_key, _cells(langs, zero_shot, low, rt._present(runs)), metric)
        if zero_shot:  # the off-target rate in percentage points, averaged as a cell's scores are
            rates = {key: {s: {d: 100 * r for d, r in rt.load_off_target(path, at).items()} for s, path in seeds.items()}
                     for key, seeds in rt.run_folders(runs_dir, at).items()}
            found += rt.seed_differences(rates, base_key, {OFF_TARGET: zero_shot}, "rate")
        tests += [dict(t, budget=budget, label=row_label(t["row"], t["sampling"])) for t in found]
    return rt._holm_by(tests, lambda t: (t["row"], t["sampling"]))


def seconds_per_update(runs_dir):
    """{(row, sampling): [seconds of training per update, per seed]} from the bundles' logs."""
    out = {}
    for key, seeds in rt.run_folders(runs_dir).items():
        per_update = []
        for s in sorted(seeds):
            seconds, updates = rt.timed_run(seeds[s])
            if updates > 0:
                per_update.append(seconds / updates)
        if per_update:
            out[key] = per_update
    return out


def _signs(values):
    return "".join("+" if v > 0 else "-" if v < 0 else "0" for v in values)


def _cell_text(t, alpha):
    if t["ci"] is None:
        return f"{t['mean']:+.2f} (n=1)"
    p = "-" if t["p"] is None else f"{t['p']:.3f}"  # no p: the same difference in every seed
    text = f"{t['mean']:+.2f} [{t['ci'][0]:+.2f}, {t['ci'][1]:+.2f}] p {p} {_signs(t['differences'])}"
    return f"**{text}**" if t.get("p_holm", 1) < alpha else text


def tables(tests, times, baseline, alpha=0.05):
    """Markdown: per budget and metric, row x cell (mean difference [95% interval], p, each
    seed's sign; bold where Holm's p < alpha), then the tests per row and the time per update."""
    keys = sorted({(t["row"], t["sampling"]) for t in tests}, key=rt._row_order)
    out = [f"Each row minus {baseline} of the same seed: mean [t-based 95% interval], two-sided paired "
           "t-test's p, each seed's sign in seed order; bold: below the threshold after Holm.", ""]
    for budget, _ in BUDGETS:
        for metric, name in list(rt.METRICS.items()) + [("rate", "off-target rate (percentage points)")]:
            mine = [t for t in tests if t["budget"] == budget and t["metric"] == metric]
            if not mine:
                continue
            cells = list(dict.fromkeys(t["cell"] for t in mine))
            out += [f"### {name}, {'at the budget' if budget == 'full' else 'at half the budget'}", "",
                    "| row | seeds | " + " | ".join(cells) + " |", "|---|---:|" + "---:|" * len(cells)]
            for key in keys:
                row = {t["cell"]: t for t in mine if (t["row"], t["sampling"]) == key}
                if row:
                    n = max(len(t["seeds"]) for t in row.values())
                    out.append(f"| {row_label(*key)} | {n} | "
                               + " | ".join(_cell_text(row[c], alpha) if c in row else "-" for c in cells) + " |")
            out.append("")
    out += ["Tests per row (Holm's family: the row's tests above, both budgets) with p < "
            f"{alpha}, uncorrected / after Holm:", ""]
    for key in keys:
        mine = [t for t in tests if (t["row"], t["sampling"]) == key and t["p"] is not None]
        out.append(f"- {row_label(*key)}: {sum(t['p'] < alpha for t in mine)} / "
                   f"{sum(t['p_holm'] < alpha for t in mine)} of {len(mine)}")
    out += ["", "Training time per update (fairseq's \"done training in\" over the updates of the "
            "invocations that printed it, mean over seeds; the study's machines, one thread, the other "
            "core busy, rows run in different work periods on different CPUs: not comparable across "
            "rows; benchmarks/ measures cost):", "",
            "| row | s per update |", "|---|---:|"]
    for key in sorted(times, key=rt._row_order):
        out.append(f"| {row_label(*key)} | {rt._cell(times[key])} |")
    return "\n".join(out) + "\n"


def draw(tests, report, baseline, alpha=0.05, metric="bleu"):
    """One panel per cell: each row's mean difference at the budget (filled) and at half of
    it (open), with its 95% interval; the off-target rate's panel last."""
    plt = pyplot()
    mine = [t for t in tests if t["metric"] in (metric, "rate")]
    cells = list(dict.fromkeys(t["cell"] for t in mine))
    keys = sorted({(t["row"], t["sampling"]) for t in mine}, key=rt._row_order)
    fig, axes = plt.subplots(1, len(cells), figsize=(2.6 * len(cells) + 2.2, 0.42 * len(keys) + 1.6),
                             sharey=True, squeeze=False)
    for ax, cell in zip(axes[0], cells):
        # the panel spans every seed's difference and the intervals resting on >= 3 seeds;
        # with 2 seeds (1 degree of freedom) the interval is 12.7 standard errors wide and runs off
        here = [t for t in mine if t["cell"] == cell]
        span = [d for t in here for d in t["differences"]] + [0.0]
        span += [x for t in here if t["ci"] is not None and len(t["seeds"]) >= 3 for x in t["ci"]]
        pad = 0.08 * (max(span) - min(span) or 1.0)
        ax.set_xlim(min(span) - pad, max(span) + pad)
        for i, key in enumerate(keys):
            for budget, shift, face in (("full", -0.15, None), ("half", 0.15, "white")):
                t = next((t for t in mine if (t["row"], t["sampling"]) == key and t["cell"] == cell
                          and t["budget"] == budget), None)
                if t is None:
                    continue
                y = len(keys) - 1 - i + shift
                color = "C3" if t.get("p_holm", 1) < alpha else "C0"
                if t["ci"] is not None:
                    ax.plot(t["ci"], [y, y], color=color, linewidth=1.2)
                ax.plot([t["mean"]], [y], "o", color=color, markerfacecolor=face or color, markersize=5)
                ax.plot(t["differences"], [y] * len(t["differences"]), "|", color="0.4", markersize=6)
        ax.axvline(0, color="grey", linewidth=0.8)
        ax.grid(axis="x", alpha=0.3)
        unit = "pp" if cell == OFF_TARGET else metric.upper() if metric == "bleu" else "chrF"
        ax.set_title(f"{cell}\n({unit}, row - {baseline})", fontsize=8)
    seeds = {key: max(len(t["seeds"]) for t in mine if (t["row"], t["sampling"]) == key) for key in keys}
    most = max(seeds.values())
    labels = [row_label(*key) + ("" if seeds[key] == most else f" (n={seeds[key]})") for key in keys]
    axes[0][0].set_yticks(range(len(keys)), labels[::-1], fontsize=8)
    fig.suptitle("Difference to the baseline over seeds: mean and t-based 95% interval; filled: at the budget, "
                 "open: at half of it; ticks: each seed; red: significant after Holm", fontsize=8)
    report.png("remedies.png", fig)


def write_csv(tests, report):
    rows = [[t["row"], t["sampling"], t["label"], t["budget"], t["metric"], t["cell"],
             " ".join(map(str, t["seeds"])), " ".join(fmt(d) for d in t["differences"]), fmt(t["mean"]),
             fmt(t["ci"][0]) if t["ci"] else "", fmt(t["ci"][1]) if t["ci"] else "",
             fmt(t["p"]) if t["p"] is not None else "", fmt(t["p_holm"]) if "p_holm" in t else ""]
            for t in tests]
    report.csv("remedies.csv", HEADER, rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs_dir")
    ap.add_argument("--langs", default="fr,cs,tr,hi", help="the languages paired with English")
    ap.add_argument("--low-resource", default="en-hi,hi-en", help="directions drawn one by one")
    ap.add_argument("--zero-shot", default="", help="the zero-shot directions (their average, their off-target rate)")
    ap.add_argument("--baseline", default="multilingual_t5", help="ROW_SAMPLING every row is compared with")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--out", required=True, help="folder for remedies.csv, .md, .png")
    a = ap.parse_args(argv)
    rt.check_budgets(a.runs_dir)
    split = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    tests = differences(a.runs_dir, a.baseline, split(a.langs), split(a.zero_shot), split(a.low_resource))
    if not tests:
        raise SystemExit(f"no row to compare with {a.baseline} under {a.runs_dir}")
    report = Report(a.out)
    text = tables(tests, seconds_per_update(a.runs_dir), a.baseline, a.alpha)
    for budget, _ in BUDGETS:
        if not any(t["budget"] == budget for t in tests):
            text += f"\n(No {a.baseline} scores {'at the budget' if budget == 'full' else 'at half the budget'}: no comparison there.)\n"
    print(text)
    with open(report.path("remedies.md"), "w") as f:
        f.write(text)
    write_csv(tests, report)
    draw(tests, report, a.baseline, a.alpha)
    print(report)


if __name__ == "__main__":
    main()
