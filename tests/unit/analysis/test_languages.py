"""Language proximity from URIEL+ (the urielplus package's data) and the Mantel test."""
import itertools
import logging

import numpy as np
import pytest
from scipy.stats import spearmanr

from fairseq_gradvac.analysis import languages

CORPUS = "en fr cs tr hi ca da de el es et eu gl hu id it ja ko nl pl pt ru sl sv zh_cn".split()

# Read by hand from the package: URIELPlus().new_distance(kind, [iso_a, iso_b]), urielplus 1.3.2
# (its values are rounded to 4 decimals).
BY_HAND = [("genetic", "fr", "es", 0.4601), ("genetic", "en", "fr", 0.9386), ("genetic", "et", "hu", 0.5),
           ("genetic", "fr", "ja", 1.0), ("geographic", "en", "fr", 0.0246), ("geographic", "fr", "ja", 0.3549),
           ("geographic", "eu", "es", 0.013), ("syntactic", "en", "fr", 0.4204),
           ("syntactic", "fr", "ja", 0.693), ("syntactic", "zh_cn", "ko", 0.4147)]


@pytest.mark.parametrize("kind,a,b,expected", BY_HAND)
def test_distances_are_the_packages(kind, a, b, expected):
    matrix = languages.distance_matrix(CORPUS, kind)
    i, j = CORPUS.index(a), CORPUS.index(b)
    assert matrix[i, j] == matrix[j, i] == pytest.approx(expected, abs=5.1e-5)


def test_distances_against_the_package_itself():
    from urielplus import urielplus

    uriel = urielplus.URIELPlus()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)  # urielplus logs every query at INFO
    try:
        for kind in languages.DISTANCES:
            matrix = languages.distance_matrix(["de", "pl", "id", "zh_cn"], kind)
            for (i, a), (j, b) in itertools.combinations(enumerate(["deu", "pol", "ind", "cmn"]), 2):
                assert matrix[i, j] == pytest.approx(uriel.new_distance(kind, [a, b]), abs=5.1e-5)
    finally:
        root.setLevel(level)


def test_distance_matrices_of_the_corpus():
    for kind in languages.DISTANCES:
        m = languages.distance_matrix(CORPUS, kind)
        assert m.shape == (25, 25) and np.isfinite(m).all() and np.array_equal(m, m.T)
        assert (np.diag(m) == 0).all() and m.min() >= 0 and m.max() <= 1
    genetic = languages.distance_matrix(["eu", "es", "fr"], "genetic")
    assert genetic[0, 1] == genetic[0, 2] == 1.0  # an isolate shares no ancestor (URIEL+: 0.96)
    with pytest.raises(ValueError, match="no ISO 639-3 code for \\['xx'\\]"):
        languages.distance_matrix(["fr", "xx"], "genetic")
    with pytest.raises(ValueError, match="unknown distance 'lexical'"):
        languages.distance_matrix(["fr", "es"], "lexical")


def test_family_is_the_root_of_the_uriel_lineage():
    expected = {"fr": "Indo-European", "hi": "Indo-European", "ru": "Indo-European", "tr": "Turkic",
                "et": "Uralic", "hu": "Uralic", "ja": "Japonic", "ko": "Koreanic", "zh_cn": "Sino-Tibetan",
                "id": "Austronesian", "eu": "Basque"}
    assert {c: languages.group_of(c, "family") for c in expected} == expected
    assert languages.group_of("xx", "family") is None


def planted(n, noise, seed):
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(n, 2))
    distance = np.linalg.norm(points[:, None] - points[None], axis=-1)
    similarity = -distance + rng.normal(scale=noise, size=(n, n))
    return (similarity + similarity.T) / 2, distance


@pytest.mark.parametrize("noise", [0.8, 2.0, 4.0])
def test_mantel_against_every_permutation(noise):
    similarity, distance = planted(6, noise, seed=3)
    upper = np.triu_indices(6, 1)
    observed = spearmanr(similarity[upper], distance[upper]).statistic
    null = np.array([spearmanr(similarity[upper], distance[np.ix_(p, p)][upper]).statistic
                     for p in itertools.permutations(range(6))])
    exact = np.mean(null <= observed + 1e-12)
    result = languages.mantel_test(similarity, distance, permutations=20000, seed=1)
    assert result["spearman"] == pytest.approx(observed, abs=1e-12) and result["pairs"] == 15
    assert abs(result["p_value"] - exact) < 4 * np.sqrt(exact * (1 - exact) / 20000) + 1e-4
    two = languages.mantel_test(similarity, distance, permutations=20000, seed=1, alternative="two-sided")
    exact_two = np.mean(np.abs(null) >= abs(observed) - 1e-12)
    assert abs(two["p_value"] - exact_two) < 4 * np.sqrt(exact_two * (1 - exact_two) / 20000) + 1e-4


def test_mantel_leaves_out_missing_pairs_and_refuses_bad_input():
    similarity, distance = planted(8, 0.5, seed=0)
    similarity[0, 1] = similarity[1, 0] = np.nan
    result = languages.mantel_test(similarity, distance, permutations=500)
    upper = np.triu_indices(8, 1)
    finite = np.isfinite(similarity[upper])
    assert result["pairs"] == 27
    assert result["spearman"] == pytest.approx(spearmanr(similarity[upper][finite], distance[upper][finite]).statistic)
    assert languages.mantel_test(similarity[:2, :2], distance[:2, :2]) is None
    with pytest.raises(ValueError, match="square matrices"):
        languages.mantel_test(similarity, distance[:3, :3])
    with pytest.raises(ValueError, match="alternative"):
        languages.mantel_test(similarity, distance, alternative="lower")


def test_mantel_against_scikit_bio():
    skbio = pytest.importorskip("skbio")
    similarity, distance = planted(9, 1.5, seed=5)
    np.fill_diagonal(similarity, 0.0)
    dissimilarity = similarity.max() - similarity
    np.fill_diagonal(dissimilarity, 0.0)
    r, p, n = skbio.stats.distance.mantel(dissimilarity, distance, method="spearman", permutations=20000,
                                           alternative="two-sided", seed=0)
    ours = languages.mantel_test(dissimilarity, distance, permutations=20000, alternative="two-sided")
    assert ours["spearman"] == pytest.approx(r, abs=1e-12) and n == 9
    assert abs(ours["p_value"] - p) < 4 * np.sqrt(p * (1 - p) / 20000) * 1.5 + 1e-4


def test_mantel_tests_of_a_matrix_over_the_corpus_languages():
    codes = ["fr", "es", "it", "de", "nl", "ru", "ja", "xx"]
    syntactic = languages.distance_matrix(codes[:-1], "syntactic")
    matrix = np.pad(1 - syntactic, (0, 1), constant_values=0.3)  # similarity = 1 - syntactic distance
    results = languages.mantel_tests(matrix, codes, permutations=2000)
    assert sorted(results) == sorted(languages.DISTANCES)
    assert results["syntactic"]["spearman"] == pytest.approx(-1.0) and results["syntactic"]["p_value"] < 0.01
    assert results["genetic"]["not_in_table"] == ["xx"] and results["genetic"]["languages"] == codes[:-1]
