"""The configs and shell recipes: every Table 1 row is a valid fairseq-train command, and
the Table 1 script trains, evaluates and prints the table on a tiny corpus."""
import json
import os
import shlex
import subprocess

import pytest
from fairseq import options

import fairseq_gradvac  # noqa: F401  (registers the task)
import tiny_corpus
from fairseq_runs import ROOT

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
    assert METHODS == sorted([
        "bilingual", "multilingual", "gradnorm", "mgda", "pcgrad", "pcgrad_all_layer",
        "gradvac_fixed_obj", "gradvac_whole_model", "gradvac_all_layer"])
    assert MODELS == ["small_cpu", "transformer_base"] and SAMPLINGS == ["t1", "t5"]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("method", METHODS)
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
        expected = "sum" if method in ("bilingual", "multilingual") else method.split("_")[0]
        assert args.gradient_combiner == expected
        if method == "gradvac_all_layer":
            assert args.combine_granularity == "all_layer" and args.gradvac_beta == 1e-2
        if method == "gradvac_fixed_obj":
            assert args.gradvac_fixed_target is not None
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
    scores = json.loads((tmp_path / "table1.json").read_text())
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
