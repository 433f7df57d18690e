"""The configs and shell recipes: every Table 1 row is a valid fairseq-train command, and
the Table 1 script trains, evaluates and prints the table on a tiny corpus."""
import json
import os
import shlex
import subprocess

import pytest
from fairseq import options

import fairseq_gradvac  # noqa: F401  (registers the task)
from fairseq_gradvac.combiners import available_combiners
from tests.helpers import tiny_corpus
from tests.helpers.fairseq_runs import ROOT

METHODS = sorted(f[:-5] for f in os.listdir(os.path.join(ROOT, "configs", "methods")))
MODELS = sorted(f[:-5] for f in os.listdir(os.path.join(ROOT, "configs", "models")))
SAMPLINGS = sorted(f[:-5] for f in os.listdir(os.path.join(ROOT, "configs", "sampling")))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    corpus = tiny_corpus.build(str(root))
    config = root / "tiny.sh"
    config.write_text(
        f"DATA_BIN={corpus['bin']}\nLANG_DICT={corpus['lang_dict']}\nRAW={corpus['raw']}\n"
        "POST_PROCESS=\nLANG_PAIRS=en-fr,fr-en\nZERO_SHOT=fr-cs\nHIGH=fr\nMED=\nLOW=\n"
        "PREPARE=false\n"
    )
    return dict(corpus, config=str(config))


def _bash(script, *args, env=None):
    return subprocess.run(["bash", os.path.join(ROOT, "scripts", script), *args], cwd=ROOT,
                          capture_output=True, text=True, env=dict(os.environ, **(env or {})))


def test_table1_has_every_row():
    """Table 1's rows, and a config for every other method."""
    assert METHODS == sorted(TABLE1 + [
        "upgrad", "dualproj", "cagrad", "imtl_g", "aligned_mtl", "fairgrad", "nash_mtl", "config",
        "scalarization_low", "famo", "uw", "dwa", "rlw", "imtl_l", "stch", "geometric_mean", "cr_mogm"])
    assert set(available_combiners()) <= {_combiner_of(m) for m in METHODS}


def _combiner_of(method):
    """The combiner a config is named for: the longest registered name it starts with."""
    if method in ("bilingual", "multilingual") or method.startswith("scalarization"):
        return "sum"
    return max((n for n in available_combiners() if method.startswith(n)), key=len)
    assert MODELS == ["demo_cpu", "small_cpu", "transformer_base"] and SAMPLINGS == ["t1", "t5"]


TABLE1 = ["bilingual", "multilingual", "gradnorm", "mgda", "pcgrad", "pcgrad_all_layer",
          "gradvac_fixed_obj", "gradvac_whole_model", "gradvac_all_layer"]


# Table 1's rows with every model; the other methods' configs with one (the model config
# adds the same options to every method)
@pytest.mark.parametrize("method,model", [(m, model) for m in METHODS for model in MODELS
                                          if m in TABLE1 or model == "demo_cpu"])
def test_every_config_is_a_valid_fairseq_train_command(corpus, method, model):
    proc = _bash("train.sh", corpus["config"], method, "t5", model, "/tmp/unused",
                 env={"DRY_RUN": "1", "MINUTES": "5"})
    assert proc.returncode == 0, proc.stderr
    commands = [shlex.split(line) for line in proc.stdout.splitlines()]
    assert len(commands) == (2 if method == "bilingual" else 1)  # bilingual: one per direction
    for cmd in commands:
        assert cmd[0] == "fairseq-train"
        args = options.parse_args_and_arch(options.get_training_parser(), cmd[1:])
        assert args.task == "multilingual_gradvac" and args.stop_time_hours == pytest.approx(5 / 60)
        assert args.similarity_interval == 100  # Part I's cosines recorded by default
        assert args.gradient_combiner == _combiner_of(method)
        if method == "gradvac_all_layer":
            assert args.combine_granularity == "all_layer" and args.gradvac_beta == 1e-2
        if method == "gradnorm":  # its weights apply to whole gradients: no granularity to pass
            assert "--combine-granularity" not in cmd
        if method == "gradvac_fixed_obj":
            assert args.gradvac_fixed_target is not None
        if method == "scalarization_low":
            assert args.direction_weights == {"en-hi": 2.0, "hi-en": 2.0}
    if method == "bilingual":
        assert [c[c.index("--lang-pairs") + 1] for c in commands] == ["en-fr", "fr-en"]


