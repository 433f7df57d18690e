"""similarity.csv and its series: which directions and groups a row is about (xx-en or en-xx,
the language, the layer), per-pair means, the language matrices the figures draw."""
import csv
import math
from collections import defaultdict

import numpy as np

from ..combiners.parameter_names import parse_layer

KINDS = ("xx-en", "en-xx")


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


def updates_of(series, group):
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


def layer_groups(series):
    """[(side, index, group)] of the per-layer groups recorded (all_layer granularity)."""
    found = {(*layer, g) for g, _ in series for layer in [parse_layer(g)] if layer}
    return sorted(found, key=lambda f: (f[0] != "encoder", f[1]))


def only_updates(series, first, last):
    """The series restricted to updates first..last (e.g. Figure 1 at one checkpoint)."""
    kept = {key: {u: c for u, c in values.items() if first <= u <= last} for key, values in series.items()}
    return {key: values for key, values in kept.items() if values}
