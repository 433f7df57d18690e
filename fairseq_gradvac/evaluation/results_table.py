"""Table 1 of the paper from evaluated runs: BLEU and chrF per direction, En->Any / Any->En
averages, the High/Med/Low data-imbalance table (and its differences to the baseline beside
the paper's), the zero-shot directions, and each method against a baseline: per seed by a
two-sided paired bootstrap on the test sentences, across seeds by a paired t-test.

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
to another budget than RUNS_DIR/budget.json's is refused.

Each run is compared with the baseline run of the same seed:
- per seed and direction, on the test outputs evaluate keeps: the test sentences resampled
  with replacement (the same resamples for both systems, sacrebleu's corpus BLEU and chrF
  from their sentence statistics), d* = system* - baseline*; two-sided p = (1 + the number of
  resamples with |d* - mean d*| >= |d|) / (1 + resamples) (Koehn 2004; Efron & Tibshirani
  1993, ch. 16; never 0: the observed difference counts as one resample) and
  the 2.5/97.5 percentiles of d* as the difference's 95% interval; seeded by SACREBLEU_SEED
  (default 12345). sacrebleu 2.6's own paired bootstrap centres |d*| instead, about a
  one-sided test.
- across seeds, for every cell (a direction, En->Any, Any->En, the zero-shot average): a
  two-sided paired t-test over the seeds' differences (scipy.stats.ttest_rel) and the mean
  difference's t-based 95% interval.
Both are Holm-corrected over a row's tests (per seed: its directions x metrics; across
seeds: its cells x metrics). RUNS_DIR/data.json (fairseq_gradvac.evaluation.sampling_shares)
and RUNS_DIR/budget.json (fairseq_gradvac.evaluation.budget) are shown when present, and the
paper's imbalance numbers (--paper) beside the runs' differences to the baseline.
"""
import argparse
import functools
import glob
import json
import math
import os
import re
from collections import defaultdict

from .budget import curve_table

ROW_ORDER = [
    ("bilingual", "(1) Bilingual"), ("multilingual", "(2) Multilingual"),
    ("gradnorm", "(3) GradNorm"), ("mgda", "(4) MGDA"), ("pcgrad", "(5) PCGrad"),
    ("pcgrad_all_layer", "(6) PCGrad w. all_layer"), ("gradvac_fixed_obj", "(7) GradVac w. fixed_obj"),
    ("gradvac_whole_model", "(8) GradVac w. whole_model"), ("gradvac_all_layer", "(9) GradVac w. all_layer"),
    ("gradvac_all_layer_low", "(9) GradVac w. all_layer, low-resource directions only"),
    # remedies after the paper: Gramian methods on the whole model, then loss weighting
    ("upgrad", "UPGrad"), ("nash_mtl", "Nash-MTL"), ("famo", "FAMO"),
]
METRICS = {"bleu": "BLEU", "chrf": "chrF"}
# ROW_SAMPLING_seedN: SAMPLING a temperature (t5) or a schedule's name (cooldown), as in configs/sampling/
_RUN = re.compile(r"^(?P<row>.+)_(?P<sampling>t\d+|[a-z]+)_seed(?P<seed>\d+)$")


def _t(sampling):
    """The T column of a run's sampling: 5 for t5, a schedule by its name (cooldown)."""
    return sampling[1:] if re.fullmatch(r"t\d+", sampling) else sampling


def _sampling_order(sampling):
    """Temperatures in their order (t1 before t5), then schedules by name."""
    t = _t(sampling)
    return (0, int(t), "") if t.isdigit() else (1, 0, t)


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
        lines.append(f"| {_label(row)} | {_t(sampling)} | " + " | ".join(cells) + " |")
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


def collect_seeds(runs_dir, metric="bleu", at=""):
    """{(row, sampling): {seed: {direction: score}}}: the seeds kept for the paired tests."""
    runs = {}
    for key, seeds in run_folders(runs_dir, at).items():
        scores = {s: load_run(seeds[s], metric, at) for s in sorted(seeds)}
        if any(scores.values()):
            runs[key] = scores
    return runs