def test_unknown_config_is_refused(corpus):
    proc = _bash("train.sh", corpus["config"], "gradvak", "t5", "small_cpu", "/tmp/unused",
                 env={"DRY_RUN": "1"})
    assert proc.returncode != 0 and "no such config: configs/methods/gradvak.args" in proc.stderr


def test_reproduce_table1_trains_evaluates_and_prints_the_table(corpus, tmp_path):
    env = {"DATA": corpus["config"], "MODEL": "small_cpu", "ROWS": "bilingual gradvac_all_layer",
           "MINUTES": "0.05", "BEAM": "1", "RUNS": str(tmp_path)}
    proc = _bash("reproduce_table1.sh", env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    table = (tmp_path / "table1.md").read_text()
    assert "| (1) Bilingual | 5 |" in table and "| (9) GradVac w. all_layer | 5 |" in table
    assert "en-fr" in table and "fr-cs" in table and "High" in table
    scores = json.loads((tmp_path / "table1.json").read_text())["scores"]["bleu"]
    assert sorted(scores["gradvac_all_layer_t5"][0]) == ["en-fr", "fr-cs", "fr-en"]
    assert sorted(scores["bilingual_t5"][0]) == ["en-fr", "fr-en"]
    # A second run finds everything done: no training, no generation.
    again = _bash("reproduce_table1.sh", env=env)
    assert again.returncode == 0 and "[train]" not in again.stdout and "[evaluate]" not in again.stdout


def test_model_shape_benchmark_trains_each_shape_and_tabulates(corpus, tmp_path):
    env = dict(os.environ, DATA=corpus["config"], MINUTES="0.05", SHAPES="d16 d32", OUT=str(tmp_path))
    proc = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "model_shape.sh")], cwd=ROOT,
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = [l.split("|")[1:-1] for l in proc.stdout.splitlines() if l.startswith("| d")]
    assert [r[0].strip() for r in rows] == ["d16", "d32"]
    params = [int(r[1].replace(",", "")) for r in rows]
    assert params[0] < params[1]
    assert all(float(r[4]) > 0 for r in rows)  # each reached a validation loss


def test_model_shape_benchmark_refuses_an_odd_number_of_shapes(tmp_path):
    proc = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "model_shape.sh")], cwd=ROOT,
                          capture_output=True, text=True,
                          env=dict(os.environ, SHAPES="d16 d32 d64", OUT=str(tmp_path)))
    assert proc.returncode == 2 and "even number" in proc.stderr


def _demo_config(tmp_path):
    """A data config like configs/data/libreoffice_demo.sh, on synthetic LibreOffice packages
    (tests/integration/test_prepare_data.py's): the demo's real preparation, sentencepiece included."""
    from tests.integration.test_prepare_data import make_packages

    make_packages(tmp_path / "pkgs")
    config = tmp_path / "demo_data.sh"
    config.write_text(
        f"DATA_DIR={tmp_path / 'data'}\nDATA_BIN=$DATA_DIR/bin\nLANG_DICT=$DATA_DIR/langs.txt\n"
        "RAW=$DATA_DIR/raw\nPOST_PROCESS=sentencepiece\nLANG_PAIRS=en-fr,fr-en,en-cs,cs-en\n"
        "ZERO_SHOT=fr-cs,cs-fr\nHIGH=fr,cs\nMED=\nLOW=\n"
        f"PREPARE=\"bash scripts/prepare_libreoffice.sh --packages-dir {tmp_path / 'pkgs'} "
        "--out $DATA_DIR --langs fr,cs --vocab-size 150 --valid-size 5 --test-size 10 --workers 1\"\n")
    return str(config)


