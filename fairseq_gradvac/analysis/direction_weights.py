"""Each direction's share of the update, per row of the study: how far a method moves the
weights from what the sampling gives the plain sum.

    python -m fairseq_gradvac.analysis.direction_weights docs/data/study/libreoffice_study-demo_cpu \
        --out docs/data/study/libreoffice_study-demo_cpu/weights

Every method here writes its update as sum_i W_i g_i, g_i direction i's summed-loss gradient
(the plain sum: W_i = 1), divided by the update's N target tokens; direction i's share of
the update is s_i = W_i n_i / N, the weight on its mean-loss gradient (shares sum to 1, the
convention of every method's weights, docs/methods/README.md). Read from the bundles alone:
- the plain sum (any sampling): s_i = n_i / N, from similarity.csv's token counts;
- a whole-model Gramian method whose weights the logged updates alone determine (REBUILT:
  the stateless ones, and Nash-MTL solved every update, whose answer is unique and checked,
  so its warm start does not matter): W from the method's own weigh(), built by its
  from_args on the run's own options, on the update's whole-model Gram matrix rebuilt from
  similarity.csv's `model` rows (G_ij = |g_i| |g_j| cos_ij, the norms and cosines the run
  recorded of that very update); a failed solve is counted and reported;
- a loss weighting (FAMO, ...): loss_weights.csv's `effective`, c_i n_i / (N pi_i), the factor
  the update applied (its shares sum to 1 only in expectation over the batches).
Per run: the mean of s_i over the logged updates (every --similarity-interval; 0 where the
update held no batch of i; an update holding one direction writes no pair to similarity.csv
and is not counted); per row: mean and standard deviation over seeds. Per-layer methods
(GradVac, PCGrad all_layer), and methods with state or randomness the logs do not hold
(GradVac or PCGrad on the whole model, GradNorm, ...), are listed as left out. Writes
OUT/weights.csv and OUT/weights.md.
"""
import argparse
import csv
import json
import os
import re
import shlex
import statistics
from collections import defaultdict

import torch

from ..combiners import ParameterGroups, combiner_class
from ..evaluation import results_table as rt

WHOLE = "model"  # similarity.csv's group of the whole model
# Gramian methods whose weights on a logged update depend on that update alone
REBUILT = ("upgrad", "dualproj", "cagrad", "imtl_g", "aligned_mtl", "fairgrad", "mgda", "nash_mtl")


def command(run):
    """The run's fairseq-train command (run.json), as a list."""
    with open(os.path.join(run, "run.json")) as f:
        return shlex.split(json.load(f)["command"])


def options(argv):
    """{--option: value} of a command."""
    return {a: (argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else "")
            for i, a in enumerate(argv) if a.startswith("--")}


def gram_updates(path):
    """[(update, directions, Gram [K, K] float64, token counts [K])] from similarity.csv's
    whole-model rows."""
    by_update = defaultdict(list)
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if r["group"] == WHOLE:
                by_update[int(r["update"])].append(r)
    out = []
    for update, rows in sorted(by_update.items()):
        directions = sorted({r["a"] for r in rows} | {r["b"] for r in rows})
        ix = {d: i for i, d in enumerate(directions)}
        k = len(directions)
        gram, n = torch.zeros(k, k, dtype=torch.float64), torch.zeros(k, dtype=torch.float64)
        for r in rows:
            a, b, na, nb = ix[r["a"]], ix[r["b"]], float(r["norm_a"]), float(r["norm_b"])
            gram[a, b] = gram[b, a] = na * nb * float(r["cosine"])
            gram[a, a], gram[b, b] = na * na, nb * nb
            n[a], n[b] = float(r["ntokens_a"]), float(r["ntokens_b"])
        if len(rows) != k * (k - 1) // 2:
            raise ValueError(f"{path}: update {update} has {len(rows)} whole-model pairs for {k} directions")
        out.append((update, directions, gram, n))
    return out


_PI = re.compile(r"the epoch's target tokens by direction \(pi\): (?P<shares>.*)$")
_EPOCH = re.compile(r"\btrain_inner\b.*?epoch (?P<epoch>\d+):.*?\bnum_updates=(?P<update>\d+)")


_BEGIN = re.compile(r"\bbegin training epoch (?P<epoch>\d+)\b")


def token_shares_logged(train_log):
    """({epoch: {direction: pi_i}}, [(update, epoch)] sorted) from fairseq's simple log: the
    task prints pi (to 0.1%) just before fairseq's "begin training epoch N", again when a
    resumed run rebuilds the epoch (the last print counts), and train_inner lines say which
    epoch an update is in."""
    pi, epochs, pending = {}, {}, None
    with open(train_log, errors="replace") as f:
        for line in f:
            m = _PI.search(line)
            if m:
                pending = {d: float(v.rstrip("%")) / 100 for d, v in
                           (part.split() for part in m["shares"].split(", "))}
            m = _BEGIN.search(line)
            if m and pending is not None:
                pi[int(m["epoch"])], pending = pending, None
            m = _EPOCH.search(line)
            if m:
                epochs[int(m["update"])] = int(m["epoch"])
    return pi, sorted(epochs.items())


