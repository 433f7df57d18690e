"""How far 2 gloo workers end from 1 worker with --update-freq 2, and where the difference
comes from: the tests' exact setting (tests/integration/test_distributed_training.py: SGD, no dropout,
GELU, the tiny corpus where cs is small) through the real fairseq-train.

    python -m tests.helpers.two_vs_one mgda:whole_model gradvac:all_layer --updates 6 --lr 0.5

prints, per method, the models' largest difference (as a fraction of the largest parameter,
and in units in the last place of fp32 at that parameter), and per update the relative
difference of the Gram matrices the two runs combined with and of the weights they computed
from them (each scaled to the one worker's: two workers average their rows). A method whose
weights amplify the Gram's rounding shows a weight difference well above the Gram's.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch

from tests.helpers import tiny_corpus
from tests.helpers.fairseq_runs import ROOT, load_checkpoint, train_args
from tests.integration.test_distributed_training import DISTRIBUTED, EXACT, _env, _free_port

# The wrapper fairseq-train runs: every weigh() call's Gram matrices and weights, per rank.
WRAPPER = """
import json, os, sys
import torch
from fairseq_cli.train import cli_main
from fairseq_gradvac.combiners.combiner import Combiner
weigh = Combiner.weigh
def recorded(self, gram, tasks, groups, step, **kwargs):
    w = weigh(self, gram, tasks, groups, step, **kwargs)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    with open(os.environ["DUMP"] + f".{rank}", "a") as f:
        f.write(json.dumps({"step": step, "gram": gram.double().tolist(), "w": w.double().tolist()}) + "\\n")
    return w
Combiner.weigh = recorded
torch.set_num_threads(1)
sys.argv = ["fairseq-train", *sys.argv[1:]]
cli_main()
"""


def _run(corpus, save, extra, two, work):
    wrapper = os.path.join(work, "wrapper.py")
    with open(wrapper, "w") as f:
        f.write(WRAPPER)
    env = dict(_env(os.path.join(work, "trace")), DUMP=save + ".dump")
    if not two:
        cmd = [sys.executable, wrapper, *train_args(corpus, save, *EXACT, "--update-freq", "2", *extra)]
        subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True)
        return
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, wrapper, *train_args(
        corpus, save, *EXACT, *DISTRIBUTED, *extra, "--distributed-init-method", f"tcp://127.0.0.1:{port}",
        "--distributed-rank", str(rank))], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for rank in range(2)]
    for p in procs:
        if p.wait():
            raise SystemExit(f"a worker failed (exit {p.returncode})")


def _relative(a, b):
    """max |a - c b| / max |a|, c scaling b to a (two workers average their rows)."""
    c = a.abs().sum() / b.abs().sum().clamp_min(1e-300)
    return ((a - c * b).abs().max() / a.abs().max().clamp_min(1e-300)).item()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="METHOD:GRANULARITY")
    parser.add_argument("--updates", type=int, default=6)
    parser.add_argument("--lr", default="0.5")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        corpus = tiny_corpus.build(os.path.join(work, "tiny"), train_sizes={"cs": 30, "fr": 120})
        for run in args.runs:
            method, granularity = run.split(":")
            extra = ("--max-update", str(args.updates), "--gradient-combiner", method,
                     "--combine-granularity", granularity, "--lr", args.lr)
            saves = {mode: os.path.join(work, f"{method}-{granularity}-{mode}") for mode in ("one", "two")}
            for mode, save in saves.items():
                _run(corpus, save, extra, mode == "two", work)
            one, two = (load_checkpoint(os.path.join(s, "checkpoint_last.pt"))["model"] for s in saves.values())
            scale = max(v.abs().max().item() for v in one.values())
            key = max(one, key=lambda k: (one[k].double() - two[k].double()).abs().max().item())
            diff = (one[key].double() - two[key].double()).abs()
            where = diff.argmax()
            ulp = torch.finfo(torch.float32).eps * max(abs(one[key].flatten()[where].item()), 1e-30)
            print(f"{run}: {args.updates} updates at lr {args.lr}: models differ by "
                  f"{diff.max().item() / scale:.2e} of the largest parameter ({key}: "
                  f"{diff.max().item() / ulp:.1f} ulp of fp32)")
            records = [[json.loads(line) for line in open(saves[mode] + ".dump.0")] for mode in ("one", "two")]
            for a, b in zip(*records):
                dg = _relative(torch.tensor(a["gram"]), torch.tensor(b["gram"]))
                dw = _relative(torch.tensor(a["w"]), torch.tensor(b["w"]))
                print(f"  update {a['step'] + 1}: Gram {dg:.1e}, weights {dw:.1e} (x{dw / max(dg, 1e-300):.1f})")


if __name__ == "__main__":
    main()