def test_demo_scores_every_direction_shows_samples_and_a_working_interactive_command(tmp_path):
    run = tmp_path / "run"
    env = {"DATA": _demo_config(tmp_path), "RUN": str(run), "SKIP_SETUP": "1",
           "OMP_NUM_THREADS": "1", "SAMPLES": "2", "TRAIN_ARGS": "--max-update 12 --log-interval 4",
           "TRY_INPUT": "", "SIMILARITY_INTERVAL": "4"}  # step 6 translates the first en-fr sample
    proc = _bash("demo.sh", env=env)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "[demo] OMP_NUM_THREADS=1 (set by you)" in out
    for step in ("1/6", "2/6", "3/6", "4/6", "5/6", "6/6"):
        assert f"[demo] {step}" in out
    # Part I's figures of the run, from its recorded similarities and per-direction losses
    assert {"fig3_encoder_vs_decoder.png", "fig3_layers_over_updates.csv", "losses.png"} <= set(
        os.listdir(run / "figures"))
    assert " cos_mean " in out  # the compact training line shows the recorded cosine
    # The console stays compact: fairseq's long lines are replaced by short ones.
    assert "[train] update" in out and "[valid] update" in out and "loss_en-fr" not in out
    assert all(len(line) < 200 for line in out.splitlines() if line.startswith("[")), out
    scores = json.loads((run / "bleu.json").read_text())
    assert list(scores["directions"]) == ["en-fr", "fr-en", "en-cs", "cs-en", "fr-cs", "cs-fr"]
    assert all(r["sentences"] == 10 for r in scores["directions"].values())
    # Sample translations next to their sources and references, for en-fr, fr-en and fr-cs.
    samples = out[out.index("### Sample translations"):out.index("### Try it")]
    assert [l[5:] for l in samples.splitlines() if l.startswith("#### ")] == ["en-fr", "fr-en", "fr-cs"]
    assert samples.count("- source:") == 6 and samples.count("  model:") == 6
    references = (tmp_path / "data" / "raw" / "test.en-fr.fr").read_text().splitlines()
    shown = [l.split(":", 1)[1].strip() for l in samples.splitlines() if l.startswith("  reference:")]
    assert shown[0] in references and "▁" not in samples
    # The interactive command: printed, and it really translates (sentencepiece in and out).
    lines = out[out.index("### Try it"):].splitlines()
    command = shlex.split(lines[2])
    assert command[0] == "fairseq-interactive" and "--sentencepiece-model" in command
    assert command[command.index("--source-lang") + 1] == "en"
    assert command[command.index("--target-lang") + 1] == "fr"
    shown_translation = next(l[4:] for l in lines if l.startswith(" -> "))
    proc = subprocess.run(command, input="The open file menu number 3 on page 1.\n" * 2, cwd="/",
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    translations = [l.split("\t")[2] for l in proc.stdout.splitlines() if l.startswith("D-")]
    assert len(translations) == 2 and "▁" not in "".join(translations)
    # The demo's own run of the command translated its sentence (the first en-fr sample) as
    # fairseq-generate did from the binarized test set: same language tokens, sentencepiece
    # in and out; and the printed example, run in a shell, prints that translation.
    sample_source = samples.split("- source:", 1)[1].splitlines()[0].strip()
    sample_model = samples.split("  model:", 1)[1].splitlines()[0].strip()
    assert shown_translation.strip() == sample_model
    short = next(l for l in lines if "scripts/translate.sh" in l)  # the short way, from the repository
    translated = subprocess.run(short.strip(), shell=True, cwd=ROOT, capture_output=True, text=True)
    assert translated.returncode == 0 and len(translated.stdout.splitlines()) == 1, translated.stderr[-2000:]
    assert "▁" not in translated.stdout and translated.stdout.strip()
    example = next(l for l in lines if l.strip().startswith("echo "))
    assert shlex.split(example)[1] == sample_source
    again = subprocess.run(example.strip(), shell=True, cwd="/", capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout.strip() == sample_model


def test_demo_chooses_threads_from_the_load_unless_told(tmp_path):
    env = dict(os.environ, DATA=str(tmp_path / "no-such-config.sh"), SKIP_SETUP="1")
    env.pop("OMP_NUM_THREADS", None)
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "demo.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    line = next(l for l in proc.stdout.splitlines() if l.startswith("[demo] OMP_NUM_THREADS="))
    threads = int(line.split("=")[1].split()[0])
    load = os.getloadavg()[0]
    assert 1 <= threads <= min(4, os.cpu_count()) and f"{os.cpu_count()} cores" in line
    if load > os.cpu_count():  # a busy machine: one thread
        assert threads == 1
    assert proc.returncode != 0  # and then the missing data config stops it
