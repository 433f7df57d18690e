"""Who is related to whom: family, genus and script of the languages we train on, and the
test of the paper's first observation (gradient similarity reflects language proximity):
is the mean cosine between languages of one group higher than between groups, beyond
what a random assignment of the same groups gives?
"""
import numpy as np

# code: (family, genus, script). Genera as in WALS; Chinese in either script counts as Han.
LANGUAGES = {
    "en": ("Indo-European", "Germanic", "Latin"),
    "en_gb": ("Indo-European", "Germanic", "Latin"),
    "de": ("Indo-European", "Germanic", "Latin"),
    "nl": ("Indo-European", "Germanic", "Latin"),
    "da": ("Indo-European", "Germanic", "Latin"),
    "sv": ("Indo-European", "Germanic", "Latin"),
    "fr": ("Indo-European", "Romance", "Latin"),
    "es": ("Indo-European", "Romance", "Latin"),
    "it": ("Indo-European", "Romance", "Latin"),
    "pt": ("Indo-European", "Romance", "Latin"),
    "pt_br": ("Indo-European", "Romance", "Latin"),
    "ca": ("Indo-European", "Romance", "Latin"),
    "gl": ("Indo-European", "Romance", "Latin"),
    "cs": ("Indo-European", "Slavic", "Latin"),
    "sk": ("Indo-European", "Slavic", "Latin"),
    "pl": ("Indo-European", "Slavic", "Latin"),
    "sl": ("Indo-European", "Slavic", "Latin"),
    "ru": ("Indo-European", "Slavic", "Cyrillic"),
    "el": ("Indo-European", "Greek", "Greek"),
    "hi": ("Indo-European", "Indic", "Devanagari"),
    "et": ("Uralic", "Finnic", "Latin"),
    "fi": ("Uralic", "Finnic", "Latin"),
    "hu": ("Uralic", "Ugric", "Latin"),
    "eu": ("Basque", "Basque", "Latin"),
    "tr": ("Turkic", "Turkic", "Latin"),
    "ja": ("Japonic", "Japanese", "Japanese"),
    "ko": ("Koreanic", "Korean", "Hangul"),
    "vi": ("Austroasiatic", "Vietic", "Latin"),
    "km": ("Austroasiatic", "Khmer", "Khmer"),
    "id": ("Austronesian", "Malayo-Sumbawan", "Latin"),
    "zh_cn": ("Sino-Tibetan", "Chinese", "Han"),
    "zh_tw": ("Sino-Tibetan", "Chinese", "Han"),
    "dz": ("Sino-Tibetan", "Bodic", "Tibetan"),
    "om": ("Afro-Asiatic", "Cushitic", "Latin"),
}
GROUPINGS = ("family", "genus", "script")


def group_of(code, grouping):
    """The language's family, genus or script; None for a code not in the table."""
    entry = LANGUAGES.get(code)
    return entry[GROUPINGS.index(grouping)] if entry else None


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