def collect(runs_dir, metric="bleu", at=""):
    """{(row, sampling): [ {direction: score} per seed, in seed order ]}"""
    return {key: list(seeds.values()) for key, seeds in collect_seeds(runs_dir, metric, at).items()}


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
    """The directions any seed of any run has (runs as collect or collect_seeds give them)."""
    return {d for seeds in runs.values() for s in (seeds.values() if isinstance(seeds, dict) else seeds) for d in s}


def _label(row):
    return dict(ROW_ORDER).get(row, row)


def _row_order(key):
    known = [r for r, _ in ROW_ORDER]
    return (known.index(key[0]) if key[0] in known else len(known), key[0], _sampling_order(key[1]))


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
        lines.append(f"| {_label(row)} | {_t(sampling)} | " + " | ".join(cells) + " |")
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
                                    key=lambda k: (rows.index(k[0]), _sampling_order(k[1]))):
            seeds = runs[(row, sampling)]
            cells = [_seed_cell(seeds, ds) for ds in groups.values()] + [_seed_cell(seeds, every)]
            label = f"T={_t(sampling)}" if row == "multilingual" else f"{_label(row)} T={_t(sampling)}"
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def zero_shot_table(runs, zero_shot):
    head = "| row | T | " + " | ".join(zero_shot) + " |"
    rows = [f"| {_label(r)} | {_t(s)} | " + " | ".join(_seed_cell(runs[(r, s)], [d]) for d in zero_shot) + " |"
            for r, s in sorted(runs, key=_row_order)]
    return "\n".join([head, "|---|---|" + "---:|" * len(zero_shot)] + rows)


def _bootstrap_seed():
    """sacrebleu's own seed for its resampling: SACREBLEU_SEED, 12345 unless set, "none" for
    a fresh one."""
    seed = os.environ.get("SACREBLEU_SEED", "12345")
    return None if seed.lower() == "none" else int(seed)


@functools.lru_cache(maxsize=4)
def resample_counts(n, n_samples, seed):
    """How often each of ``n`` sentences is drawn in each of ``n_samples`` resamples (a row
    per resample), drawn as sacrebleu draws them: one matrix product then gives every
    resample's summed sentence statistics."""
    import numpy as np

    picks = np.random.default_rng(seed).choice(n, size=(n_samples, n), replace=True)
    flat = (picks + n * np.arange(n_samples)[:, None]).ravel()
    return np.bincount(flat, minlength=n_samples * n).reshape(n_samples, n).astype(float)


@functools.lru_cache(maxsize=None)
def _metric(name):
    """One sacrebleu metric object per metric (sacrebleu's defaults, as evaluate scores)."""
    from sacrebleu.metrics import BLEU, CHRF

    return {"bleu": BLEU, "chrf": CHRF}[name]()


@functools.lru_cache(maxsize=256)
def sentence_statistics(metric, hypotheses_file, reference_file):
    """sacrebleu's sufficient statistics of every sentence (a row each) of one test output:
    a corpus score is a function of their sum. Cached: a baseline meets every row."""
    import numpy as np

    from .evaluate import read_lines

    hyps, refs = read_lines(hypotheses_file), read_lines(reference_file)
    if len(hyps) != len(refs):
        raise ValueError(f"{hypotheses_file} has {len(hyps)} lines, {reference_file} {len(refs)}")
    return np.array(_metric(metric)._extract_corpus_statistics(hyps, [refs]), dtype=float)


def corpus_scores(metric, stats):
    """The corpus score of each row of summed sentence statistics."""
    import numpy as np

    m = _metric(metric)
    return np.array([m._compute_score_from_stats(row).score for row in np.atleast_2d(stats)])


