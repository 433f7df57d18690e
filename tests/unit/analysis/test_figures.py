"""Part I's figures and statistics from similarity.csv files written here with planted
structure: the numbers behind each figure against means computed from the rows by hand."""
import csv
import itertools
import json
import os
import random
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest

from fairseq_gradvac.analysis import figure2, figures, languages, plotting, records
from fairseq_gradvac.gradients.similarity import SIDE_AGGREGATES
from tests.helpers.fairseq_runs import ROOT

GENERA = {"fr": "R", "es": "R", "it": "R", "pt": "R", "de": "G", "nl": "G", "sv": "G", "da": "G",
          "cs": "S", "pl": "S", "ru": "S"}
LAYER_GROUPS = ["embeddings", "encoder.layers.0", "encoder.layers.1", "decoder.layers.0",
                "decoder.layers.1", "other"]
HEADER = "update,a,b,group,cosine,norm_a,norm_b,ntokens_a,ntokens_b"


def write_similarity(path, rows):
    with open(path, "w") as f:
        f.write(HEADER + "\n")
        for update, a, b, group, cosine in rows:
            norm = "0" if cosine == "" else "1.5"
            f.write(f"{update},{a},{b},{group},{cosine},{norm},2.0,100,120\n")


def planted_rows(seed=0, updates=(1, 11, 21, 31)):
    """xx-en and en-xx directions of three genera: within a genus the cosine is high (more
    so for xx-en), across genera low, mixed pairs slightly negative; a few NaN/empty rows."""
    rng = random.Random(seed)
    directions = [f"{x}-en" for x in GENERA] + [f"en-{x}" for x in GENERA]
    rows = []
    for update in updates:
        for i, a in enumerate(directions):
            for b in directions[i + 1:]:
                kind = records.pair_kind((a, b))
                same = GENERA[records.language_of(a)] == GENERA[records.language_of(b)]
                base = {"xx-en": 0.1 + 0.5 * same, "en-xx": 0.3 * same}.get(kind, -0.05)
                for group in LAYER_GROUPS + ["model", "encoder_layers", "decoder_layers"]:
                    shift = -0.1 * update / 31 if group == "decoder.layers.1" else 0.0
                    value = base + shift + rng.uniform(-0.05, 0.05)
                    draw = rng.random()
                    cosine = "" if draw < 0.01 else "nan" if draw < 0.02 else f"{value:.6f}"
                    rows.append((update, a, b, group, cosine))
    return rows


def hand_means(rows, group):
    """{sorted pair: mean of the finite cosines} of one group."""
    values = defaultdict(list)
    for _, a, b, g, cosine in rows:
        if g == group and cosine not in ("", "nan"):
            values[tuple(sorted((a, b)))].append(float(cosine))
    return {pair: sum(v) / len(v) for pair, v in values.items()}


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    rows = planted_rows()
    write_similarity(root / "similarity.csv", rows)
    with open(root / "direction_losses.csv", "w") as f:
        f.write("update,direction,loss,ntokens\n")
        for update in range(1, 201):
            for direction in ("fr-en", "en-fr"):
                f.write(f"{update},{direction},{10 - update / 50},300\n")
    report = figures.draw(str(root), str(root / "figures"), permutations=1000)
    return root, rows, report


