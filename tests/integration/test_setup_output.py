"""scripts/setup.sh prints pip's output but for its one expected note (fairseq-fixed declares
torchaudio, which text training needs not): a fresh machine's set-up shows no red ERROR, and
any other conflict still shows."""
import os
import subprocess

from tests.helpers import ROOT
HEADER = ("ERROR: pip's dependency resolver does not currently take into account all the packages that are "
          "installed. This behaviour is the source of the following dependency conflicts.")
TORCHAUDIO = "fairseq-fixed 0.12.3.1 requires torchaudio>=0.8.0, which is not installed."


def _filter(text):
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "setup.sh"), "--filter-pip-note"], input=text,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_expected_torchaudio_note_is_dropped():
    assert _filter(f"{HEADER}\n{TORCHAUDIO}\n") == ""


def test_other_conflicts_and_warnings_still_show():
    other = "foo 1.0 requires bar>=2, but you have bar 1.0 which is incompatible."
    out = _filter(f"{HEADER}\n{TORCHAUDIO}\n{other}\n")
    assert HEADER in out and other in out and TORCHAUDIO not in out
    assert _filter("WARNING: something else\n") == "WARNING: something else\n"
