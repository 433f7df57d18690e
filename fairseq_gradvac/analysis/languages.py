"""Who is related to whom, and the tests of the paper's first observation (gradient
similarity reflects language proximity).

Proximity comes from URIEL+ (the ``urielplus`` package, which ships URIEL's data): the
family (the root of a language's URIEL lineage) and graded genetic, geographic and
syntactic distances. URIEL has no WALS genus (its lineages have no fixed depth) and no
script identity (its script features are the writing system's type: alphabet, abugida,
...: French and Russian come out alike), so genus and script stay a hand-written table.

Two tests: mean cosine within vs between groups of a grouping (``proximity_test``), and the
Mantel test of cosine against a distance matrix (``mantel_test``).
"""
import functools
import importlib.resources

import numpy as np
from scipy.stats import rankdata

# code: (genus, script). Genera as in WALS; Chinese in either script counts as Han.
LANGUAGES = {
    "en": ("Germanic", "Latin"), "en_gb": ("Germanic", "Latin"), "de": ("Germanic", "Latin"),
    "nl": ("Germanic", "Latin"), "da": ("Germanic", "Latin"), "sv": ("Germanic", "Latin"),
    "fr": ("Romance", "Latin"), "es": ("Romance", "Latin"), "it": ("Romance", "Latin"),
    "pt": ("Romance", "Latin"), "pt_br": ("Romance", "Latin"), "ca": ("Romance", "Latin"),
    "gl": ("Romance", "Latin"), "cs": ("Slavic", "Latin"), "sk": ("Slavic", "Latin"),
    "pl": ("Slavic", "Latin"), "sl": ("Slavic", "Latin"), "ru": ("Slavic", "Cyrillic"),
    "el": ("Greek", "Greek"), "hi": ("Indic", "Devanagari"), "et": ("Finnic", "Latin"),
    "fi": ("Finnic", "Latin"), "hu": ("Ugric", "Latin"), "eu": ("Basque", "Latin"),
    "tr": ("Turkic", "Latin"), "ja": ("Japanese", "Japanese"), "ko": ("Korean", "Hangul"),
    "vi": ("Vietic", "Latin"), "km": ("Khmer", "Khmer"), "id": ("Malayo-Sumbawan", "Latin"),
    "zh_cn": ("Chinese", "Han"), "zh_tw": ("Chinese", "Han"), "dz": ("Bodic", "Tibetan"),
    "om": ("Cushitic", "Latin"),
}
# code: ISO 639-3, URIEL's key. Chinese is Mandarin (cmn: URIEL's lineage reaches Sinitic;
# the macrolanguage zho has only Sino-Tibetan), Estonian the macrolanguage est (ekk, standard
# Estonian, has no lineage in URIEL), Oromo the macrolanguage orm.
ISO639_3 = {
    "en": "eng", "en_gb": "eng", "de": "deu", "nl": "nld", "da": "dan", "sv": "swe", "fr": "fra",
    "es": "spa", "it": "ita", "pt": "por", "pt_br": "por", "ca": "cat", "gl": "glg", "cs": "ces",
    "sk": "slk", "pl": "pol", "sl": "slv", "ru": "rus", "el": "ell", "hi": "hin", "et": "est",
    "fi": "fin", "hu": "hun", "eu": "eus", "tr": "tur", "ja": "jpn", "ko": "kor", "vi": "vie",
    "km": "khm", "id": "ind", "zh_cn": "cmn", "zh_tw": "cmn", "dz": "dzo", "om": "orm",
}
GROUPINGS = ("family", "genus", "script")
DISTANCES = ("genetic", "geographic", "syntactic")


@functools.lru_cache(maxsize=None)
def _uriel(name):
    """(languages, feature names, data [languages, features, sources]) of one of URIEL's
    files as URIEL+ ships them (read directly: building ``URIELPlus()`` copies the files
    into the package's folder and logs every query)."""
    path = importlib.resources.files("urielplus") / "database" / "original_uriel" / name
    with np.load(path, allow_pickle=True) as f:
        return list(f["langs"]), np.asarray(f["feats"]), np.asarray(f["data"], dtype=np.float64)


def _rows(codes, name):
    langs, feats, data = _uriel(name)
    index = {lang: i for i, lang in enumerate(langs)}
    return feats, data[[index[ISO639_3[c]] for c in codes]]


