"""The committed study's figure data and tables are what the code rebuilds from the committed
result bundles alone, by the commands in docs/results.md (no checkpoint, no training)."""
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