def test_every_figure_is_written_with_its_csv(run):
    root, _, report = run
    expected = {f"fig1_{side}_{kind}.{ext}" for side in ("encoder", "decoder")
                for kind in ("xx-en", "en-xx") for ext in ("png", "csv")}
    expected |= {"fig1_statistics.json", "fig1_statistics.csv", "fig2a_paired_test.csv", "losses.png", "losses.csv",
                 "conflicts_over_updates.png"}
    expected |= {f"{name}.{ext}" for name in ("fig2a_xx-en_vs_en-xx", "fig3_encoder_vs_decoder",
                                              "fig3_by_layer", "fig3_layers_over_updates")
                 for ext in ("png", "csv")}
    assert set(os.listdir(root / "figures")) == expected and report.skipped == []
    for name in expected:
        if name.endswith(".png"):
            assert (root / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("side,kind", [("encoder", "xx-en"), ("decoder", "en-xx")])
def test_figure1_is_the_mean_over_updates_clustered_by_planted_genus(run, side, kind):
    root, rows, _ = run
    table = read_csv(root / "figures" / f"fig1_{side}_{kind}.csv")
    codes = table[0][1:]
    assert [r[0] for r in table[1:]] == codes and sorted(codes) == sorted(GENERA)
    means = hand_means(rows, SIDE_AGGREGATES[side])
    name = (lambda x: f"{x}-en") if kind == "xx-en" else (lambda x: f"en-{x}")
    for i, x in enumerate(codes):
        for j, y in enumerate(codes):
            expected = 1.0 if x == y else means[tuple(sorted((name(x), name(y))))]
            assert float(table[i + 1][j + 1]) == pytest.approx(expected, abs=1e-5)
    genera = [GENERA[c] for c in codes]  # each genus one contiguous block in the leaf order
    assert sum(a != b for a, b in zip(genera, genera[1:])) == 2


def test_updates_option_draws_one_checkpoint(run, tmp_path):
    root, rows, _ = run
    proc = subprocess.run([sys.executable, "-m", "fairseq_gradvac.analysis.figures", str(root), "--updates",
                           "11-11", "--out", str(tmp_path), "--permutations", "100"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "only update 11 recorded" in proc.stdout
    table = read_csv(tmp_path / "fig1_encoder_xx-en.csv")
    means = hand_means([r for r in rows if r[0] == 11], "encoder_layers")
    x, y = table[0][1], table[0][2]
    assert float(table[1][2]) == pytest.approx(means[tuple(sorted((f"{x}-en", f"{y}-en")))], abs=1e-5)
    bad = subprocess.run([sys.executable, "-m", "fairseq_gradvac.analysis.figures", str(root), "--updates",
                          "5-9", "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode != 0 and "no rows of updates 5-9" in bad.stderr


def test_figure1_statistics_find_the_planted_genera(run):
    root, _, _ = run
    stats = json.loads((root / "figures" / "fig1_statistics.json").read_text())
    matrices = ["decoder en-xx", "decoder xx-en", "encoder en-xx", "encoder xx-en"]
    assert sorted(stats) == sorted(matrices + [f"{m}, update {u}" for m in matrices for u in (1, 11, 21, 31)])
    genus = stats["encoder xx-en"]["groups"]["genus"]
    assert genus["within"] == pytest.approx(0.6, abs=0.02) and genus["between"] == pytest.approx(0.1, abs=0.02)
    assert genus["pairs_within"] == 6 + 6 + 3 and genus["pairs_between"] == 55 - 15
    assert genus["p_value"] < 0.005 and genus["permutations"] == 1000
    assert stats["encoder xx-en"]["groups"]["family"] is None  # all Indo-European: no between pair
    assert set(stats["encoder xx-en"]["groups"]["script"]) >= {"within", "between", "p_value"}
    assert stats["encoder xx-en, update 11"]["groups"]["genus"]["p_value"] < 0.005


def test_figure1_mantel_tests_against_uriel_distances(run):
    """Spearman of the drawn matrix against URIEL+'s genetic distance, by scipy; the planted
    genera make it negative; every matrix and test is a row of fig1_statistics.csv."""
    from scipy.stats import spearmanr

    root, _, _ = run
    table = read_csv(root / "figures" / "fig1_encoder_xx-en.csv")
    codes, matrix = table[0][1:], np.array([[float(v) for v in row[1:]] for row in table[1:]])
    upper = np.triu_indices(len(codes), 1)
    stats = json.loads((root / "figures" / "fig1_statistics.json").read_text())
    for kind in languages.DISTANCES:
        mantel = stats["encoder xx-en"]["mantel"][kind]
        expected = spearmanr(matrix[upper], languages.distance_matrix(codes, kind)[upper]).statistic
        assert mantel["spearman"] == pytest.approx(expected, abs=1e-4) and mantel["pairs"] == 55
    genetic = stats["encoder xx-en"]["mantel"]["genetic"]
    assert genetic["spearman"] < -0.5 and genetic["p_value"] < 0.005 and genetic["alternative"] == "less"
    rows = read_csv(root / "figures" / "fig1_statistics.csv")
    assert rows[0] == ["matrix", "test", "by", "statistic", "value", "pairs", "p_value", "permutations"]
    assert ["encoder xx-en", "mantel", "genetic", "spearman"] == rows[1 + [r[:3] for r in rows[1:]].index(
        ["encoder xx-en", "mantel", "genetic"])][:4]
    assert len(rows) - 1 == 20 * (2 + 3)  # 20 matrices; family undefined (all Indo-European)


def test_figure1_colour_scale():
    assert plotting.color_scale(np.array([0.4, 0.75, np.nan])) == ("Blues", 0.4, 0.75)
    assert plotting.color_scale(np.array([-0.2, 0.5])) == ("RdBu_r", -0.5, 0.5)


def test_figure2a_pairs_each_xx_en_cosine_with_its_en_xx_mirror(run):
    root, rows, _ = run
    table = read_csv(root / "figures" / "fig2a_xx-en_vs_en-xx.csv")
    assert table[0] == ["group", "x", "y", "cos_xx_en", "cos_en_xx"] and len(table) == 1 + 3 * 55
    for group, x, y, xx_en, en_xx in table[1:]:
        means = hand_means(rows, group)
        assert float(xx_en) == pytest.approx(means[tuple(sorted((f"{x}-en", f"{y}-en")))], abs=1e-5)
        assert float(en_xx) == pytest.approx(means[tuple(sorted((f"en-{x}", f"en-{y}")))], abs=1e-5)


def test_figure3_encoder_decoder_layers_and_conflicts(run):
    root, rows, _ = run
    sides = {(s, k): (float(m), int(n)) for s, k, m, n in read_csv(root / "figures" / "fig3_encoder_vs_decoder.csv")[1:]}
    means = hand_means(rows, "encoder_layers")
    xx_en = [v for p, v in means.items() if records.pair_kind(p) == "xx-en"]
    assert sides["encoder", "xx-en"] == (pytest.approx(np.mean(xx_en), abs=1e-5), 55)
    assert sides["decoder", "all"][1] == 231 and sides["decoder", "other"][1] == 121
    layers = {(s, int(i), k): float(m) for s, i, k, m, _ in read_csv(root / "figures" / "fig3_by_layer.csv")[1:]}
    assert sorted({(s, i) for s, i, _ in layers}) == [("decoder", 0), ("decoder", 1), ("encoder", 0), ("encoder", 1)]
    assert layers["decoder", 1, "all"] == pytest.approx(np.mean(list(hand_means(rows, "decoder.layers.1").values())), abs=1e-5)
    over = {(int(u), s, int(i)): (float(m), float(neg), int(n))
            for u, s, i, m, neg, n in read_csv(root / "figures" / "fig3_layers_over_updates.csv")[1:]}
    cosines = [float(c) for u, _, _, g, c in rows if u == 31 and g == "decoder.layers.1" and c not in ("", "nan")]
    assert over[31, "decoder", 1] == (pytest.approx(np.mean(cosines), abs=1e-6), pytest.approx(np.mean(np.array(cosines) < 0), abs=1e-6),
                                      len(cosines))
    assert over[31, "decoder", 1][1] > over[1, "decoder", 1][1]  # the planted drift into conflict


def test_losses_are_a_running_mean_per_direction(run):
    root, _, _ = run
    table = read_csv(root / "figures" / "losses.csv")
    fr_en = [(int(u), float(l)) for u, d, l in table[1:] if d == "fr-en"]
    assert fr_en[0] == (4, pytest.approx(10 - 2.5 / 50))  # window of 200 // 50 = 4 updates
    assert len(fr_en) == 197


def test_proximity_test_on_random_and_reversed_structure():
    codes = list(GENERA)
    rng = np.random.default_rng(1)
    noise = rng.uniform(-1, 1, (11, 11))
    random_matrix = (noise + noise.T) / 2
    result = languages.proximity_test(random_matrix, codes, "genus", permutations=2000)
    assert result["p_value"] > 0.05
    same = np.array([[GENERA[a] == GENERA[b] for b in codes] for a in codes])
    reversed_matrix = np.where(same, 0.1, 0.6) + random_matrix / 20  # related languages disagree
    assert languages.proximity_test(reversed_matrix, codes, "genus", permutations=2000)["p_value"] > 0.95
    planted = np.where(same, 0.6, 0.1) + random_matrix / 20
    result = languages.proximity_test(np.pad(planted, (0, 1), constant_values=np.nan), codes + ["xx"], "genus")
    assert result["p_value"] < 0.001 and result["not_in_table"] == ["xx"] and result["languages"] == codes
    assert languages.proximity_test(planted[:3, :3], ["fr", "de", "cs"], "genus") is None


def test_language_table_covers_the_corpus_languages():
    corpus = "en ca cs da de el es et eu fi fr gl hi hu id it ja ko nl pl pt ru sk sl sv tr vi zh_cn zh_tw"
    assert all(languages.group_of(c, g) for c in corpus.split() for g in languages.GROUPINGS)
    assert languages.group_of("hi", "script") == "Devanagari" and languages.group_of("xx", "genus") is None


def test_a_probe_of_one_update_says_what_it_skipped(tmp_path):
    """whole_model recording, xx-en only, one checkpoint, no losses: Figure 1 (xx-en) and
    encoder vs decoder; everything else skipped with its reason (and no debug flood)."""
    rows = [(500, a, b, g, c) for a, b, c in (("fr-en", "de-en", 0.3), ("fr-en", "hi-en", 0.1),
                                              ("de-en", "hi-en", 0.2))
            for g in ("model", "encoder_layers", "decoder_layers")]
    write_similarity(tmp_path / "similarity.csv", rows)
    proc = subprocess.run([sys.executable, "-m", "fairseq_gradvac.analysis.figures",
                           str(tmp_path / "similarity.csv"), "--permutations", "100"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "DEBUG" not in proc.stderr
    written = sorted(os.listdir(tmp_path / "figures"))
    assert written == sorted(["fig1_encoder_xx-en.png", "fig1_encoder_xx-en.csv", "fig1_decoder_xx-en.png",
                              "fig1_decoder_xx-en.csv", "fig1_statistics.json", "fig1_statistics.csv",
                              "fig3_encoder_vs_decoder.png",
                              "fig3_encoder_vs_decoder.csv"])
    for line in ("skipped Figure 1 (encoder, en-xx; decoder, en-xx): 0 languages besides English",
                 "skipped Figure 2a: no language pair with both",
                 "skipped Figure 3 by layer and over updates, conflicts: no per-layer groups",
                 "skipped losses: no "):
        assert line in proc.stdout
    assert "encoder xx-en | mean cosine within/between groups: family -; genus -; script 0.300/0.150 " \
           "(1/2 pairs) p=" in proc.stdout
    assert "encoder xx-en | Mantel, Spearman vs URIEL+ distance (one-sided p, 3 pairs): genetic " in proc.stdout


def test_two_languages_draw_no_proximity_figure_and_say_so_once(tmp_path):
    """The demo's run: en<->{fr,cs}. Two languages give one pair: no clustering, no test with
    p = nan, one line that says what needs more languages; Figure 3 is still drawn."""
    pairs = [("fr-en", "cs-en"), ("en-fr", "en-cs"), ("fr-en", "en-fr"), ("cs-en", "en-cs"),
             ("fr-en", "en-cs"), ("cs-en", "en-fr")]
    rows = [(u, a, b, g, 0.1 * (i + 1) / u * 100) for u in (100, 200) for i, (a, b) in enumerate(pairs)
            for g in ("model", "encoder_layers", "decoder_layers")]
    write_similarity(tmp_path / "similarity.csv", rows)
    proc = subprocess.run([sys.executable, "-m", "fairseq_gradvac.analysis.figures",
                           str(tmp_path / "similarity.csv"), "--permutations", "100"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = os.listdir(tmp_path / "figures")
    assert not [f for f in written if f.startswith(("fig1", "fig2a"))]
    assert "fig3_encoder_vs_decoder.png" in written
    skipped = [line for line in proc.stdout.splitlines() if "proximity needs 3 or more" in line]
    assert len(skipped) == 1 and "2 languages besides English (cs, fr)" in skipped[0]
    assert "Figure 1 (encoder, xx-en; encoder, en-xx; decoder, xx-en; decoder, en-xx), Figure 2a:" in skipped[0]
    assert len(skipped[0]) < 200  # the demo's log lines stay on one screen line or two
    assert "nan" not in proc.stdout and " -;" not in proc.stdout


def test_figure2a_from_an_xx_en_and_an_en_xx_model(run, tmp_path):
    """Only the xx-en pairs of the first file and the en-xx pairs of the second count; the
    paired test is scipy's Wilcoxon over the language pairs' hand-computed means."""
    from scipy.stats import wilcoxon

    _, rows, _ = run
    xx_en = [r for r in rows if records.pair_kind(r[1:3]) in ("xx-en", "other")]
    en_xx = [r[:4] + (("0.99" if r[4] not in ("", "nan") else r[4]),) if records.pair_kind(r[1:3]) == "xx-en" else r
             for r in rows]  # its xx-en pairs (not to be used) all 0.99
    write_similarity(tmp_path / "a.csv", xx_en)
    write_similarity(tmp_path / "b.csv", en_xx)
    proc = subprocess.run([sys.executable, "-m", "fairseq_gradvac.analysis.figures", str(tmp_path / "a.csv"),
                           "--figure2a", str(tmp_path / "b.csv"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(os.listdir(tmp_path / "out")) == ["fig2a_paired_test.csv", "fig2a_xx-en_vs_en-xx.csv",
                                                    "fig2a_xx-en_vs_en-xx.png"]
    tests = {r[0]: r for r in read_csv(tmp_path / "out" / "fig2a_paired_test.csv")[1:]}
    for group in ("model", "encoder_layers", "decoder_layers"):
        means = hand_means(rows, group)
        pairs = [(x, y) for x, y in itertools.combinations(sorted(GENERA), 2)]
        a = np.array([means[tuple(sorted((f"{x}-en", f"{y}-en")))] for x, y in pairs])
        b = np.array([means[tuple(sorted((f"en-{x}", f"en-{y}")))] for x, y in pairs])
        _, n, mean_a, mean_b, diff, positive, alternative, p = tests[group]
        assert (int(n), int(positive), alternative) == (55, int((a > b).sum()), "greater")
        assert float(mean_a) == pytest.approx(a.mean(), abs=1e-5) and float(mean_b) == pytest.approx(b.mean(), abs=1e-5)
        assert float(p) == pytest.approx(wilcoxon(a - b, alternative="greater").pvalue, rel=1e-3)
    assert "Figure 2a, encoder_layers: cos(x-en, y-en) " in proc.stdout and "one-sided Wilcoxon p = " in proc.stdout
    assert "encoder - decoder gap" in tests
    bad = subprocess.run([sys.executable, "-m", "fairseq_gradvac.analysis.figures", str(tmp_path / "a.csv"),
                          "--figure2a", str(tmp_path / "a.csv"), "--out", str(tmp_path / "bad")],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode != 0 and "has no en-xx pairs" in bad.stderr


def write_scores(run, direction, bleu, chrf):
    (run / "scores.json").write_text(json.dumps({"direction": direction, "bleu": bleu, "chrf": chrf}))


def test_figure2b_reads_each_runs_cosine_bleu_and_chrf(tmp_path, capsys):
    from scipy.stats import spearmanr

    # name, partner, training cosines at updates 10 and 20, probe cosine, BLEU, chrF
    runs = (("en-cs-seed1", "en-cs", (0.2, 0.4), 0.5, 20.5, 50.0), ("en-cs-seed2", "en-cs", (0.1, 0.1), 0.3, 19.5, 49.0),
            ("fr-en-seed1", "fr-en", (0.1, 0.0), 0.2, 18.0, 47.5),
            ("en-hi-seed1", "en-hi", (-0.1, float("nan")), 0.45, 17.25, 48.0))
    for name, partner, cosines, probe, bleu, chrf in runs:
        run = tmp_path / name
        run.mkdir()
        (run / "train.log").write_text("")
        pair = sorted(("en-fr", partner))
        write_similarity(run / "similarity.csv",
                         [(u, *pair, g, "" if c != c else c) for u, c in zip((10, 20), cosines)
                          for g in ("model", "encoder_layers")])
        (run / "probe").mkdir()
        write_similarity(run / "probe" / "similarity.csv", [(1500, *pair, "model", probe),
                                                             (1500, *pair, "encoder_layers", -0.9)])
        write_scores(run, "en-fr", bleu, chrf)
    for name, bleu in (("alone-seed1", 21.0), ("alone-seed2", 22.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "train.log").write_text("")
        write_scores(tmp_path / name, "en-fr", bleu, 51.0)
    (tmp_path / "en-tr-seed1").mkdir()  # still training
    (tmp_path / "en-tr-seed1" / "train.log").write_text("")
    report = figure2.figure2b(str(tmp_path), str(tmp_path / "out"), "en-fr", "model")
    table = read_csv(tmp_path / "out" / "fig2b_bleu_vs_similarity.csv")
    assert table[0] == ["run", "partner", "mean_cosine", "updates", "probe_cosine", "bleu_en-fr", "chrf_en-fr"]
    assert table[1:] == [["en-cs-seed1", "en-cs", "0.3", "2", "0.5", "20.5", "50.0"],
                         ["en-cs-seed2", "en-cs", "0.1", "2", "0.3", "19.5", "49.0"],
                         ["en-hi-seed1", "en-hi", "-0.1", "1", "0.45", "17.25", "48.0"],
                         ["fr-en-seed1", "fr-en", "0.05", "2", "0.2", "18.0", "47.5"],
                         ["alone-seed1", "", "", "", "", "21.0", "51.0"], ["alone-seed2", "", "", "", "", "22.0", "51.0"]]
    assert report.skipped == [("Figure 2b run en-tr-seed1", "no scores.json yet")]
    # over partners, seeds averaged: en-cs (0.2, 0.4, 20.0, 49.5), en-hi (-0.1, 0.45, 17.25, 48.0),
    # fr-en (0.05, 0.2, 18.0, 47.5)
    correlations = {tuple(r[:2]): r[2:] for r in read_csv(tmp_path / "out" / "fig2b_correlation.csv")[1:]}
    assert sorted(correlations) == [("probe", "bleu"), ("probe", "chrf"), ("training", "bleu"), ("training", "chrf")]
    for cosine, xs in (("training", [0.2, -0.1, 0.05]), ("probe", [0.4, 0.45, 0.2])):
        for metric, ys in (("bleu", [20.0, 17.25, 18.0]), ("chrf", [49.5, 48.0, 47.5])):
            expected = spearmanr(xs, ys)
            assert correlations[cosine, metric][0] == "3"
            assert float(correlations[cosine, metric][1]) == pytest.approx(expected.statistic)
            assert float(correlations[cosine, metric][2]) == pytest.approx(expected.pvalue, rel=1e-4)
    out = capsys.readouterr().out
    assert "Figure 2b, en-fr chrf vs training cosine: Spearman +0.500 over 3 partners, p = 0.6667" in out
    assert "Figure 2b, en-fr bleu vs probe cosine: Spearman -0.500 over 3 partners" in out
    assert (tmp_path / "out" / "fig2b_bleu_vs_similarity.png").exists()
    # One partner unprobed: no probe correlation (not one over the probed partners only).
    os.remove(tmp_path / "fr-en-seed1" / "probe" / "similarity.csv")
    figure2.figure2b(str(tmp_path), str(tmp_path / "out2"), "en-fr", "model")
    assert [r[:2] for r in read_csv(tmp_path / "out2" / "fig2b_correlation.csv")[1:]] == [["training", "bleu"],
                                                                                        ["training", "chrf"]]


def test_figure2b_script_trains_scores_and_draws(tmp_path):
    """Three partners and the anchor alone on the tiny corpus: runs trained, BLEU and chrF
    scored, the rank correlation reported; the same command again resumes (does nothing)."""
    from tests.helpers import tiny_corpus

    corpus = tiny_corpus.build(str(tmp_path / "tiny"))
    config = tmp_path / "tiny.sh"
    config.write_text(f"DATA_BIN={corpus['bin']}\nLANG_DICT={corpus['lang_dict']}\nRAW={corpus['raw']}\n"
                      "POST_PROCESS=\nLANG_PAIRS=en-fr,en-cs,fr-en,cs-en\nPREPARE=false\n")
    env = dict(os.environ, DATA=str(config), MINUTES="0.05", SIMILARITY_INTERVAL="1", BEAM="1",
               PARTNERS="en-cs fr-en cs-en", RUNS=str(tmp_path / "runs"))
    script = os.path.join(ROOT, "scripts", "figure2b.sh")
    proc = subprocess.run(["bash", script], cwd=ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "[figure2b] en-fr with each of: en-cs fr-en cs-en; seeds 1" in proc.stdout
    figures_dir = tmp_path / "runs" / "figures"
    table = read_csv(figures_dir / "fig2b_bleu_vs_similarity.csv")
    assert [r[:2] for r in table[1:]] == [["cs-en-seed1", "cs-en"], ["en-cs-seed1", "en-cs"],
                                          ["fr-en-seed1", "fr-en"], ["alone-seed1", ""]]
    assert all(-1 <= float(r[2]) <= 1 for r in table[1:4]) and all(float(r[5]) >= 0 for r in table[1:])
    scores = json.loads((tmp_path / "runs" / "alone-seed1" / "scores.json").read_text())
    assert scores["direction"] == "en-fr" and "nc:6" in scores["chrf_signature"]
    assert all(-1 <= float(r[4]) <= 1 for r in table[1:4])  # each partner probed
    assert [r[:3] for r in read_csv(figures_dir / "fig2b_correlation.csv")[1:]] == [
        ["training", "bleu", "3"], ["training", "chrf", "3"], ["probe", "bleu", "3"], ["probe", "chrf", "3"]]
    assert "Figure 2b, en-fr chrf vs training cosine: " in proc.stdout
    assert "Figure 2b, en-fr chrf vs probe cosine: " in proc.stdout
    assert (figures_dir / "fig2b_bleu_vs_similarity.png").read_bytes()[:4] == b"\x89PNG"
    assert proc.stdout.count("rows of 1 checkpoint(s)") == 3  # the three partners' probes
    # Again, with ALONE=0 and the alone run's score gone: nothing trained, scored or probed.
    os.remove(tmp_path / "runs" / "alone-seed1" / "scores.json")
    again = subprocess.run(["bash", script], cwd=ROOT, capture_output=True, text=True, env=dict(env, ALONE="0"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "[train]" not in again.stdout and "[score]" not in again.stdout and "checkpoint(s)" not in again.stdout
    assert not (tmp_path / "runs" / "alone-seed1" / "scores.json").exists()