def family(code):
    """The root of the language's URIEL lineage (the lineage node that the most languages
    share), its own name for an isolate (Basque has no lineage in URIEL), None for a code
    without an ISO 639-3 entry here."""
    if code not in ISO639_3:
        return None
    langs, feats, data = _uriel("family_features.npz")
    members = (data[..., 0] == 1)
    row = members[langs.index(ISO639_3[code])]
    if not row.any():
        return LANGUAGES[code][0] if code in LANGUAGES else ISO639_3[code]
    nodes = np.flatnonzero(row)
    return str(feats[nodes[np.argmax(members[:, nodes].sum(0))]]).removeprefix("F_")


def group_of(code, grouping):
    """The language's family (URIEL), genus or script (the table); None when unknown."""
    if grouping == "family":
        return family(code)
    entry = LANGUAGES.get(code)
    return entry[GROUPINGS.index(grouping) - 1] if entry else None


def _angular(vectors, known):
    """URIEL+'s angular distance 2 arccos(cos) / pi between every two rows, each pair over
    the features both rows know; NaN where they share none. A zero vector (no lineage)
    shares no ancestor with anyone: distance 1 (URIEL+ fills it with 1e-10 and gets
    0.96-0.99 for Basque, depending on the other language's lineage depth)."""
    v = np.where(known, vectors, 0.0)
    k = known.astype(np.float64)
    dot = v @ v.T
    norm_a = (v * v) @ k.T  # |a|^2 over the features b knows
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = dot / np.sqrt(norm_a * norm_a.T)
    cosine = np.where((norm_a > 0) & (norm_a.T > 0), cosine, 0.0)
    distance = 2 * np.arccos(np.clip(cosine, -1.0, 1.0)) / np.pi
    distance[(k @ k.T) == 0] = np.nan
    np.fill_diagonal(distance, 0.0)
    return distance


def distance_matrix(codes, kind):
    """[n, n] URIEL+ distance of ``kind`` (genetic: lineage features; geographic: the
    distances to URIEL's 299 reference points; syntactic: the S_ features, a feature known
    where any source knows it, its value the union (max) over sources, as URIEL+'s default
    aggregation). Every code needs an ISO 639-3 entry."""
    unknown = [c for c in codes if c not in ISO639_3]
    if unknown:
        raise ValueError(f"no ISO 639-3 code for {unknown}: add them to languages.ISO639_3")
    if kind == "genetic":
        _, data = _rows(codes, "family_features.npz")
        values = data[..., 0]
        return _angular(values, np.ones_like(values, dtype=bool))
    if kind == "geographic":
        _, data = _rows(codes, "geocoord_features.npz")
        values = data[..., 0]
        return _angular(values, values != -1)
    if kind == "syntactic":
        feats, data = _rows(codes, "features.npz")
        data = data[:, np.char.startswith(feats.astype(str), "S_")]
        known_sources = (data != -1) & np.isfinite(data)
        known = known_sources.any(-1)
        values = np.where(known_sources, data, -np.inf).max(-1)
        return _angular(np.where(known, values, 0.0), known)
    raise ValueError(f"unknown distance {kind!r}: one of {DISTANCES}")


def proximity_test(matrix, codes, grouping, permutations=10000, seed=0):
    """Mean cosine within vs between groups of ``grouping`` over the upper triangle of the
    symmetric ``matrix`` (pairs without a finite value left out), and the one-sided
    permutation p-value of within - between: the groups are shuffled over the languages
    (the matrix stays), so languages keep their own similarities and only the grouping is
    tested. Languages not in the table are left out. None where no pair of the kept
    languages shares a group, or none differs."""
    keep = [i for i, c in enumerate(codes) if group_of(c, grouping)]
    m = np.asarray(matrix, dtype=float)[np.ix_(keep, keep)]
    names = [group_of(codes[i], grouping) for i in keep]
    labels = np.unique(names, return_inverse=True)[1]
    upper = np.triu(np.isfinite(m), 1)
    values = np.where(upper, m, 0.0)

    def difference(label_rows):  # [R, n] labels -> [R] within - between (NaN when undefined)
        same = label_rows[:, :, None] == label_rows[:, None, :]
        within, between = same & upper, ~same & upper
        with np.errstate(invalid="ignore", divide="ignore"):
            return ((values * within).sum((1, 2)) / within.sum((1, 2))
                    - (values * between).sum((1, 2)) / between.sum((1, 2)))

    same = labels[:, None] == labels[None, :]
    n_within, n_between = int((same & upper).sum()), int((~same & upper).sum())
    if not n_within or not n_between:
        return None
    observed = difference(labels[None])[0]
    rng = np.random.default_rng(seed)
    shuffled = rng.permuted(np.broadcast_to(labels, (permutations, len(labels))), axis=1)
    null = np.concatenate([difference(chunk) for chunk in np.array_split(shuffled, 10)])
    exceed = int(np.sum(null >= observed - 1e-12))
    return {
        "grouping": grouping,
        "within": float((values * (same & upper)).sum() / n_within),
        "between": float((values * (~same & upper)).sum() / n_between),
        "difference": float(observed), "pairs_within": n_within, "pairs_between": n_between,
        "p_value": (exceed + 1) / (permutations + 1), "permutations": permutations, "seed": seed,
        "languages": [codes[i] for i in keep],
        "not_in_table": [c for i, c in enumerate(codes) if i not in keep],
    }


