"""Bytes, gradient memory and wall time per update of N-worker training: stock fairseq vs
multilingual_gradvac's two direction batchings, at K directions.

Each variant is a real fairseq-train run of N worker processes (gloo on the CPU, NCCL on
GPUs; --ddp-backend legacy_ddp) on a synthetic corpus of K directions
(fairseq_gradvac/data/synthetic_corpus.py, padded to the shape's vocabulary), the same
model, --max-tokens per worker and number of updates:

  stock   translation_multi_simple_epoch: legacy_ddp all-reduces the summed gradient (P)
  split   GradVac, --direction-batching split: every worker keeps K rows and sends them
  single  GradVac, --direction-batching single: one direction per batch, one row per
          worker at --update-freq 1, the all-to-all exchange

Every collective a worker calls inside Trainer.train_step is counted where it is called:
"bytes sent" is what a ring algorithm sends per worker for it, 2 (N-1)/N B for an
all-reduce of B bytes, (N-1)/N B for an all-gather of B output bytes, and for an
all-to-all what goes to the other workers; fairseq's own small all-reduces of logging
statistics are included for every variant. "Gradient memory" is, on the last update, what
a worker holds for gradients: stock, its .grad tensors plus legacy_ddp's peak while
all-reducing; multilingual_gradvac, its row buffer plus the peak of the combination (the
summed slices, the P-vector that becomes the .grad), read from the CPU profiler's
allocation events (benchmarks/allocations.py; on a GPU torch.cuda's peak instead). Wall
time is rank 0's Trainer.train_step, median over the updates after --warmup, the profiled
last one left out. Ratios are to stock, measured in the same run. Targets: single sends
<= 1.05x stock's bytes whatever K; its memory <= (S + K/N + 1) P against stock's P.

  python benchmarks/distributed.py --directions 8 50 --workers 2 4
  python benchmarks/distributed.py --sizes tiny --directions 8 --workers 2 --updates 3
  python benchmarks/distributed.py --device cuda --workers 2
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

from step_overhead import SIZES, model_argv  # noqa: E402

VARIANTS = (  # (label, task, direction batching)
    ("stock", "translation_multi_simple_epoch", None),
    ("split", "multilingual_gradvac", "split"),
    ("single", "multilingual_gradvac", "single"),
)

# Runs inside each worker: counts the collectives of every Trainer.train_step, times it,
# and reads the gradient memory of the last update from the allocations.
WORKER = r'''
import json, os, sys, time
import torch, torch.distributed as dist
from fairseq_cli.train import cli_main
from fairseq.trainer import Trainer
sys.path.insert(0, os.environ["BENCH_DIR"])
from allocations import peak_bytes

out, world, last = os.environ["BENCH_OUT"], int(os.environ["BENCH_WORLD"]), int(os.environ["BENCH_UPDATES"])
ring = {"all_reduce": 2 * (world - 1) / world, "all_gather_into_tensor": (world - 1) / world,
        "broadcast": 1.0}
state = {"inside": False, "bytes": 0.0, "calls": {}, "memory": None}

def count(name, nbytes):
    if state["inside"]:
        state["bytes"] += nbytes
        state["calls"][name] = state["calls"].get(name, 0) + 1

for name, factor in ring.items():
    original = getattr(dist, name)
    def counted(*args, _name=name, _factor=factor, _original=original, **kwargs):
        count(_name, _factor * args[0].numel() * args[0].element_size())
        return _original(*args, **kwargs)
    setattr(dist, name, counted)
original_a2a = dist.all_to_all_single
def all_to_all_single(output, input, output_split_sizes=None, input_split_sizes=None, **kwargs):
    sizes = input_split_sizes or [input.numel() // world] * world
    count("all_to_all_single", (sum(sizes) - sizes[dist.get_rank()]) * input.element_size())
    return original_a2a(output, input, output_split_sizes, input_split_sizes, **kwargs)
dist.all_to_all_single = all_to_all_single

def measured(fn, held):
    """fn() on the last update with its gradient memory: what is held + fn's peak."""
    def wrapper(*args, **kwargs):
        if not state["inside"] or len(steps) != last - 1:
            return fn(*args, **kwargs)
        if torch.cuda.is_available():
            torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            result = fn(*args, **kwargs)
            peak = torch.cuda.max_memory_allocated() - base
        else:
            peak, result = peak_bytes(lambda: fn(*args, **kwargs))
        state["memory"] = held() + peak
        return result
    return wrapper

from fairseq.distributed import legacy_distributed_data_parallel as legacy
from fairseq_gradvac.gradients import direction_gradients
DG = direction_gradients.DirectionGradients
DG.combine = lambda self, *a, _f=DG.combine, **k: measured(
    lambda: _f(self, *a, **k), lambda: self.buffer.numel() * self.buffer.element_size())()
LDDP = legacy.LegacyDistributedDataParallel
LDDP.all_reduce_grads = lambda self, _f=LDDP.all_reduce_grads: measured(
    lambda: _f(self), lambda: sum(p.numel() * p.element_size() for p in self.module.parameters()))()
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
        json.dump({"steps": steps, "memory": state["memory"]}, f)
