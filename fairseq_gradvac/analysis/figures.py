"""Part I's figures (the paper's Figures 1, 2a, 2b and 3) from recorded gradient cosines.

    python -m fairseq_gradvac.analysis.figures RUN_OR_PROBE_DIR --out DIR
    python -m fairseq_gradvac.analysis.figures XX_EN_PROBE --figure2a EN_XX_PROBE --out DIR
    python -m fairseq_gradvac.analysis.figures --figure2b RUNS_DIR --anchor en-fr --out DIR

The first reads the folder's similarity.csv (and direction_losses.csv, when there): Figure 1
(clustered matrices of mean cosine between xx-en directions and between en-xx directions,
encoder and decoder), with, per matrix over all updates and at each checkpoint, the within-
vs between-family/genus/script tests and the Mantel tests against URIEL+'s genetic,
geographic and syntactic distances (fig1_statistics.json/.csv); Figure 2a (cos(x-en, y-en)
against cos(en-x, en-y), with the paired tests) when the run has both kinds; Figure 3
(encoder vs decoder, by layer, by layer over updates), the share of conflicting (negative)
cosines per layer over updates, and the per-direction training losses. The second draws
Figure 2a from two models, an xx-en one and an en-xx one. The third reads the runs of
scripts/figure2b.sh (one folder each, with similarity.csv, scores.json and probe/): the
anchor's BLEU and chrF against its cosine with the other direction (the mean of the
training records and, where probed, the probe's), their rank correlations, and the anchor
trained alone as the reference line. Every PNG comes with the CSV of the numbers
it shows; figures whose data is absent are skipped, with the reason printed.
"""
import argparse
import os

from .figure1 import figure1, summarize_statistics
from .figure2 import draw_figure2a, figure2a, figure2b, summarize_paired_tests
from .figure3 import figure3, losses
from .plotting import Report
from .records import only_updates, read_similarity


def draw(path, out, permutations=10000, seed=0, updates=None):
    """Every figure of one run or probe folder (or its similarity.csv); ``updates``
    (first, last) keeps only those updates' rows."""
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    similarity = path if not os.path.isdir(path) else os.path.join(folder, "similarity.csv")
    report = Report(out)
    if os.path.exists(similarity):
        series = read_similarity(similarity)
        if updates is not None:
            series = only_updates(series, *updates)
            if not series:
                raise SystemExit(f"{similarity} has no rows of updates {updates[0]}-{updates[1]}")
        statistics = figure1(series, report, permutations, seed)
        if statistics:
            print(summarize_statistics(statistics))
        tests = figure2a(series, report)
        if tests:
            print(summarize_paired_tests(tests))
        figure3(series, report)
    else:
        report.skip("Figures 1, 2a, 3, conflicts", f"no {similarity} (train with --similarity-interval)")
    loss_path = os.path.join(folder, "direction_losses.csv")
    if os.path.exists(loss_path):
        losses(loss_path, report)
    else:
        report.skip("losses", f"no {loss_path}")
    return report


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="a run or probe folder, or its similarity.csv; with --figure2b the "
                                "folder of scripts/figure2b.sh's runs")
    p.add_argument("--out", help="output folder (default: PATH's folder/figures)")
    p.add_argument("--figure2b", action="store_true", help="draw Figure 2b from a folder of runs")
    p.add_argument("--figure2a", metavar="EN_XX_PATH", default=None,
                   help="draw Figure 2a and its paired tests from PATH (the xx-en model's probe) and "
                        "EN_XX_PATH (the en-xx model's)")
    p.add_argument("--anchor", default="en-fr", help="Figure 2b: the direction whose BLEU is plotted")
    p.add_argument("--group", default="model", help="Figure 2b: the parameter group of the cosine")
    p.add_argument("--permutations", type=int, default=10000, help="of the proximity tests")
    p.add_argument("--seed", type=int, default=0, help="of the proximity tests")
    p.add_argument("--updates", default=None, metavar="FIRST-LAST",
                   help="only these updates' rows (e.g. 800-800: Figure 1 at one checkpoint)")
    a = p.parse_args(argv)
    updates = None
    if a.updates:
        try:
            first, _, last = a.updates.partition("-")
            updates = (int(first), int(last or first))
        except ValueError:
            p.error(f"--updates: expected FIRST-LAST, got {a.updates!r}")
    out = a.out or os.path.join(a.path if os.path.isdir(a.path) else os.path.dirname(a.path), "figures")
    if a.figure2b:
        report = figure2b(a.path, out, a.anchor, a.group)
    elif a.figure2a:
        report = draw_figure2a(a.path, a.figure2a, a.out or os.path.join(
            a.path if os.path.isdir(a.path) else os.path.dirname(a.path), "figure2a"))
    elif os.path.exists(a.path):
        report = draw(a.path, out, a.permutations, a.seed, updates)
    else:
        raise SystemExit(f"no such file or folder: {a.path}")
    print(report)


if __name__ == "__main__":
    main()
