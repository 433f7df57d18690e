"""Table 1 of the paper from evaluated runs: BLEU and chrF per direction, En->Any / Any->En
averages, the High/Med/Low data-imbalance table, the zero-shot directions, and each method
against a baseline by sacrebleu's paired bootstrap test on every seed's test outputs.

    python -m fairseq_gradvac.evaluation.results_table RUNS_DIR --high fr,cs --med tr --low hi \
        --zero-shot fr-cs,cs-fr --baseline multilingual_t5 --out RUNS_DIR/table1

RUNS_DIR holds one folder per run named ROW_SAMPLING_seedN (as scripts/reproduce_table1.sh
writes them, or the study's result bundles, fairseq_gradvac.evaluation.study_bundle), each with the
bleu.json of fairseq_gradvac.evaluation.evaluate, or, for the bilingual row, one sub-folder per
direction with its own bleu.json; ``--at half`` reads the scores of the checkpoint at half
the budget (RUN/half/bleu.json) instead. Cells are the mean ± the standard deviation over
seeds (n - 1 in the denominator); a cell resting on fewer seeds than its row has (a seed
without one of the cell's directions) says so, "(n=2)". With ``--expect ROW,... --seeds
1,2,3`` the runs not there yet are listed and their rows marked "missing". A bundle trained
to another budget than RUNS_DIR/budget.json's is refused. The significance tables compare each run with the baseline run of the same
seed on each direction's test set (the hypotheses evaluate keeps): sacrebleu's paired
bootstrap resampling (sacrebleu.significance.PairedTest, test_type "bs"; its seed,
SACREBLEU_SEED, default 12345), p < --alpha counted per seed. RUNS_DIR/data.json
(fairseq_gradvac.evaluation.sampling_shares) and RUNS_DIR/budget.json (fairseq_gradvac.evaluation.budget) are
shown when present.
"""
import argparse
import glob
import json
import math
import os
import re
from collections import defaultdict

ROW_ORDER = [
    ("bilingual", "(1) Bilingual"), ("multilingual", "(2) Multilingual"),
    ("gradnorm", "(3) GradNorm"), ("mgda", "(4) MGDA"), ("pcgrad", "(5) PCGrad"),
    ("pcgrad_all_layer", "(6) PCGrad w. all_layer"), ("gradvac_fixed_obj", "(7) GradVac w. fixed_obj"),
    ("gradvac_whole_model", "(8) GradVac w. whole_model"), ("gradvac_all_layer", "(9) GradVac w. all_layer"),
    ("gradvac_all_layer_low", "(9) GradVac w. all_layer, low-resource directions only"),
]
METRICS = {"bleu": "BLEU", "chrf": "chrF"}
_RUN = re.compile(r"^(?P<row>.+)_(?P<sampling>t\d+)_seed(?P<seed>\d+)$")


def _score_files(path, at=""):
    """The bleu.json files of a run folder: RUN/[AT/]bleu.json, or a bilingual run's
    RUN/DIRECTION/[AT/]bleu.json."""
    single = os.path.join(path, at, "bleu.json")
    return [single] if os.path.exists(single) else sorted(glob.glob(os.path.join(path, "*", at, "bleu.json")))


def load_run(path, metric="bleu", at=""):
    """{direction: score} of one run folder (a bilingual run merges its per-direction models);
    a direction scored without ``metric`` (an older bleu.json without chrF) is left out."""
    scores = {}
    for f in _score_files(path, at):
        with open(f) as fh:
            for d, r in json.load(fh)["directions"].items():
                if metric in r:
                    scores[d] = r[metric]
    return scores


def test_outputs(path, at=""):
    """{direction: (hypotheses file, reference file)} of one run folder, for the directions
    whose evaluation kept them; relative paths are relative to the bleu.json."""
    files = {}
    for f in _score_files(path, at):
        with open(f) as fh:
            for d, r in json.load(fh)["directions"].items():
                if r.get("hypotheses") and r.get("reference"):
                    here = os.path.dirname(f)
                    files[d] = (os.path.join(here, r["hypotheses"]),
                                os.path.normpath(os.path.join(here, r["reference"])))
    return files


def run_folders(runs_dir, at=""):
    """{(row, sampling): {seed: folder}} of the evaluated runs."""
    runs = defaultdict(dict)
    for path in sorted(glob.glob(os.path.join(runs_dir, "*"))):
        m = _RUN.match(os.path.basename(path))
        if m and os.path.isdir(path) and _score_files(path, at):
            runs[(m["row"], m["sampling"])][int(m["seed"])] = path
    return runs


