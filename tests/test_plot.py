"""Plots from a fairseq train log."""
import os

from fairseq_gradvac import plot

LINE = ("2026-11-24 02:33:03 | INFO | train_inner | epoch 001:     {u} / 968 loss=12.686, "
        "loss_en-fr={l}, loss_fr-en=12.5, corrected=0.297, cos_en-fr_fr-en={c}, "
        "cos_fr-en_en-fr=-0.2, ppl=6120.05, num_updates={u}, lr=5e-04\n")


def test_similarity_matrix_and_pngs(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("noise\n" + "".join(LINE.format(u=u, l=10 - u / 50, c=c)
                                       for u, c in ((50, 0.1), (100, 0.3), (150, 0.5))))
    records = plot.read_log(str(log))
    assert [r["num_updates"] for r in records] == [50, 100, 150] and records[0]["lr"] == 5e-4
    directions, matrix = plot.similarity_matrix(records, last=2)
    assert directions == ["en-fr", "fr-en"]
    assert matrix[0][1] == 0.4 and matrix[1][0] == -0.2 and matrix[0][0] != matrix[0][0]
    plot.main([str(log), "--out", str(tmp_path / "run")])
    for suffix in ("_similarity.png", "_losses.png"):
        with open(tmp_path / f"run{suffix}", "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_command_line_prints_no_debug_flood(tmp_path):
    """Importing fairseq sets the root logger to DEBUG; the package undoes it."""
    import subprocess
    import sys
    log = tmp_path / "train.log"
    log.write_text("".join(LINE.format(u=u, l=10 - u / 50, c=0.1) for u in (50, 100)))
    proc = subprocess.run([sys.executable, "-m", "fairseq_gradvac.plot", str(log), "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "run_similarity.png").exists()
    assert "DEBUG" not in proc.stderr
