"""Table 1 of the paper from evaluated runs: BLEU per direction, En->Any / Any->En averages,
the High/Med/Low data-imbalance table, and the zero-shot directions.

    python -m fairseq_gradvac.results_table RUNS_DIR --high fr,cs --med tr --low hi \
        --zero-shot fr-cs,cs-fr --out RUNS_DIR/table1

RUNS_DIR holds one folder per run named ROW_SAMPLING_seedN (as scripts/reproduce_table1.sh
writes them), each with the bleu.json of fairseq_gradvac.evaluate, or, for the bilingual
row, one sub-folder per direction with its own bleu.json. Seeds are averaged; the spread
(max - min over seeds) is shown when there is more than one.
"""
import argparse
import glob
import json
import os
import re
from collections import defaultdict

ROW_ORDER = [
    ("bilingual", "(1) Bilingual"), ("multilingual", "(2) Multilingual"),
    ("gradnorm", "(3) GradNorm"), ("mgda", "(4) MGDA"), ("pcgrad", "(5) PCGrad"),
    ("pcgrad_all_layer", "(6) PCGrad w. all_layer"), ("gradvac_fixed_obj", "(7) GradVac w. fixed_obj"),
    ("gradvac_whole_model", "(8) GradVac w. whole_model"), ("gradvac_all_layer", "(9) GradVac w. all_layer"),
]
_RUN = re.compile(r"^(?P<row>.+)_(?P<sampling>t\d+)_seed(?P<seed>\d+)$")


def load_run(path):
    """{direction: BLEU} of one run folder (a bilingual run merges its per-direction models)."""
    single = os.path.join(path, "bleu.json")
    files = [single] if os.path.exists(single) else sorted(glob.glob(os.path.join(path, "*", "bleu.json")))
    scores = {}
    for f in files:
        with open(f) as fh:
            for d, r in json.load(fh)["directions"].items():
                scores[d] = r["bleu"]
    return scores


def collect(runs_dir):
    """{(row, sampling): [ {direction: BLEU} per seed ]}"""
    runs = defaultdict(list)
    for path in sorted(glob.glob(os.path.join(runs_dir, "*"))):
        m = _RUN.match(os.path.basename(path))
        if m and os.path.isdir(path):
            scores = load_run(path)
            if scores:
                runs[(m["row"], m["sampling"])].append(scores)
    return runs


def _mean(xs):
    return sum(xs) / len(xs) if xs else None


def _cell(values):
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{_mean(values):.2f} ±{(max(values) - min(values)) / 2:.2f}"


def _per_seed(seeds, directions):
    """Per seed, the average BLEU over ``directions`` (None if a direction is missing)."""
    out = []
    for s in seeds:
        if all(d in s for d in directions) and directions:
            out.append(_mean([s[d] for d in directions]))
    return out


def _present(runs):
    return {d for seeds in runs.values() for s in seeds for d in s}


def table1(runs, langs, zero_shot):
    present = _present(runs)  # a side no run trained (e.g. En->Any only) gets no columns
    en_any = [f"en-{l}" for l in langs if f"en-{l}" in present]
    any_en = [f"{l}-en" for l in langs if f"{l}-en" in present]
    head = (en_any and en_any + ["En->Any avg"]) + (any_en and any_en + ["Any->En avg"])
    head += zero_shot and ["zero-shot avg"]
    lines = ["| row | T | " + " | ".join(head) + " |", "|---|---|" + "---:|" * len(head)]
    known = [r for r, _ in ROW_ORDER]
    rows = sorted(runs, key=lambda k: (known.index(k[0]) if k[0] in known else len(known), k[0], k[1]))
    for row, sampling in rows:
        seeds = runs[(row, sampling)]
        cells = []
        for side in (en_any, any_en):
            if side:
                cells += [_cell(_per_seed(seeds, [d])) for d in side] + [_cell(_per_seed(seeds, side))]
        if zero_shot:
            cells.append(_cell(_per_seed(seeds, zero_shot)))
        name = dict(ROW_ORDER).get(row, row)
        lines.append(f"| {name} | {sampling[1:]} | " + " | ".join(cells) + f" |")
    seeds_used = sorted({len(v) for v in runs.values()})
    lines.append("")
    lines.append(f"Seeds per row: {', '.join(map(str, seeds_used))}; with several, cells show "
                 "mean ±half the range.")
    return "\n".join(lines)


def imbalance_table(runs, levels, rows=("multilingual", "pcgrad_all_layer", "gradvac_all_layer")):
    """The paper's High/Med/Low table: rows are (method, T), averages per resource level,
    in the paper's order (multilingual at each T first, then the methods)."""
    lines = []
    present = _present(runs)
    for side, fmt in (("Any->En", "{}-en"), ("En->Any", "en-{}")):
        groups = {name: [fmt.format(l) for l in ls] for name, ls in levels.items() if ls}
        every = [d for ds in groups.values() for d in ds]
        if not present & set(every):
            continue
        lines += [f"| {side} | " + " | ".join(groups) + " | All |", "|---|" + "---:|" * (len(groups) + 1)]
        for row, sampling in sorted((k for k in runs if k[0] in rows),
                                    key=lambda k: (rows.index(k[0]), int(k[1][1:]))):
            seeds = runs[(row, sampling)]
            cells = [_cell(_per_seed(seeds, ds)) for ds in groups.values()] + [_cell(_per_seed(seeds, every))]
            label = f"T={sampling[1:]}" if row == "multilingual" else f"{dict(ROW_ORDER).get(row, row)} T={sampling[1:]}"
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs_dir")
    p.add_argument("--high", default="fr,cs")
    p.add_argument("--med", default="tr")
    p.add_argument("--low", default="hi")
    p.add_argument("--zero-shot", default="")
    p.add_argument("--out", default=None, help="also write OUT.md and OUT.json")
    a = p.parse_args(argv)
    levels = {"High": [l for l in a.high.split(",") if l], "Med": [l for l in a.med.split(",") if l],
              "Low": [l for l in a.low.split(",") if l]}
    langs = [l for ls in levels.values() for l in ls]
    zero_shot = [d for d in a.zero_shot.split(",") if d]
    runs = collect(a.runs_dir)
    if not runs:
        raise SystemExit(f"no evaluated runs (ROW_T_seedN/bleu.json) under {a.runs_dir}")
    text = "\n".join([
        "## BLEU per direction (Table 1 layout)", "", table1(runs, langs, zero_shot), "",
        "## Data imbalance (High / Med / Low resource)", "", imbalance_table(runs, levels),
    ])
    if zero_shot:
        head = "| row | T | " + " | ".join(zero_shot) + " |"
        rows = [f"| {dict(ROW_ORDER).get(r, r)} | {s[1:]} | "
                + " | ".join(_cell(_per_seed(v, [d])) for d in zero_shot) + " |"
                for (r, s), v in sorted(runs.items())]
        text += "\n## Zero-shot directions\n\n" + "\n".join([head, "|---|---|" + "---:|" * len(zero_shot)] + rows) + "\n"
    print(text)
    if a.out:
        with open(a.out + ".md", "w") as f:
            f.write(text)
        with open(a.out + ".json", "w") as f:
            json.dump({f"{r}_{s}": v for (r, s), v in runs.items()}, f, indent=2)


if __name__ == "__main__":
    main()
