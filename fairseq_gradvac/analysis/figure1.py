"""Figure 1: clustered matrices of the mean cosine between xx-en directions and between en-xx
directions (encoder, decoder), with the within/between family, genus and script tests and
the Mantel tests against URIEL+'s distances, over all updates and per checkpoint."""
import json

import numpy as np

from ..gradients.similarity import SIDE_AGGREGATES
from . import languages
from .plotting import clustered_heatmap, fmt
from .records import KINDS, language_matrix, only_updates, pair_means, updates_of


def cluster(matrix):
    """Average-linkage tree on the distance 1 - cosine (a pair never recorded counts as
    cosine 0) and the leaf order it puts the languages in."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    distance = 1.0 - np.nan_to_num(matrix, nan=0.0)
    np.fill_diagonal(distance, 0.0)
    tree = linkage(squareform(distance, checks=False), method="average")
    return tree, leaves_list(tree)


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
    for side, group in SIDE_AGGREGATES.items():
        means = pair_means(series, group)
        if not means:
            report.skip(f"Figure 1 ({side})", f"no '{group}' rows in similarity.csv")
            continue
        updates = updates_of(series, group)
        for kind in KINDS:
            codes, matrix = language_matrix(means, kind)
            if len(codes) < MIN_LANGUAGES:
                report.skip(f"Figure 1 ({side}, {kind})", too_few_languages(codes))
                continue
            tree, order = cluster(matrix)
            codes, matrix = [codes[i] for i in order], matrix[np.ix_(order, order)]
            name = f"fig1_{side}_{kind}"
            report.csv(name + ".csv", ["language"] + codes,
                       [[c] + [fmt(v) for v in row] for c, row in zip(codes, matrix)])
            clustered_heatmap(report, name + ".png", tree, codes, matrix,
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
                rows.append((name, "within-between", grouping, "difference", fmt(t["difference"]),
                             t["pairs_within"] + t["pairs_between"], fmt(t["p_value"]), t["permutations"]))
        for kind, t in tests["mantel"].items():
            if t is not None:
                rows.append((name, "mantel", kind, "spearman", fmt(t["spearman"]), t["pairs"],
                             fmt(t["p_value"]), t["permutations"]))
    return rows


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