def paired_bootstrap(baseline_file, system_file, reference_file, n_samples=1000, seed=12345):
    """{metric: {baseline, system, delta, p, ci, signature}}: the two-sided paired bootstrap
    (Koehn 2004; Efron & Tibshirani 1993, ch. 16) of two systems' outputs on one test set.
    Both are scored on the same resamples of the sentences, d* = system* - baseline*; under
    the null hypothesis d* varies around 0, so p is (1 + the number of resamples with
    |d* - mean d*| >= |d|) / (1 + B) (centring d*, not |d*| as sacrebleu 2.6 does: its p is about a
    one-sided test's); ci, the 2.5 and 97.5 percentiles of d*, is the difference's 95%
    interval."""
    import numpy as np

    out = {}
    for metric in METRICS:
        base = sentence_statistics(metric, baseline_file, reference_file)
        system = sentence_statistics(metric, system_file, reference_file)
        counts = resample_counts(len(base), n_samples, seed)
        b, s = (float(x) for x in corpus_scores(metric, [base.sum(0), system.sum(0)]))
        d = corpus_scores(metric, counts @ system) - corpus_scores(metric, counts @ base)
        signature = _metric(metric).get_signature()
        signature.update("seed", str(seed).lower())
        signature.update("bs", n_samples)
        out[metric] = {"baseline": b, "system": s, "delta": s - b,
                       # (count + 1) / (B + 1): the observed difference counts as one of the
                       # resamples, so p is never 0 (Davison & Hinkley 1997, eq. 4.11)
                       "p": float((np.sum(np.abs(d - d.mean()) >= abs(s - b)) + 1) / (n_samples + 1)),
                       "ci": [float(x) for x in np.percentile(d, [2.5, 97.5])], "signature": str(signature)}
    return out


def holm(p_values):
    """Holm's step-down adjusted p-values (Holm 1979): the k-th smallest p times (m - k + 1),
    made monotone. Adjusted p < alpha keeps the chance of any false finding among the m tests
    at most alpha, however they depend on each other."""
    order = sorted(range(len(p_values)), key=p_values.__getitem__)
    adjusted, running = [0.0] * len(p_values), 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - k) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _holm_by(tests, key):
    """Adds "p_holm" to each test, Holm-adjusted within the family ``key(test)`` names; a
    test without a p (one seed) is in no family."""
    families = defaultdict(list)
    for t in tests:
        if t["p"] is not None:
            families[key(t)].append(t)
    for family in families.values():
        for t, p in zip(family, holm([t["p"] for t in family])):
            t["p_holm"] = p
    return tests


def significance(runs_dir, baseline, n_samples=1000, at=""):
    """Each run against the baseline run of the same seed, on every direction both kept the
    test outputs of (on the same reference file), by the paired bootstrap: [{row, sampling,
    seed, direction, metric, baseline, system, delta, p, ci, p_holm, signature}], p_holm
    Holm-adjusted over the row's tests in that seed."""
    folders = run_folders(runs_dir, at)
    base_key = tuple(baseline.rsplit("_", 1))
    if base_key not in folders:
        return []
    seed = _bootstrap_seed()
    tests = []
    for key in sorted(folders, key=_row_order):
        if key == base_key:
            continue
        for s in sorted(set(folders[key]) & set(folders[base_key])):
            base_files, files = test_outputs(folders[base_key][s], at), test_outputs(folders[key][s], at)
            for d, (hyp, ref) in files.items():
                if d not in base_files or os.path.abspath(base_files[d][1]) != os.path.abspath(ref):
                    continue
                for metric, r in paired_bootstrap(base_files[d][0], hyp, ref, n_samples, seed).items():
                    tests.append({"row": key[0], "sampling": key[1], "seed": s, "direction": d, "metric": metric, **r})
    return _holm_by(tests, lambda t: (t["row"], t["sampling"], t["seed"]))


def _signs(values):
    return "".join("+" if v > 0 else "-" if v < 0 else "0" for v in values)


