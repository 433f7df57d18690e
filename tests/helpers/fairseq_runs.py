"""Helpers for tests that run the real fairseq-train / fairseq-generate on tiny data."""
import os
import subprocess
import sys

import torch

from tests.helpers import ROOT
USER_DIR = os.path.join(ROOT, "fairseq_gradvac")

# A 2+2-layer transformer of width 32: a few seconds for tens of updates on the CPU.
TINY_MODEL = [
    "--arch", "transformer", "--encoder-layers", "2", "--decoder-layers", "2",
    "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
    "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
    "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
    "--share-all-embeddings",
]


def task_args(corpus, task="multilingual_gradvac", directions=None, encoder_langtok="tgt"):
    return [
        corpus["bin"], "--user-dir", USER_DIR, "--task", task,
        "--lang-dict", corpus["lang_dict"],
        "--lang-pairs", ",".join(directions or corpus["directions"]),
        "--encoder-langtok", encoder_langtok,
        "--sampling-method", "temperature", "--sampling-temperature", "5",
    ]


LR = "3e-3"  # the tests' training runs' --lr


def train_args(corpus, save_dir, *extra, task="multilingual_gradvac", directions=None):
    return task_args(corpus, task, directions) + TINY_MODEL + [
        "--optimizer", "adam", "--lr", LR, "--lr-scheduler", "inverse_sqrt",
        "--warmup-updates", "10", "--criterion", "label_smoothed_cross_entropy",
        "--label-smoothing", "0.1", "--max-tokens", "400", "--save-dir", save_dir,
        "--log-format", "simple", "--log-interval", "5", "--no-progress-bar",
        "--seed", "1", "--num-workers", "0", "--no-epoch-checkpoints", *extra,
    ]


def _env():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)  # checkpoints must load without it
    return env


def run_cli(module, args, check=True):
    """Run a fairseq command line (fairseq_cli.<module>) in a fresh interpreter."""
    proc = subprocess.run(
        [sys.executable, "-m", f"fairseq_cli.{module}", *args],
        capture_output=True, text=True, env=_env(), cwd=ROOT,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"fairseq {module} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def train_killed_at(moment, corpus, save_dir, *extra, **kwargs):
    """fairseq-train killed (SIGKILL) at ``moment`` (see killed_train.py); fails if it ran through."""
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tests", "helpers", "killed_train.py"), moment,
         *train_args(corpus, save_dir, *extra, **kwargs)],
        capture_output=True, text=True, env=_env(), cwd=ROOT,
    )
    if proc.returncode != -9:
        raise AssertionError(f"not killed at {moment} (exit {proc.returncode}):\n{proc.stderr[-5000:]}")
    return proc


def train(corpus, save_dir, *extra, **kwargs):
    return run_cli("train", train_args(corpus, save_dir, *extra, **kwargs))


def load_checkpoint(path):
    return torch.load(path, map_location="cpu", weights_only=False)