'''


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_argv(corpus, shape, variant, workers, args, save):
    _, task, batching = variant
    argv = model_argv(corpus, shape, task, args.max_tokens) + [
        "--max-update", str(args.updates), "--no-save", "--disable-validation", "--save-dir", save,
        "--log-format", "simple", "--log-interval", "1000", "--num-workers", "0",
        "--distributed-world-size", str(workers), "--distributed-no-spawn", "--ddp-backend", "legacy_ddp",
        "--distributed-init-method", f"tcp://127.0.0.1:{_free_port()}",
    ]
    argv += ["--cpu", "--distributed-backend", "gloo"] if args.device == "cpu" else ["--distributed-backend", "nccl"]
    if batching is not None:
        argv += ["--gradient-combiner", "gradvac", "--combine-granularity", "all_layer",
                 "--direction-batching", batching]
    return argv


def run_variant(work, corpus, shape, variant, workers, args):
    label = variant[0]
    script = os.path.join(work, "worker.py")
    with open(script, "w") as f:
        f.write(WORKER)
    out = os.path.join(work, f"{label}-{workers}")
    env = dict(os.environ, PYTHONPATH=ROOT, BENCH_OUT=out, BENCH_WORLD=str(workers),
               BENCH_UPDATES=str(args.updates), BENCH_DIR=os.path.join(ROOT, "benchmarks"),
               OMP_NUM_THREADS=str(args.threads))
    argv = train_argv(corpus, shape, variant, workers, args, os.path.join(work, "save"))
    procs = []
    for rank in range(workers):
        rank_env = dict(env, CUDA_VISIBLE_DEVICES=str(rank)) if args.device == "cuda" else env
        procs.append(subprocess.Popen([sys.executable, script, *argv, "--distributed-rank", str(rank)],
                                      env=rank_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate()[0] for p in procs]
    for rank, (p, log) in enumerate(zip(procs, logs)):
        if p.returncode != 0:
            raise RuntimeError(f"{label}: worker {rank} failed:\n{log[-4000:]}")
    results = [json.load(open(f"{out}.{rank}")) for rank in range(workers)]
    steps = results[0]["steps"][args.warmup : args.updates - 1]
    if not steps:
        raise RuntimeError(f"{label}: no update between the {args.warmup} warm-up updates and the last")
    return {
        "ms": 1000 * statistics.median(s["seconds"] for s in steps),
        "bytes": max(statistics.median(s["bytes"] for s in r["steps"][args.warmup:]) for r in results),
        "memory": max(r["memory"] for r in results),
        "calls": results[0]["steps"][-1]["calls"],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["small"], choices=sorted(SIZES))
    parser.add_argument("--directions", type=int, nargs="+", default=[8, 50], help="K values (even)")
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4], help="N values")
    parser.add_argument("--updates", type=int, default=8, help="updates per run (the last is profiled)")
    parser.add_argument("--warmup", type=int, default=2, help="first updates not timed")
    parser.add_argument("--max-tokens", type=int, default=2048, help="per worker and batch")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--variants", nargs="+", default=[v[0] for v in VARIANTS],
                        help="labels of the variants to run (stock is always run)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.variants) - {v[0] for v in VARIANTS})
    if unknown:
        parser.error(f"unknown variants {unknown}; choose among {[v[0] for v in VARIANTS]}")
    if args.updates < args.warmup + 2:
        parser.error("--updates must leave a timed update between the warm-up and the profiled last one")
    from fairseq_gradvac.data import synthetic_corpus

    chosen = [v for v in VARIANTS if v[0] == "stock" or v[0] in args.variants]
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, {args.device}, {args.threads} thread(s) per worker, "
          f"{args.updates} updates ({args.warmup} warm-up, the last profiled), --max-tokens {args.max_tokens}")
    for size in args.sizes:
        shape = SIZES[size]
        for k in args.directions:
            work = tempfile.mkdtemp(prefix=f"bench-distributed-{size}-{k}-")
            try:
                corpus = synthetic_corpus.build(os.path.join(work, "corpus"), directions=k, rows=400,
                                                min_rows=100, vocab=shape["vocab"])
                for workers in args.workers:
                    rows = [(v[0], run_variant(work, corpus, shape, v, workers, args)) for v in chosen]
                    stock = rows[0][1]
                    print(f"\n{size} (d={shape['dim']}, {shape['layers']}+{shape['layers']} layers, vocabulary "
                          f"{shape['vocab']}), K = {k}, N = {workers}")
                    print("| variant | MB sent per update and worker | x stock | gradient MB per worker | x stock "
                          "| ms per update | x stock | collectives per update |")
                    print("|---|---:|---:|---:|---:|---:|---:|---|")
                    for label, r in rows:
                        calls = ", ".join(f"{c} {n}" for c, n in sorted(r["calls"].items()))
                        print(f"| {label} | {r['bytes'] / 2**20:.2f} | {r['bytes'] / stock['bytes']:.2f} | "
                              f"{r['memory'] / 2**20:.1f} | {r['memory'] / stock['memory']:.2f} | "
                              f"{r['ms']:.0f} | {r['ms'] / stock['ms']:.2f} | {calls} |")
                    print(f"split: (K+1)/2 = {(k + 1) / 2:.1f} x the bytes, K + K/N + 1 = {k + k / workers + 1:.1f} "
                          f"x the memory; single at --update-freq 1: 1.0 x the bytes, 1 + K/N + 1 = "
                          f"{2 + k / workers:.1f} x the memory at most")
            finally:
                shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