def epoch_of(update, epochs):
    """The epoch of the last train_inner line at or before ``update`` (None before any)."""
    found = None
    for u, epoch in epochs:
        if u > update:
            break
        found = epoch
    return found


def _combiner(name, argv, directions):
    """The method as the run built it: its from_args on the run's own options."""
    cls = combiner_class(name)
    parser = argparse.ArgumentParser(add_help=False)
    cls.add_args(parser)
    known, _ = parser.parse_known_args(argv)
    return cls.from_args(known, directions)


# per-run statistics: (csv name, markdown column, digits in the csv)
STATS = (("effective_tokens_over_n", "effective tokens / N", 4), ("share_token_slope", "share ~ tokens^b: b", 3))


def share_token_slope(updates):
    """b of share ~ tokens^b within an update: the least-squares slope of log s_i on log n_i,
    both centred per update, over the updates' directions with s_i > 0 (1 for the plain sum,
    0 for a method that weighs every direction present alike)."""
    xs, ys = [], []
    for s, n in updates:
        keep = s > 0
        if int(keep.sum()) > 1:
            x, y = n[keep].log(), s[keep].log()
            xs.append(x - x.mean())
            ys.append(y - y.mean())
    if not xs:
        return None
    x, y = torch.cat(xs), torch.cat(ys)
    return float((x * y).sum() / (x * x).sum())


def run_shares(run):
    """({direction: mean share over the logged updates}, {STATS name: value or None}, how) or
    (None, None, why it is left out)."""
    argv = command(run)
    opts = options(argv)
    name = opts.get("--gradient-combiner", "sum")
    weights_csv = os.path.join(run, "loss_weights.csv")
    if os.path.exists(weights_csv):  # a loss weighting: the factor the update applied
        per_update, c = defaultdict(dict), defaultdict(dict)
        with open(weights_csv, newline="") as f:
            for r in csv.DictReader(f):
                per_update[int(r["update"])][r["direction"]] = float(r["effective"])
                c[int(r["update"])][r["direction"]] = float(r["weight"])
        if not per_update:
            return None, None, f"{name}: no update in loss_weights.csv"
        log = os.path.join(run, "train.log")
        pi, epochs = token_shares_logged(log) if os.path.exists(log) else ({}, [])
        effective = []
        for update, e in per_update.items():
            # every token of i weighs m_i = c_i / pi_i and e_i = m_i n_i / N, so Kish's ratio is
            # (sum_i n_i m_i)^2 / (N sum_i n_i m_i^2) = (sum_i e_i)^2 / sum_i e_i m_i
            shares = pi.get(epoch_of(update, epochs))
            if shares is None or any(shares.get(d, 0) <= 0 for d in e):
                effective = None  # (no pi logged for that epoch: no ratio)
                break
            effective.append(sum(e.values()) ** 2 / sum(v * c[update][d] / shares[d] for d, v in e.items()))
        stats = {"effective_tokens_over_n": statistics.mean(effective) if effective else None,
                 "share_token_slope": None}  # (the update's token counts are not in loss_weights.csv)
        return _mean(per_update.values()), stats, f"{name}: loss_weights.csv, pi from train.log"
    similarity = os.path.join(run, "similarity.csv")
    if not os.path.exists(similarity):
        return None, None, f"{name}: no similarity.csv"
    if name != "sum" and opts.get("--combine-granularity") != "whole_model":
        return None, None, f"{name} {opts.get('--combine-granularity', '')}: per-layer, no one share per direction"
    if name not in ("sum",) + REBUILT or (name == "nash_mtl" and opts.get("--nash-mtl-update-every", "1") != "1"):
        return None, None, f"{name}: its weights need state the logged updates do not hold"
    updates = gram_updates(similarity)
    if not updates:
        return None, None, f"{name}: no whole-model record in similarity.csv"
    directions = sorted({d for _, ds, _, _ in updates for d in ds})
    combiner = None if name == "sum" else _combiner(name, argv, directions)
    groups = ParameterGroups([WHOLE], [[("model", torch.zeros(1))]])
    shares, effective, pairs, failed = [], [], [], 0
    for update, present, gram, n in updates:
        if combiner is None:
            w = torch.ones_like(n)
        else:  # the method's own weights on this update's Gram matrix, in the run's precision
            w = combiner.weigh(gram[None].float(), present, groups, update, ntokens=n.float())[0].double()
            failed += combiner.last_report.failed_solves or 0
            combiner.commit(torch.ones((), dtype=torch.bool))
        shares.append(dict(zip(present, (w * n / n.sum()).tolist())))
        pairs.append((w * n / n.sum(), n))
        # Kish's effective sample size of the update's per-token weights w_i / N, over N:
        # (sum_i n_i w_i)^2 / (N sum_i n_i w_i^2) = N / sum_i n_i w_i^2, 1 for the plain sum
        effective.append(float((w * n).sum() ** 2 / (n.sum() * (n * w * w).sum())))
    how = ("sum: token counts" if combiner is None else
           f"{name} whole_model: weigh() on the recorded Gram matrices"
           + (f", {failed} failed solves (the method's fallback)" if failed else ""))
    stats = {"effective_tokens_over_n": statistics.mean(effective), "share_token_slope": share_token_slope(pairs)}
    return _mean(shares), stats, how