def _spearman_rows(x, y):
    """Spearman correlation of each row of x with the same row of y ([R, m]), over the
    entries finite in both (ties get average ranks, as scipy.stats.spearmanr)."""
    mask = np.isfinite(x) & np.isfinite(y)
    rx = rankdata(np.where(mask, x, np.nan), axis=1, nan_policy="omit")
    ry = rankdata(np.where(mask, y, np.nan), axis=1, nan_policy="omit")
    n = mask.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = np.where(mask, rx - np.nansum(rx, 1, keepdims=True) / n[:, None], 0.0)
        cy = np.where(mask, ry - np.nansum(ry, 1, keepdims=True) / n[:, None], 0.0)
        return (cx * cy).sum(1) / np.sqrt((cx * cx).sum(1) * (cy * cy).sum(1))


def mantel_test(similarity, distance, permutations=10000, seed=0, alternative="less"):
    """The Mantel test: Spearman correlation between the upper triangles of a similarity
    matrix (gradient cosines) and a distance matrix of the same languages, and its
    permutation p-value, the languages of ``distance`` shuffled (rows and columns together).
    ``alternative`` "less" (default: the closer two languages, the more similar their
    gradients, i.e. a negative correlation), "greater" or "two-sided". Pairs without a
    finite value in either matrix are left out. None with fewer than 3 such pairs or a
    constant matrix."""
    if alternative not in ("less", "greater", "two-sided"):
        raise ValueError(f"alternative must be less, greater or two-sided, not {alternative!r}")
    s, d = np.asarray(similarity, dtype=float), np.asarray(distance, dtype=float)
    if s.shape != d.shape or s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"need two square matrices of one shape, got {s.shape} and {d.shape}")
    n = len(s)
    upper = np.triu_indices(n, 1)
    observed = float(_spearman_rows(s[upper][None], d[upper][None])[0])
    pairs = int((np.isfinite(s[upper]) & np.isfinite(d[upper])).sum())
    if pairs < 3 or not np.isfinite(observed):
        return None
    rng = np.random.default_rng(seed)
    order = rng.permuted(np.broadcast_to(np.arange(n), (permutations, n)), axis=1)
    null = np.concatenate([
        _spearman_rows(np.broadcast_to(s[upper], (len(o), len(upper[0]))),
                       d[o[:, :, None], o[:, None, :]][:, upper[0], upper[1]])
        for o in np.array_split(order, max(1, permutations // 1000))])
    tolerance = 1e-12
    exceed = {"less": null <= observed + tolerance, "greater": null >= observed - tolerance,
              "two-sided": np.abs(null) >= abs(observed) - tolerance}[alternative]
    return {"spearman": observed, "pairs": pairs, "alternative": alternative,
            "p_value": (int(exceed.sum()) + 1) / (permutations + 1),
            "permutations": permutations, "seed": seed}


def mantel_tests(matrix, codes, permutations=10000, seed=0):
    """{distance kind: mantel_test of ``matrix`` against it} over the languages with an ISO
    639-3 code here (the others listed under ``not_in_table``)."""
    keep = [i for i, c in enumerate(codes) if c in ISO639_3]
    kept = [codes[i] for i in keep]
    m = np.asarray(matrix, dtype=float)[np.ix_(keep, keep)]
    results = {}
    for kind in DISTANCES:
        result = mantel_test(m, distance_matrix(kept, kind), permutations, seed) if len(kept) >= 3 else None
        if result is not None:
            result.update(languages=kept, not_in_table=[c for c in codes if c not in ISO639_3])
        results[kind] = result
    return results