def significance_tables(tests, baseline, alpha=0.05):
    """Per metric: method x direction, the mean difference to the baseline over seeds and
    how many seeds' differences are significant (p < alpha) in that direction (+ better,
    - worse), before and after Holm; bold where every seed's is after Holm. Then, per row,
    the number of tests and of significant ones per seed, and the cells significant in
    every seed before correction, each seed's difference with its interval."""
    if not tests:
        return "No paired tests (no baseline run, or no kept test outputs).\n"
    by = defaultdict(list)
    for t in tests:
        by[(t["metric"], t["row"], t["sampling"], t["direction"])].append(t)
    directions = list(dict.fromkeys(t["direction"] for t in tests))
    methods = list(dict.fromkeys((t["row"], t["sampling"]) for t in tests))
    lines, everywhere = [], []
    for metric, name in METRICS.items():
        lines += [f"### {name}: difference to {baseline} (seeds with p < {alpha:g}: better+ / worse-, "
                  "uncorrected; then after Holm)", "",
                  "| row | T | " + " | ".join(directions) + " |", "|---|---|" + "---:|" * len(directions)]
        for row, sampling in methods:
            cells = []
            for d in directions:
                seeds = by.get((metric, row, sampling, d), [])
                if not seeds:
                    cells.append("-")
                    continue
                mean = _mean([t["delta"] for t in seeds])
                counts = {}
                for p in ("p", "p_holm"):
                    counts[p] = (sum(t[p] < alpha and t["delta"] > 0 for t in seeds),
                                 sum(t[p] < alpha and t["delta"] < 0 for t in seeds))
                (up, down), (hup, hdown) = counts["p"], counts["p_holm"]
                cell = f"{mean:+.2f} ({up}+ {down}-; Holm {hup}+ {hdown}- /{len(seeds)})"
                if len(seeds) in (hup, hdown):
                    cell = f"**{cell}**"
                if len(seeds) in (up, down):
                    each = ", ".join(f"{t['delta']:+.2f} [{t['ci'][0]:+.2f}, {t['ci'][1]:+.2f}] p {t['p']:.3f}"
                                     for t in seeds)
                    everywhere.append(f"{name} {d}: {_label(row)} T={_t(sampling)} {'better' if up else 'worse'} "
                                      f"in all {len(seeds)} seeds (mean {mean:+.2f}; {each}); after Holm in "
                                      f"{max(hup, hdown)} of {len(seeds)}")
                cells.append(cell)
            lines.append(f"| {_label(row)} | {_t(sampling)} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [f"Tests per row and seed (Holm's family: the row's directions x BLEU, chrF) and those with "
              f"p < {alpha:g}, uncorrected / after Holm, per seed:", ""]
    for row, sampling in methods:
        family = defaultdict(list)
        for t in tests:
            if (t["row"], t["sampling"]) == (row, sampling):
                family[t["seed"]].append(t)
        lines.append(f"- {_label(row)} T={_t(sampling)}: " + "; ".join(
            f"seed {s}: {sum(t['p'] < alpha for t in ts)} / {sum(t['p_holm'] < alpha for t in ts)} of {len(ts)}"
            for s, ts in sorted(family.items())))
    lines += ["", f"Significant (p < {alpha:g}, uncorrected) in the same direction in every seed "
              "(difference [95% interval] p, per seed):"]
    lines += [f"- {e}" for e in everywhere] or ["- none"]
    signatures = dict.fromkeys((METRICS[t["metric"]], t["signature"]) for t in tests)
    lines += ["", "sacreBLEU metric signatures (with the resampling): " +
              "; ".join(f"{m} `{s}`" for m, s in signatures)]
    return "\n".join(lines) + "\n"


def paired_t(system, baseline):
    """(mean difference, its t-based 95% interval, two-sided p) of a paired t-test over the
    seeds (scipy.stats.ttest_rel): each seed's run against the baseline run of that seed, so
    what varies with the seed (initialisation, batch order) cancels. Three seeds give two
    degrees of freedom: a wide interval and little power. With one seed, or the same difference
    in every seed, there is no test (p None)."""
    import numpy as np
    from scipy import stats

    d = np.subtract(system, baseline, dtype=float)
    if len(d) < 2:
        return float(d.mean()), None, None
    scale = max(np.abs(system).max(), np.abs(baseline).max(), 1.0)
    if d.max() - d.min() <= 1e-9 * scale:
        # the same difference in every seed (scores rounded to 0.01 meet that): no spread to
        # test against; rounding would leave a spread of 1e-15 and a t of 1e14, p "0"
        return float(d.mean()), [float(d.mean())] * 2, None
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    p = float(stats.ttest_rel(system, baseline).pvalue)
    return float(d.mean()), [float(d.mean() - half), float(d.mean() + half)], None if math.isnan(p) else p


def seed_cells(langs, zero_shot, present):
    """The cells the seeds are compared on: the averages, then each direction, as Table 1
    orders them."""
    en_any = [f"en-{l}" for l in langs if f"en-{l}" in present]
    any_en = [f"{l}-en" for l in langs if f"{l}-en" in present]
    zero = [d for d in zero_shot if d in present]
    cells = {name: ds for name, ds in (("En->Any avg", en_any), ("Any->En avg", any_en), ("zero-shot avg", zero)) if ds}
    directions = [d for l in langs for d in (f"en-{l}", f"{l}-en") if d in present] + zero
    return {**cells, **{d: [d] for d in directions}}