def _mean(updates):
    updates = list(updates)
    directions = sorted({d for u in updates for d in u})
    return {d: sum(u.get(d, 0.0) for u in updates) / len(updates) for d in directions}


def collect(runs_dir):
    """{row: {seed: {direction: share}}}, {row: {seed: {STATS name: value or None}}},
    {row: {seed: how}}, {row: why left out}."""
    rows, stats, how, left = defaultdict(dict), defaultdict(dict), defaultdict(dict), {}
    for name in sorted(os.listdir(runs_dir)):
        m, run = rt._RUN.match(name), os.path.join(runs_dir, name)  # (the study's run folders)
        if not m or not os.path.exists(os.path.join(run, "run.json")):
            continue
        row, seed = f"{m['row']}_{m['sampling']}", int(m["seed"])
        shares, run_stats, note = run_shares(run)
        if shares is None:
            left[row] = note
        else:
            rows[row][seed], stats[row][seed], how[row][seed] = shares, run_stats, note
    return rows, stats, how, left


def token_shares(runs_dir):
    """{T: {direction: share}} of the sampled target tokens (data.json, sampling_shares)."""
    path = os.path.join(runs_dir, "data.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return {str(t): v for t, v in json.load(f)["token_shares"].items()}


def _mean_sd(values):
    """mean ±sd, to two decimals below 10 (ratios, small shares) and one above."""
    digits = 2 if max(map(abs, values)) < 10 else 1
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ±{sd:.{digits}f}"


def report(rows, stats, how, left, tokens):
    """(weights.md's text, weights.csv's rows)."""
    directions = sorted({d for seeds in rows.values() for s in seeds.values() for d in s},
                        key=lambda d: (not d.startswith("en-"), d))
    table, lines = [], []
    for row, seeds in rows.items():
        cells = []
        for d in directions:
            values = [100 * seeds[s].get(d, 0.0) for s in sorted(seeds)]
            cells.append(_mean_sd(values))
            table.append([row, d, "share_percent", len(values)] + [f"{v:.3f}" for v in values])
        for name, _, digits in STATS:
            values = [stats[row][s][name] for s in sorted(seeds)]
            if None not in values:
                table.append([row, "", name, len(values)] + [f"{v:.{digits}f}" for v in values])
            cells.append("n/a" if None in values else _mean_sd(values))
        lines.append([row, str(len(seeds))] + cells)
    md = ["Each direction's share of the update (%; mean over the logged updates, mean ±sd over seeds); "
          "the update's effective target tokens over its N (Kish: (sum_i n_i W_i)^2 / (N sum_i n_i W_i^2); the plain "
          "sum's is 1; a loss weighting's shares, the factors its updates applied, sum to 1 only in expectation); "
          "and b, how a direction's share grows with its tokens within an update (the plain sum's is 1):",
          "", "| row | seeds | " + " | ".join(directions + [column for _, column, _ in STATS]) + " |",
          "|---|---:|" + "---:|" * (len(directions) + len(STATS))]
    md += ["| " + " | ".join(line) + " |" for line in lines]
    for t, shares in sorted(tokens.items()):
        md.append(f"| (target tokens sampled at T={t}) | | "
                  + " | ".join(f"{100 * shares.get(d, 0):.1f}" for d in directions) + " |" + " |" * len(STATS))
    def said(notes):  # one note for the row, or each seed's where they differ
        return next(iter(notes.values())) if len(set(notes.values())) == 1 else \
            ", ".join(f"seed {s}: {n}" for s, n in sorted(notes.items()))

    md += ["", "How each row's W was read: " + "; ".join(f"{r}: {said(h)}" for r, h in how.items()) + "."]
    if left:
        md.append("Left out: " + "; ".join(f"{r} ({why})" for r, why in sorted(left.items())) + ".")
    return "\n".join(md) + "\n", table


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs_dir")
    ap.add_argument("--out", required=True, help="folder for weights.csv and weights.md")
    a = ap.parse_args(argv)
    rows, stats, how, left = collect(a.runs_dir)
    if not rows:
        raise SystemExit(f"no run with a share per direction under {a.runs_dir}")
    text, table = report(rows, stats, how, left, token_shares(a.runs_dir))
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "weights.md"), "w") as f:
        f.write(text)
    seeds = max(len(r) - 4 for r in table)
    with open(os.path.join(a.out, "weights.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "direction", "quantity", "seeds"] + [f"value_{i + 1}" for i in range(seeds)])
        w.writerows(table)
    print(text)


if __name__ == "__main__":
    main()
