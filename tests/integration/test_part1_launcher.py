"""scripts/train_part1.sh end to end on the tiny corpus: both models (xx-en, en-xx) trained
with interval checkpoints, then ANALYZE=1 probes them and draws Figure 1, Figure 3 and, once
both are probed, Figure 2a; the same commands again do no work twice."""
import csv
import os
import shlex
import subprocess

from tests.helpers import tiny_corpus
from tests.helpers.fairseq_runs import ROOT

SCRIPT = os.path.join(ROOT, "scripts", "train_part1.sh")


def part1(env, tmp_path, direction, **extra):
    env = dict(env, PART1_DIRECTION=direction, SAVE=str(tmp_path / "part1" / direction), **extra)
    proc = subprocess.run(["bash", SCRIPT], cwd=ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def test_train_part1_trains_probes_and_draws_both_models(tmp_path):
    corpus = tiny_corpus.build(str(tmp_path / "tiny"), langs=tiny_corpus.LANGS)
    config = tmp_path / "tiny.sh"
    config.write_text(
        f"DATA_BIN={corpus['bin']}\nLANG_DICT={corpus['lang_dict']}\nRAW={corpus['raw']}\nPOST_PROCESS=\n"
        "case $PART1_DIRECTION in xx-en) LANG_PAIRS=fr-en,cs-en,tr-en ;; en-xx) LANG_PAIRS=en-fr,en-cs,en-tr ;; esac\n"
        "PREPARE=true\n")
    env = dict(os.environ, DATA=str(config), FOREGROUND="1", SAVE_EVERY="2", TRAIN_ARGS="--max-tokens 400 --max-update 4",
               SIMILARITY_INTERVAL="0", OMP_NUM_THREADS="1")
    dry = part1(env, tmp_path, "en-xx", DRY_RUN="1").splitlines()
    command = shlex.split(dry[-1])
    assert command[command.index("--lang-pairs") + 1] == "en-fr,en-cs,en-tr"
    assert command[-4:] == ["--max-tokens", "400", "--max-update", "4"] and "--keep-interval-updates" in command
    for direction in ("xx-en", "en-xx"):
        part1(env, tmp_path, direction)
        saved = sorted(os.listdir(tmp_path / "part1" / direction))
        assert {"checkpoint_1_2.pt", "checkpoint_1_4.pt", "launch.log", "train.log"} <= set(saved)
        out = part1(env, tmp_path, direction, ANALYZE="1")
        assert "probing 2 checkpoint(s)" in out
        probe = tmp_path / "part1" / f"probe-{direction}"
        with open(probe / "similarity.csv", newline="") as f:
            assert {int(r["update"]) for r in csv.DictReader(f)} == {2, 4}
        drawn = set(os.listdir(probe / "figures"))
        assert {f"fig1_encoder_{direction}.png", "fig1_statistics.csv", "fig3_encoder_vs_decoder.png"} <= drawn
        assert f"encoder {direction}, update 4 | Mantel, Spearman vs URIEL+ distance (one-sided p, 3 pairs)" in out
    figure2a = set(os.listdir(tmp_path / "part1" / "figure2a"))
    assert figure2a == {"fig2a_xx-en_vs_en-xx.png", "fig2a_xx-en_vs_en-xx.csv", "fig2a_paired_test.csv"}
    assert "Figure 2a, decoder_layers: cos(x-en, y-en) " in out and "over 3 language pairs" in out
    again = part1(env, tmp_path, "en-xx", ANALYZE="1")
    assert "probing" not in again and "Figure 2a, model:" in again