def seed_differences(runs, base_key, cells, metric):
    """Each row of ``runs`` ({(row, sampling): {seed: {direction: score}}}) against the
    ``base_key`` run of the same seed, per cell ({name: directions}, their scores averaged),
    over the seeds both have with all of the cell's directions: [{row, sampling, metric,
    cell, seeds, differences, mean, ci, p}] (paired_t), no Holm."""
    if base_key not in runs:
        return []
    base = runs[base_key]
    tests = []
    for key in sorted(set(runs) - {base_key}, key=_row_order):
        for cell, ds in cells.items():
            seeds = [s for s in sorted(set(runs[key]) & set(base))
                     if all(d in runs[key][s] and d in base[s] for d in ds)]
            if not seeds:
                continue
            system = [_mean([runs[key][s][d] for d in ds]) for s in seeds]
            baseline_scores = [_mean([base[s][d] for d in ds]) for s in seeds]
            mean, ci, p = paired_t(system, baseline_scores)
            tests.append({"row": key[0], "sampling": key[1], "metric": metric, "cell": cell, "seeds": seeds,
                          "differences": [a - b for a, b in zip(system, baseline_scores)],
                          "mean": mean, "ci": ci, "p": p})
    return tests


def paired_seeds(scores, baseline, langs, zero_shot):
    """Each row against the baseline across seeds, per metric and cell: [{row, sampling,
    metric, cell, seeds, differences, mean, ci, p, p_holm}], p_holm Holm-adjusted over the
    row's cells and metrics. ``scores``: {metric: collect_seeds(...)}."""
    base_key = tuple(baseline.rsplit("_", 1))
    tests = []
    for metric, runs in scores.items():
        tests += seed_differences(runs, base_key, seed_cells(langs, zero_shot, _present(runs)), metric)
    return _holm_by(tests, lambda t: (t["row"], t["sampling"]))


def paired_seeds_tables(tests, baseline, alpha=0.05):
    """Per metric: cell x row, the mean difference to the baseline over the seeds with its
    95% interval, the paired t-test's p and each seed's sign; bold where p < alpha after
    Holm. Then, per row, the number of tests and of significant ones."""
    if not tests:
        return "No runs paired with the baseline by seed.\n"
    rows = list(dict.fromkeys((t["row"], t["sampling"]) for t in tests))
    lines = []
    for metric, name in METRICS.items():
        by = {(t["row"], t["sampling"], t["cell"]): t for t in tests if t["metric"] == metric}
        cells = list(dict.fromkeys(t["cell"] for t in tests if t["metric"] == metric))
        if not cells:
            continue
        lines += [f"### {name}: difference to {baseline}, mean over seeds [95% interval], p, each seed's sign", "",
                  "| cell | " + " | ".join(f"{_label(r)} T={_t(s)}" for r, s in rows) + " |",
                  "|---|" + "---:|" * len(rows)]
        for cell in cells:
            out = []
            for r, s in rows:
                t = by.get((r, s, cell))
                if t is None:
                    out.append("-")
                elif t["ci"] is None:
                    out.append(f"{t['mean']:+.2f} (n={len(t['seeds'])})")
                else:
                    p = "-" if t["p"] is None else f"{t['p']:.3f}"
                    text = f"{t['mean']:+.2f} [{t['ci'][0]:+.2f}, {t['ci'][1]:+.2f}] p {p} {_signs(t['differences'])}"
                    out.append(f"**{text}**" if t.get("p_holm", 1) < alpha else text)
            lines.append(f"| {cell} | " + " | ".join(out) + " |")
        lines.append("")
    lines += [f"Tests per row (Holm's family: the row's cells x BLEU, chrF) and those with p < {alpha:g}, "
              "uncorrected / after Holm:", ""]
    for r, s in rows:
        tested = [t for t in tests if (t["row"], t["sampling"]) == (r, s) and t["p"] is not None]
        seeds = sorted({len(t["seeds"]) for t in tests if (t["row"], t["sampling"]) == (r, s)})
        lines.append(f"- {_label(r)} T={_t(s)}: {sum(t['p'] < alpha for t in tested)} / "
                     f"{sum(t['p_holm'] < alpha for t in tested)} of {len(tested)} (seeds: "
                     f"{', '.join(map(str, seeds))})")
    return "\n".join(lines) + "\n"