def load_off_target(path, at=""):
    """{direction: off-target rate} of one run folder: bleu.json's, or (scored before it had
    one) computed from the kept hypotheses among the languages the run scored."""
    from .evaluate import read_lines
    from .off_target import known, off_target

    rates = {}
    for f in _score_files(path, at):
        with open(f) as fh:
            scores = json.load(fh)["directions"]
        languages = sorted({lang for d in scores for lang in d.split("-")})
        for d, r in scores.items():
            if "off_target" in r:
                rates[d] = r["off_target"]
            elif r.get("hypotheses") and known(languages):
                lines = read_lines(os.path.join(os.path.dirname(f), r["hypotheses"]))
                rates[d] = off_target(lines, d.split("-")[1], languages)["off_target"]
    return {d: r for d, r in rates.items() if r is not None}


def off_target_table(rates, zero_shot):
    """Off-target rates in %, mean ± std over seeds: each zero-shot direction, their average,
    and the supervised directions' average."""
    present = _present(rates)
    zero = [d for d in zero_shot if d in present]
    supervised = sorted(present - set(zero_shot))
    head = zero + (["zero-shot avg"] if zero else []) + (["supervised avg"] if supervised else [])
    lines = ["| row | T | " + " | ".join(head) + " |", "|---|---|" + "---:|" * len(head)]
    for row, sampling in sorted(rates, key=_row_order):
        seeds = [{d: 100 * v for d, v in s.items()} for s in rates[(row, sampling)]]
        cells = [_seed_cell(seeds, [d]) for d in zero]
        cells += [_seed_cell(seeds, zero)] if zero else []
        cells += [_seed_cell(seeds, supervised)] if supervised else []
        lines.append(f"| {_label(row)} | {sampling[1:]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def check_budgets(runs_dir):
    """Refuse a run whose bundle (RUN/run.json) was trained to another budget than
    RUNS_DIR/budget.json's: its scores are not comparable."""
    path = os.path.join(runs_dir, "budget.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        budget = json.load(f)["budget"]
    for run in sorted(glob.glob(os.path.join(runs_dir, "*", "run.json"))):
        with open(run) as f:
            trained = json.load(f)["budget"]
        if trained != budget:
            raise SystemExit(f"{os.path.dirname(run)} was trained to {trained} updates, but the study's "
                             f"budget ({path}) is {budget} updates: remove that bundle or the budget")


def collect(runs_dir, metric="bleu", at=""):
    """{(row, sampling): [ {direction: score} per seed, in seed order ]}"""
    runs = {}
    for key, seeds in run_folders(runs_dir, at).items():
        scores = [load_run(seeds[s], metric, at) for s in sorted(seeds)]
        if any(scores):
            runs[key] = scores
    return runs


def _mean(xs):
    return sum(xs) / len(xs) if xs else None


def _std(xs):
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _cell(values, seeds=None):
    """mean ±std of ``values``; "(n=N)" when they are fewer than the row's ``seeds``."""
    if not values:
        return "-"
    text = f"{values[0]:.2f}" if len(values) == 1 else f"{_mean(values):.2f} ±{_std(values):.2f}"
    if seeds is not None and len(values) < seeds:
        text += f" (n={len(values)})"
    return text


def _per_seed(seeds, directions):
    """Per seed, the average score over ``directions``; a seed without one of them is left
    out (the cell then says on how many seeds it rests)."""
    out = []
    for s in seeds:
        if all(d in s for d in directions) and directions:
            out.append(_mean([s[d] for d in directions]))
    return out


def _seed_cell(seeds, directions):
    return _cell(_per_seed(seeds, directions), len(seeds))


def _present(runs):
    return {d for seeds in runs.values() for s in seeds for d in s}


def _label(row):
    return dict(ROW_ORDER).get(row, row)


def _row_order(key):
    known = [r for r, _ in ROW_ORDER]
    return (known.index(key[0]) if key[0] in known else len(known), key[0], int(key[1][1:]))


def table1(runs, langs, zero_shot, expected=()):
    """Rows in ``expected`` ((row, sampling) keys) with no run yet are shown as "missing"."""
    present = _present(runs)  # a side no run trained (e.g. En->Any only) gets no columns
    en_any = [f"en-{l}" for l in langs if f"en-{l}" in present]
    any_en = [f"{l}-en" for l in langs if f"{l}-en" in present]
    head = (en_any and en_any + ["En->Any avg"]) + (any_en and any_en + ["Any->En avg"])
    head += zero_shot and ["zero-shot avg"]
    lines = ["| row | T | " + " | ".join(head) + " |", "|---|---|" + "---:|" * len(head)]
    for row, sampling in sorted(set(runs) | set(expected), key=_row_order):  # the paper's order
        seeds = runs.get((row, sampling))
        if seeds is None:
            cells = ["missing"] * len(head)
        else:
            cells = []
            for side in (en_any, any_en):
                if side:
                    cells += [_seed_cell(seeds, [d]) for d in side] + [_seed_cell(seeds, side)]
            if zero_shot:
                cells.append(_seed_cell(seeds, zero_shot))
        lines.append(f"| {_label(row)} | {sampling[1:]} | " + " | ".join(cells) + " |")
    seeds_used = sorted({len(v) for v in runs.values()})
    lines.append("")
    lines.append(f"Seeds per row: {', '.join(map(str, seeds_used))}; with several, cells show "
                 "mean ±standard deviation over seeds.")
    return "\n".join(lines)


def imbalance_table(runs, levels, rows=("multilingual", "pcgrad_all_layer", "gradvac_all_layer",
                                        "gradvac_all_layer_low")):
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
            cells = [_seed_cell(seeds, ds) for ds in groups.values()] + [_seed_cell(seeds, every)]
            label = f"T={sampling[1:]}" if row == "multilingual" else f"{_label(row)} T={sampling[1:]}"
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def zero_shot_table(runs, zero_shot):
    head = "| row | T | " + " | ".join(zero_shot) + " |"
    rows = [f"| {_label(r)} | {s[1:]} | " + " | ".join(_seed_cell(runs[(r, s)], [d]) for d in zero_shot) + " |"
            for r, s in sorted(runs, key=_row_order)]
    return "\n".join([head, "|---|---|" + "---:|" * len(zero_shot)] + rows)


def paired_bootstrap(baseline_file, system_file, reference_file, n_samples=1000):
    """{metric: (baseline score, system score, p-value, signature)} of sacrebleu's paired
    bootstrap resampling test (BLEU and chrF) of two systems' outputs on one test set."""
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    from .evaluate import read_lines

    refs, base, system = (read_lines(f) for f in (reference_file, baseline_file, system_file))
    if not len(refs) == len(base) == len(system):
        raise ValueError(f"{baseline_file}, {system_file} and {reference_file} have "
                         f"{len(base)}, {len(system)} and {len(refs)} lines")
    test = PairedTest([("baseline", base), ("system", system)], {"BLEU": BLEU(), "chrF": CHRF()},
                      [refs], test_type="bs", n_samples=n_samples)
    signatures, scores = test()
    names = [n for n in scores if n != "System"]  # sacrebleu's names: BLEU, chrF2
    return {key: (scores[name][0].score, scores[name][1].score, scores[name][1].p_value,
                  str(signatures[name])) for key, name in zip(METRICS, names)}


def significance(runs_dir, baseline, n_samples=1000, at=""):
    """Each run against the baseline run of the same seed, on every direction both kept the
    test outputs of (on the same reference file): [{row, sampling, seed, direction, metric,
    baseline, system, delta, p}]."""
    folders = run_folders(runs_dir, at)
    base_key = tuple(baseline.rsplit("_", 1))
    if base_key not in folders:
        return []
    tests = []
    for key in sorted(folders, key=_row_order):
        if key == base_key:
            continue
        for seed in sorted(set(folders[key]) & set(folders[base_key])):
            base_files, files = test_outputs(folders[base_key][seed], at), test_outputs(folders[key][seed], at)
            for d, (hyp, ref) in files.items():
                if d not in base_files or os.path.abspath(base_files[d][1]) != os.path.abspath(ref):
                    continue
                for metric, (b, s, p, sig) in paired_bootstrap(base_files[d][0], hyp, ref, n_samples).items():
                    tests.append({"row": key[0], "sampling": key[1], "seed": seed, "direction": d,
                                  "metric": metric, "baseline": round(b, 2), "system": round(s, 2),
                                  "delta": round(s - b, 2), "p": p, "signature": sig})
    return tests


def significance_tables(tests, baseline, alpha=0.05):
    """Per metric: method x direction, the mean difference to the baseline over seeds and
    how many seeds' differences are significant (p < alpha) in that direction (+ better,
    - worse); bold where every seed's is, in the same direction. Then the list of those."""
    if not tests:
        return "No paired tests (no baseline run, or no kept test outputs).\n"
    by = defaultdict(list)
    for t in tests:
        by[(t["metric"], t["row"], t["sampling"], t["direction"])].append(t)
    directions = list(dict.fromkeys(t["direction"] for t in tests))
    methods = list(dict.fromkeys((t["row"], t["sampling"]) for t in tests))
    lines, everywhere = [], []
    for metric, name in METRICS.items():
        lines += [f"### {name}: difference to {baseline} (seeds with p < {alpha:g}: better+ / worse-)", "",
                  "| row | T | " + " | ".join(directions) + " |", "|---|---|" + "---:|" * len(directions)]
        for row, sampling in methods:
            cells = []
            for d in directions:
                seeds = by.get((metric, row, sampling, d), [])
                if not seeds:
                    cells.append("-")
                    continue
                up = sum(t["p"] < alpha and t["delta"] > 0 for t in seeds)
                down = sum(t["p"] < alpha and t["delta"] < 0 for t in seeds)
                cell = f"{_mean([t['delta'] for t in seeds]):+.2f} ({up}+ {down}-/{len(seeds)})"
                if len(seeds) in (up, down):
                    cell = f"**{cell}**"
                    everywhere.append(f"{name} {d}: {_label(row)} T={sampling[1:]} "
                                      f"{'better' if up else 'worse'} in all {len(seeds)} seeds "
                                      f"(mean {_mean([t['delta'] for t in seeds]):+.2f})")
                cells.append(cell)
            lines.append(f"| {_label(row)} | {sampling[1:]} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(f"Significant (p < {alpha:g}) in the same direction in every seed:")
    lines += [f"- {e}" for e in everywhere] or ["- none"]
    signatures = dict.fromkeys((METRICS[t["metric"]], t["signature"]) for t in tests)
    lines += ["", "sacreBLEU paired-test signatures: " + "; ".join(f"{m} `{s}`" for m, s in signatures)]
    return "\n".join(lines) + "\n"


_DONE = re.compile(r"done training in ([0-9.]+) seconds")


def training_seconds(run):
    """fairseq's "done training in" of a run folder, summed over its invocations and (bilingual)
    its per-direction models; a killed invocation's time is not in any log line."""
    logs = [os.path.join(run, "train.log")] + sorted(glob.glob(os.path.join(run, "*", "train.log")))
    total = 0.0
    for log in logs:
        if os.path.exists(log):
            with open(log) as f:
                total += sum(float(m[1]) for m in _DONE.finditer(f.read()))
    return total


def times_table(runs_dir):
    lines = ["| row | T | training minutes per run |", "|---|---|---:|"]
    for (row, sampling), seeds in sorted(run_folders(runs_dir).items(), key=lambda kv: _row_order(kv[0])):
        minutes = [training_seconds(seeds[s]) / 60 for s in sorted(seeds)]
        lines.append(f"| {_label(row)} | {sampling[1:]} | {_cell(minutes)} |")
    return "\n".join(lines) + "\n"


def study_facts(runs_dir):
    """The study's data table and budget, when RUNS_DIR has them, and the training times."""
    text = []
    data = os.path.join(runs_dir, "data.md")
    if os.path.exists(data):
        with open(data) as f:
            text += ["## Training data and sampling shares", "", f.read()]
    budget = os.path.join(runs_dir, "budget.json")
    if os.path.exists(budget):
        with open(budget) as f:
            b = json.load(f)
        source = ", ".join(b.get("sources", [b.get("source", "")]))
        if b.get("holds"):
            text += ["## Budget", "", f"{b['budget']} updates: the mean validation loss of {source} lowered by "
                     f"{100 * b['drop']:.2f}% over the last {100 * b['fraction']:g}% of training "
                     f"(rule: < {100 * b['tolerance']:g}%, here and at the validation before).", ""]
        elif b.get("capped"):
            text += ["## Budget", "", f"{b['budget']} updates, the largest this study affords: the rule "
                     f"(< {100 * b['tolerance']:g}% over the last {100 * b['fraction']:g}%) does not hold "
                     f"there; the mean validation loss of {source} still lowered by {100 * b['drop']:.2f}% "
                     "over its last fifth.", ""]
    text += ["Training time on this machine (fairseq's \"done training in\", summed over a run's "
             "invocations):", "", times_table(runs_dir)]
    return "\n".join(text)


def missing_runs(runs_dir, expect, seeds):
    """The ROW_SAMPLING_seedN names of ``expect`` x ``seeds`` with no scores yet."""
    have = run_folders(runs_dir)
    return [f"{key}_seed{seed}" for key in expect for seed in seeds
            if seed not in have.get(tuple(key.rsplit("_", 1)), {})]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs_dir")
    p.add_argument("--at", choices=["full", "half"], default="full",
                   help="the scores of the checkpoint at the budget [full] or at half of it")
    p.add_argument("--expect", default="", help="the rows (ROW_SAMPLING,...) a finished study has")
    p.add_argument("--seeds", default="", help="the seeds of every expected row, e.g. 1,2,3")
    p.add_argument("--high", default="fr,cs")
    p.add_argument("--med", default="tr")
    p.add_argument("--low", default="hi")
    p.add_argument("--zero-shot", default="")
    p.add_argument("--baseline", default="multilingual_t5", help="ROW_SAMPLING the paired tests compare with")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (0: no paired tests)")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--out", default=None, help="also write OUT.md and OUT.json")
    a = p.parse_args(argv)
    levels = {"High": [l for l in a.high.split(",") if l], "Med": [l for l in a.med.split(",") if l],
              "Low": [l for l in a.low.split(",") if l]}
    langs = [l for ls in levels.values() for l in ls]
    zero_shot = [d for d in a.zero_shot.split(",") if d]
    at = "" if a.at == "full" else a.at
    check_budgets(a.runs_dir)
    scores = {m: collect(a.runs_dir, m, at) for m in METRICS}
    if not scores["bleu"]:
        raise SystemExit(f"no evaluated runs (ROW_T_seedN/{at + '/' if at else ''}bleu.json) under {a.runs_dir}")
    expect = [r for r in a.expect.split(",") if r]
    seeds = [int(x) for x in a.seeds.split(",") if x]
    expected = [tuple(r.rsplit("_", 1)) for r in expect]
    parts = []
    if expect:
        missing = missing_runs(a.runs_dir, expect, seeds)
        total = len(expect) * len(seeds)
        parts += [f"**Runs finished: {total - len(missing)} of {total}**" +
                  (f"; missing: {', '.join(missing)}." if missing else "."), ""]
    if at:
        parts += [f"Scores of the checkpoints at half the budget ({at}/bleu.json).", ""]
    parts += [study_facts(a.runs_dir)]
    for metric, name in METRICS.items():
        runs = scores[metric]
        if not runs:
            continue
        parts += [f"## {name} per direction (Table 1 layout)", "", table1(runs, langs, zero_shot, expected), "",
                  f"## {name}: data imbalance (High / Med / Low resource)", "", imbalance_table(runs, levels)]
        if zero_shot:
            parts += [f"## {name}: zero-shot directions", "", zero_shot_table(runs, zero_shot), ""]
    rates = {key: [load_off_target(seeds[x], at) for x in sorted(seeds)]
             for key, seeds in run_folders(a.runs_dir, at).items()}
    if any(r for seeds in rates.values() for r in seeds):
        parts += ["## Off-target rate: hypotheses in another language than the target (%)", "",
                  "Identified by langid among the languages scored (fairseq_gradvac.evaluation.off_target); "
                  "empty hypotheses left out.", "", off_target_table(rates, zero_shot), ""]
    tests = significance(a.runs_dir, a.baseline, a.bootstrap, at) if a.bootstrap > 0 else []
    if a.bootstrap > 0:
        parts += [f"## Paired bootstrap against {a.baseline} ({a.bootstrap} resamples, per seed and "
                  "direction)", "", significance_tables(tests, a.baseline, a.alpha)]
    text = "\n".join(parts)
    print(text)
    if a.out:
        with open(a.out + ".md", "w") as f:
            f.write(text)
        with open(a.out + ".json", "w") as f:
            json.dump({"scores": {m: {f"{r}_{s}": v for (r, s), v in runs.items()} for m, runs in scores.items()},
                       "paired_bootstrap": tests}, f, indent=2)


if __name__ == "__main__":
    main()
