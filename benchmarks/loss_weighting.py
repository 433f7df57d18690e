"""The loss weightings' cost against stock fairseq at K directions, side by side in one run.

For each K (synthetic corpora, data/synthetic_corpus.py), each variant trains on the same
mixed batches of fairseq's own (--max-tokens, length-bucketed), one update per rep in a
shuffled order, as fairseq's Trainer.train_step does an update (step_overhead.py's
Variant): zero_grad, task.train_step, all_reduce_grads, multiply_grads, clip_grad_norm,
task.optimizer_step (where a loss weighting moves its state; FAMO's forward variant runs
its extra forward there). Printed: median time per update and the median over reps of the
per-rep ratio to stock; gradient memory: the bytes of the gradients the update leaves
(every .grad) plus the per-direction rows the task holds (none for a loss weighting),
against stock's.

  python benchmarks/loss_weighting.py --directions 8,50,200 --threads 1 --clock cpu --reps 7
  python benchmarks/loss_weighting.py --quick          # tiny model, K = 8, 3 reps
"""
import argparse
import datetime
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import step_overhead  # noqa: E402
from benchmarks.step_overhead import CLOCK, SIZES, Variant, full_batches, quiet_reps  # noqa: E402

METHODS = ("famo", "famo:next", "uw", "dwa", "rlw", "imtl_l", "stch", "geometric_mean")


def batches_of(variant, max_tokens, device, n):
    """step_overhead's batches of ``variant`` (filled to 80% of --max-tokens, collated as it
    trains on them); a loss weighting's token shares pi from all of the epoch's batches."""
    batches, _ = full_batches(variant.task, max_tokens, device, n)
    if variant.task.__class__.__name__ != "TranslationMultiSimpleEpochTask":
        dataset = variant.task.datasets["train"]
        epoch = dataset.batch_by_size(dataset.ordered_indices(), max_tokens=max_tokens, required_batch_size_multiple=8)
        variant.task._token_shares = variant.task._shares_of_tokens(dataset, epoch)
    return batches


def gradient_bytes(variant):
    """The gradients an update leaves (.grad) and the per-direction rows the task keeps."""
    grads = sum(p.grad.numel() * p.grad.element_size() for p in variant.model.parameters() if p.grad is not None)
    rows = getattr(variant.task, "_grads", None)
    return grads + (rows.buffer.numel() * rows.buffer.element_size() if rows is not None else 0)


def bench(k, shape, args, device, sync):
    from fairseq_gradvac.data import synthetic_corpus

    root = os.path.join(args.workdir_path, f"k{k}-vocab{shape['vocab']}")
    corpus = synthetic_corpus.build(root, directions=k, rows=args.rows, min_rows=max(1, args.rows // 10), min_len=12,
                                    max_len=36, vocab=shape["vocab"])
    variants = [Variant("stock", corpus, shape, "translation_multi_simple_epoch", None, None, args.max_tokens, device)]
    for method in args.methods:
        name, _, post = method.partition(":")
        v = Variant(method, corpus, shape, "multilingual_gradvac", name, "whole_model", args.max_tokens, device,
                    batching="mixed")
        if post:
            v.task.combiner.post_step = post
        variants.append(v)
    batches = {v.label: batches_of(v, args.max_tokens, device, args.batches) for v in variants}
    tokens = statistics.mean(b["ntokens"] for b in batches["stock"])
    print(f"\nK={k}: {len(batches['stock'])} batches, {tokens:.0f} target tokens per batch on average", flush=True)
    memory = {}
    for v in variants:
        v.update(batches[v.label][0], sync)  # warm-up
        memory[v.label] = gradient_bytes(v)
    rng = random.Random(1)

    def run_rep(i):
        order = list(variants)
        rng.shuffle(order)
        out = {}
        for v in order:
            seconds, foreign = v.update(batches[v.label][i % len(batches[v.label])], sync)
            out[v.label] = (seconds, foreign)
        return {v.label: out[v.label] for v in variants}

    done, quiet = quiet_reps(run_rep, args.reps, args.max_reps, args.quiet, label=f"K={k} ms/update, rep")
    used = quiet if len(quiet) >= min(3, args.reps) else done
    return [(v.label, statistics.median(r[v.label][0] for r in used) * 1e3,
             statistics.median(r[v.label][0] / r["stock"][0] for r in used),
             memory[v.label] / memory["stock"]) for v in variants], len(used), len(done)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--directions", default="8,50,200", metavar="K,K,...")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated, of {', '.join(METHODS)} (famo:next: --famo-post-step next)")
    parser.add_argument("--size", default="small", choices=("small", "base", "tiny"))
    parser.add_argument("--quick", action="store_true", help="tiny model, K = 8, 3 reps (smoke run)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--max-reps", type=int, default=None)
    parser.add_argument("--quiet", type=float, default=None)
    parser.add_argument("--clock", choices=sorted(CLOCK), default="wall")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--rows", type=int, default=4000,
                        help="training rows of the largest direction, the smallest a tenth")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    args.methods = [m.strip() for m in args.methods.split(",")]
    unknown = set(args.methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}")
    if args.quick:
        args.size, args.directions, args.reps, args.max_tokens, args.rows = "tiny", "8", 3, 1024, 400
    step_overhead.apply_timing_options(args)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    import fairseq
    import logging

    logging.disable(logging.WARNING)
    import fairseq_gradvac  # noqa: F401

    print(f"loss_weighting: {datetime.date.today()}, torch {torch.__version__}, fairseq {fairseq.__version__}, "
          f"python {platform.python_version()}, device {device}, {os.cpu_count()} CPUs, "
          f"{torch.get_num_threads()} torch threads; times: {'wall clock' if args.clock == 'wall' else 'process CPU time'}")
    print("command: python " + " ".join(sys.argv))
    shape = SIZES[args.size]
    args.workdir_path = args.workdir or tempfile.mkdtemp(prefix="loss_weighting_")
    try:
        table = [(k, bench(k, shape, args, device, sync)) for k in map(int, args.directions.split(","))]
    finally:
        if args.workdir is None:
            shutil.rmtree(args.workdir_path, ignore_errors=True)
    print(f"\nsummary: {args.size} (d={shape['dim']}, {shape['layers']}+{shape['layers']} layers, vocabulary "
          f"{shape['vocab']}), --max-tokens {args.max_tokens}, fairseq's mixed batches; ms per update (median), "
          "x stock: median of per-rep ratios; memory: gradient bytes (.grad + rows) / stock's")
    print("| K | method | ms/update | x stock | gradient memory x stock | reps |")
    print("|---:|---|---:|---:|---:|---|")
    for k, (rows, used, done) in table:
        for label, ms, ratio, memory in rows:
            print(f"| {k} | {label} | {ms:.0f} | {ratio:.3f} | {memory:.2f} | {used} of {done} |")

if __name__ == "__main__":
    main()