def imbalance_differences(scores, levels, baseline, paper=None):
    """Each row's difference to the baseline per side and resource level: the mean over the
    seeds both have of the per-seed differences (unrounded until printed, so no cell is off
    by a rounding), beside the paper's where it has that row. ``scores``: collect_seeds(...);
    ``paper``: {"source": ..., "baseline": ROW_SAMPLING, "rows": {ROW_SAMPLING: {side: {level:
    BLEU}}}}, the paper's own numbers (the committed paper_imbalance.json): its differences
    are computed here, to its baseline row."""
    base_key = tuple(baseline.rsplit("_", 1))
    if base_key not in scores:
        return ""
    base, present = scores[base_key], _present(scores)
    sides = {side: {name: [fmt.format(l) for l in ls] for name, ls in levels.items() if ls}
             for side, fmt in (("Any->En", "{}-en"), ("En->Any", "en-{}"))}
    sides = {side: {**groups, "All": [d for ds in groups.values() for d in ds]}
             for side, groups in sides.items() if present & {d for ds in groups.values() for d in ds}}
    head = [f"{side} {level}" for side, groups in sides.items() for level in groups]
    lines = ["| | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
    paper_rows = (paper or {}).get("rows", {})
    paper_base = paper_rows.get((paper or {}).get("baseline", baseline))
    for key in sorted(scores, key=_row_order):
        if key == base_key:
            continue
        label = "T=" + _t(key[1]) if key[0] == "multilingual" else f"{_label(key[0])} T={_t(key[1])}"
        cells = []
        for groups in sides.values():
            for ds in groups.values():
                diffs = [_mean([scores[key][s][d] for d in ds]) - _mean([base[s][d] for d in ds])
                         for s in sorted(set(scores[key]) & set(base))
                         if all(d in scores[key][s] and d in base[s] for d in ds)]
                cell = f"{_mean(diffs):+.2f}" if diffs else "-"
                cells.append(cell + (f" (n={len(diffs)})" if diffs and len(diffs) < len(base) else ""))
        lines.append(f"| {label}, here | " + " | ".join(cells) + " |")
        theirs = paper_rows.get(f"{key[0]}_{key[1]}")
        if theirs and paper_base:
            lines.append(f"| {label}, paper | " + " | ".join(
                f"{theirs[side][level] - paper_base[side][level]:+.2f}"
                if level in theirs.get(side, {}) and level in paper_base.get(side, {}) else "-"
                for side, groups in sides.items() for level in groups) + " |")
    if paper_rows:
        lines += ["", f"Paper: {paper['source']}"]
    return "\n".join(lines) + "\n"


_DONE = re.compile(r"done training in ([0-9.]+) seconds")


def _train_logs(run):
    """A run folder's train.log texts: its own and (bilingual) each per-direction model's."""
    logs = [os.path.join(run, "train.log")] + sorted(glob.glob(os.path.join(run, "*", "train.log")))
    for log in logs:
        if os.path.exists(log):
            with open(log, errors="replace") as f:
                yield f.read()


def training_seconds(run):
    """fairseq's "done training in" of a run folder, summed over its invocations and (bilingual)
    its per-direction models; a killed invocation's time is not in any log line."""
    return sum(float(m[1]) for text in _train_logs(run) for m in _DONE.finditer(text))


def timed_run(run):
    """(seconds, updates) of timed_updates summed over a run folder's train.logs."""
    timed = [timed_updates(text) for text in _train_logs(run)]
    return sum(s for s, _ in timed), sum(u for _, u in timed)


_START = re.compile(r"fairseq_cli\.train \| \{'_name'")  # an invocation's first line
_LOADED = re.compile(r"Loaded checkpoint .*\(epoch \d+ @ (\d+) updates\)")
_UPDATES = re.compile(r"num_updates[= ](\d+)")


def timed_updates(log_text):
    """(seconds, updates) summed over a train.log's invocations that ended with fairseq's
    "done training in" (a killed one says neither how long it ran nor up to where)."""
    seconds = updates = 0.0
    for part in _START.split(log_text)[1:]:
        done = _DONE.search(part)
        if done:
            start = _LOADED.search(part)
            seconds += float(done[1])
            updates += max(map(int, _UPDATES.findall(part)), default=0) - (int(start[1]) if start else 0)
    return seconds, updates


def times_table(runs_dir):
    lines = ["| row | T | training minutes per run |", "|---|---|---:|"]
    for (row, sampling), seeds in sorted(run_folders(runs_dir).items(), key=lambda kv: _row_order(kv[0])):
        minutes = [training_seconds(seeds[s]) / 60 for s in sorted(seeds)]
        lines.append(f"| {_label(row)} | {_t(sampling)} | {_cell(minutes)} |")
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
    curve = os.path.join(runs_dir, "curve.csv")
    if os.path.exists(curve):
        text += ["The mean learning curve of those runs (curve.csv):", "", curve_table(curve)]
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
    p.add_argument("--paper", default=None, help="the paper's imbalance table, BLEU per row and resource level "
                   "[paper_imbalance.json beside RUNS_DIR, when there]")
    p.add_argument("--out", default=None, help="also write OUT.md and OUT.json")
    a = p.parse_args(argv)
    levels = {"High": [l for l in a.high.split(",") if l], "Med": [l for l in a.med.split(",") if l],
              "Low": [l for l in a.low.split(",") if l]}
    langs = [l for ls in levels.values() for l in ls]
    zero_shot = [d for d in a.zero_shot.split(",") if d]
    at = "" if a.at == "full" else a.at
    check_budgets(a.runs_dir)
    paper_file = a.paper or os.path.join(os.path.dirname(os.path.abspath(a.runs_dir)), "paper_imbalance.json")
    paper = None
    if os.path.exists(paper_file):
        with open(paper_file) as f:
            paper = json.load(f)
    by_seed = {m: collect_seeds(a.runs_dir, m, at) for m in METRICS}
    scores = {m: {key: list(seeds.values()) for key, seeds in runs.items()} for m, runs in by_seed.items()}
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
                  f"## {name}: data imbalance (High / Med / Low resource)", "", imbalance_table(runs, levels),
                  f"## {name}: data imbalance, difference to {a.baseline}" +
                  (" beside the paper's" if paper and metric == "bleu" else ""), "",
                  imbalance_differences(by_seed[metric], levels, a.baseline, paper if metric == "bleu" else None)]
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
        parts += [f"## Per seed: paired bootstrap against {a.baseline} ({a.bootstrap} resamples, two-sided)", "",
                  "Each run against the baseline run of the same seed on each direction's test sentences, "
                  "resampled with replacement; d* = system* - baseline* on each resample, p = (1 + number of "
                  "resamples with |d* - mean d*| >= |d|) / (1 + resamples), [95% interval] = 2.5 and 97.5 percentiles of d*.", "",
                  significance_tables(tests, a.baseline, a.alpha)]
    seed_tests = paired_seeds(by_seed, a.baseline, langs, zero_shot)
    parts += [f"## Across seeds: paired t-test against {a.baseline}", "",
              "Per cell, each seed's score (a direction's, or the average over the directions of En->Any, "
              "Any->En, zero-shot) minus the baseline's of the same seed; two-sided paired t-test "
              "(scipy.stats.ttest_rel) over the seeds, t-based 95% interval of the mean difference; signs "
              "per seed in seed order. n seeds give n - 1 degrees of freedom: with 3, a wide interval and "
              "little power.", "",
              paired_seeds_tables(seed_tests, a.baseline, a.alpha)]
    text = "\n".join(parts)
    print(text)
    if a.out:
        with open(a.out + ".md", "w") as f:
            f.write(text)
        with open(a.out + ".json", "w") as f:
            json.dump({"scores": {m: {f"{r}_{s}": v for (r, s), v in runs.items()} for m, runs in scores.items()},
                       "paired_bootstrap": tests, "paired_seeds": seed_tests}, f, indent=2)


if __name__ == "__main__":
    main()
