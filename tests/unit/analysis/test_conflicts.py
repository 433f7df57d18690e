"""analysis.conflicts on hand-written run folders: the tables' conflict shares, and the
figure's corrected-share panel only where a run has corrections."""
import matplotlib.image

from fairseq_gradvac.analysis import conflicts

HEADER = "update,a,b,group,cosine,norm_a,norm_b,ntokens_a,ntokens_b\n"


def _run(folder, cosines, corrected=None):
    folder.mkdir(parents=True)
    rows = [f"{u},en-fr,en-cs,encoder.layers.0,{c},1,1,10,10\n" for u, c in cosines]
    (folder / "similarity.csv").write_text(HEADER + "".join(rows))
    lines = [f"x | INFO | train_inner | epoch 001: corrected={share}, num_updates={u}\n"
             for u, share in (corrected or [])]
    (folder / "train.log").write_text("".join(lines))


def test_plain_runs_get_no_corrected_panel(tmp_path):
    _run(tmp_path / "multilingual_t5_seed1", [(10, 0.5), (20, -0.25), (30, -0.5), (40, 0.25)])
    conflicts.main([str(tmp_path), "--window", "10", "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "conflicts.md").read_text()
    assert "| multilingual_t5 | 1-10 | 0.500 / 0.0% | - |" in text
    assert "| multilingual_t5 | 21-30 | -0.500 / 100.0% | - |" in text
    height = matplotlib.image.imread(tmp_path / "out" / "conflicts_over_training.png").shape[0]
    _run(tmp_path / "gradvac_all_layer_t5_seed1", [(10, 0.5), (20, -0.25)], corrected=[(10, 0.25), (20, 0.5)])
    conflicts.main([str(tmp_path), "--window", "10", "--out", str(tmp_path / "out2")])
    assert "| gradvac_all_layer_t5 | 16-20 | -0.250 / 100.0% | 50.0% |" in (tmp_path / "out2" / "conflicts.md").read_text()
    with_panel = matplotlib.image.imread(tmp_path / "out2" / "conflicts_over_training.png").shape[0]
    assert with_panel > 1.5 * height  # two panels against one


def test_a_run_without_per_layer_records_is_skipped_with_a_message(tmp_path, capsys):
    whole = tmp_path / "pcgrad_t5_seed1"
    whole.mkdir()
    (whole / "similarity.csv").write_text(HEADER + "10,en-fr,en-cs,model,0.5,1,1,10,10\n")
    _run(tmp_path / "gradvac_all_layer_t5_seed1", [(10, 0.5), (20, -0.25)])
    conflicts.main([str(tmp_path), "--window", "10", "--out", str(tmp_path / "out")])
    assert "skipped" in capsys.readouterr().err and "pcgrad_t5_seed1" not in (tmp_path / "out" / "conflicts.md").read_text()
