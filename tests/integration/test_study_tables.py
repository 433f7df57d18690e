"""The committed study's figure data and tables are what the code rebuilds from the committed
result bundles alone, by the commands in docs/results.md (no checkpoint, no training)."""
import csv
import os

import pytest

from fairseq_gradvac.analysis import direction_weights, remedies
from tests.helpers import ROOT

STUDY = os.path.join(ROOT, "docs", "data", "study", "libreoffice_study-demo_cpu")
ZERO_SHOT = "fr-cs,cs-fr,fr-tr,tr-fr,fr-hi,hi-fr,cs-tr,tr-cs,cs-hi,hi-cs,tr-hi,hi-tr"


def _read(path):
    with open(path) as f:
        return f.read()


@pytest.mark.parametrize("baseline,folder", [("multilingual_t5", "remedies"), ("multilingual_t1", "remedies_t1")])
def test_the_committed_remedies_tables_are_the_bundles_own(tmp_path, baseline, folder):
    remedies.main([STUDY, "--langs", "fr,cs,tr,hi", "--low-resource", "en-hi,hi-en", "--zero-shot", ZERO_SHOT,
                   "--baseline", baseline, "--out", str(tmp_path)])
    for name in ("remedies.md", "remedies.csv"):
        assert _read(tmp_path / name) == _read(os.path.join(STUDY, folder, name)), name


def test_the_committed_direction_weights_are_the_bundles_own(tmp_path):
    direction_weights.main([STUDY, "--out", str(tmp_path)])
    assert _read(tmp_path / "weights.md") == _read(os.path.join(STUDY, "weights", "weights.md"))
    with open(tmp_path / "weights.csv") as f:
        rebuilt = list(csv.reader(f))
    with open(os.path.join(STUDY, "weights", "weights.csv")) as f:
        committed = list(csv.reader(f))
    assert [r[:4] for r in rebuilt] == [r[:4] for r in committed]
    for new, old in zip(rebuilt[1:], committed[1:]):  # within one unit of the last printed digit
        for a, b in zip(new[4:], old[4:]):  # (a solver's last digits may differ across CPUs)
            assert abs(float(a) - float(b)) <= 1.01 * 10 ** -len(b.split(".")[1]), new
