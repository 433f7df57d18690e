"""Bytes and wall time per update of 2-worker training: stock fairseq vs multilingual_gradvac.

Each variant is a real fairseq-train run of 2 worker processes (gloo on the CPU, NCCL on
GPUs; --ddp-backend legacy_ddp), K = 8 directions en<->{de,fr,cs,tr} (the corpus of
benchmarks/step_overhead.py), the same model, batches and number of updates:

  stock                 translation_multi_simple_epoch: legacy_ddp all-reduces the summed
                        gradient (P values)
  sum / gradvac sharded multilingual_gradvac, the sharded exchange: reduce-scatter of the
                        [K, P] rows, one small all-reduce, all-gather of the P-vector
  sum / gradvac stacked the reference exchange: one all-reduce of the [K, P] rows

Every collective a worker calls inside Trainer.train_step is counted where it is called
(torch.distributed.all_reduce, reduce_scatter_tensor, all_gather_into_tensor, broadcast):
"bytes sent" is what a ring algorithm sends per worker for it, 2 (N-1)/N B for an
all-reduce of B bytes, (N-1)/N B for a reduce-scatter of B input bytes or an all-gather of
B output bytes; fairseq's own small all-reduces of logging statistics are included for
every variant. Wall time is rank 0's Trainer.train_step, median over the updates after
--warmup. The table gives both as ratios to stock, measured in the same run; the target
of the sharded exchange is bytes <= (K+1)/2 = 4.5 times stock's.

  python benchmarks/distributed.py                       # small and base shapes, CPU
  python benchmarks/distributed.py --sizes small --updates 6
  python benchmarks/distributed.py --device cuda         # 2 GPUs
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from step_overhead import SIZES, build_corpus, model_argv  # noqa: E402

VARIANTS = (  # (label, task, combiner, exchange)
    ("stock", "translation_multi_simple_epoch", None, None),
    ("sum sharded", "multilingual_gradvac", "sum", "sharded"),
    ("sum stacked", "multilingual_gradvac", "sum", "stacked"),
    ("gradvac sharded", "multilingual_gradvac", "gradvac", "sharded"),
    ("gradvac stacked", "multilingual_gradvac", "gradvac", "stacked"),
)

# Runs inside each worker: counts the collectives of every Trainer.train_step, times it.
WORKER = r'''
import json, os, sys, time
import torch, torch.distributed as dist
from fairseq_cli.train import cli_main
from fairseq.trainer import Trainer

out, world = os.environ["BENCH_OUT"], int(os.environ["BENCH_WORLD"])
ring = {"all_reduce": 2 * (world - 1) / world, "reduce_scatter_tensor": (world - 1) / world,
        "all_gather_into_tensor": (world - 1) / world, "broadcast": 1.0}
state = {"inside": False, "bytes": 0.0, "calls": {}}
for name, factor in ring.items():
    original = getattr(dist, name)
    def counted(*args, _name=name, _factor=factor, _original=original, **kwargs):
        if state["inside"]:
            t = args[1] if _name == "reduce_scatter_tensor" else args[0]
            state["bytes"] += _factor * t.numel() * t.element_size()
            state["calls"][_name] = state["calls"].get(_name, 0) + 1
        return _original(*args, **kwargs)
    setattr(dist, name, counted)
steps = []
original_step = Trainer.train_step
def train_step(self, samples, raise_oom=False):
    if self.cuda:
        torch.cuda.synchronize()
    state.update(inside=True, bytes=0.0, calls={})
    t = time.perf_counter()
    result = original_step(self, samples, raise_oom)
    if self.cuda:
        torch.cuda.synchronize()
    steps.append({"seconds": time.perf_counter() - t, "bytes": state["bytes"], "calls": dict(state["calls"])})
    state["inside"] = False
    return result
Trainer.train_step = train_step
try:
    sys.argv = ["fairseq-train", *sys.argv[1:]]
    cli_main()
finally:
    rank = dist.get_rank() if dist.is_initialized() else 0
    with open(f"{out}.{rank}", "w") as f:
        json.dump(steps, f)
'''


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_argv(corpus, shape, task, combiner, exchange, updates, max_tokens, save, device):
    argv = model_argv(corpus, shape, task, max_tokens) + [
        "--max-update", str(updates), "--no-save", "--disable-validation", "--save-dir", save,
        "--log-format", "simple", "--log-interval", "1000", "--num-workers", "0",
        "--distributed-world-size", "2", "--distributed-no-spawn", "--ddp-backend", "legacy_ddp",
        "--distributed-init-method", f"tcp://127.0.0.1:{_free_port()}",
    ]
    argv += ["--cpu", "--distributed-backend", "gloo"] if device == "cpu" else ["--distributed-backend", "nccl"]
    if combiner is not None:
        argv += ["--gradient-combiner", combiner, "--combine-granularity", "all_layer",
                 "--gradient-exchange", exchange]
    return argv


def run_variant(work, corpus, shape, variant, args):
    label, task, combiner, exchange = variant
    script = os.path.join(work, "worker.py")
    with open(script, "w") as f:
        f.write(WORKER)
    out = os.path.join(work, label.replace(" ", "_"))
    env = dict(os.environ, PYTHONPATH=ROOT, BENCH_OUT=out, BENCH_WORLD="2",
               OMP_NUM_THREADS=str(args.threads))
    argv = train_argv(corpus, shape, task, combiner, exchange, args.updates, args.max_tokens,
                      os.path.join(work, "save"), args.device)
    procs = []
    for rank in range(2):
        rank_env = dict(env, CUDA_VISIBLE_DEVICES=str(rank)) if args.device == "cuda" else env
        procs.append(subprocess.Popen([sys.executable, script, *argv, "--distributed-rank", str(rank)],
                                      env=rank_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate()[0] for p in procs]
    for rank, (p, log) in enumerate(zip(procs, logs)):
        if p.returncode != 0:
            raise RuntimeError(f"{label}: worker {rank} failed:\n{log[-4000:]}")
    steps = json.load(open(f"{out}.0"))[args.warmup:]
    if not steps:
        raise RuntimeError(f"{label}: no update after the {args.warmup} warm-up updates")
    return {
        "ms": 1000 * statistics.median(s["seconds"] for s in steps),
        "bytes": statistics.median(s["bytes"] for s in steps),
        "calls": steps[-1]["calls"],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["small", "base"], choices=sorted(SIZES))
    parser.add_argument("--updates", type=int, default=8, help="updates per run")
    parser.add_argument("--warmup", type=int, default=2, help="first updates not timed")
    parser.add_argument("--max-tokens", type=int, default=2048, help="per worker and update")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--variants", nargs="+", default=[v[0] for v in VARIANTS],
                        help="labels of the variants to run (stock is always run)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.variants) - {v[0] for v in VARIANTS})
    if unknown:
        parser.error(f"unknown variants {unknown}; choose among {[v[0] for v in VARIANTS]}")
    chosen = [v for v in VARIANTS if v[0] == "stock" or v[0] in args.variants]
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, 2 workers on {args.device}, {args.threads} thread(s) "
          f"each, {args.updates} updates ({args.warmup} warm-up), --max-tokens {args.max_tokens}, K = 8")
    for size in args.sizes:
        shape = SIZES[size]
        work = tempfile.mkdtemp(prefix=f"bench-distributed-{size}-")
        try:
            corpus = build_corpus(os.path.join(work, "corpus"), shape["vocab"])
            rows = [(v[0], run_variant(work, corpus, shape, v, args)) for v in chosen]
        finally:
            shutil.rmtree(work, ignore_errors=True)
        stock = rows[0][1]
        print(f"\n{size}: d={shape['dim']}, {shape['layers']}+{shape['layers']} layers, vocabulary {shape['vocab']}")
        print("| variant | MB sent per update and worker | x stock | ms per update | x stock | collectives per update |")
        print("|---|---:|---:|---:|---:|---|")
        for label, r in rows:
            calls = ", ".join(f"{k} {v}" for k, v in sorted(r["calls"].items()))
            print(f"| {label} | {r['bytes'] / 2**20:.2f} | {r['bytes'] / stock['bytes']:.2f} | "
                  f"{r['ms']:.0f} | {r['ms'] / stock['ms']:.2f} | {calls} |")
        print("(K+1)/2 = 4.5; a stacked all-reduce of the K rows: K = 8")


if __name__ == "__main__":
    main()
