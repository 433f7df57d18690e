"""Time per update of the data-imbalance study's methods, side by side in one run, against
the plain sum (the study's multilingual rows).

Each method is built from the study's own option files, as scripts/train.sh passes them:
configs/models/MODEL.args (default demo_cpu, the study's model and --max-tokens 1500) and
configs/methods/METHOD.args, on a synthetic corpus of K directions (data/synthetic_corpus.py,
imbalanced, temperature sampling T=5). "METHOD:low" is METHOD on the two smallest directions
only (--gradvac-directions, the study's *_low rows). The sampling rows (T=1, Cooldown) are
the plain sum's update on other batches: their cost per update is the sum's.

Every variant trains on the same samples, collated as it trains on them (split into one
batch per direction for the gradient methods, fairseq's mixed batch for a loss weighting),
one update per rep in a shuffled order, as step_overhead.py's Variant does fairseq's
Trainer.train_step (a loss weighting moves its state, and FAMO runs its extra forward, in
task.optimizer_step). Printed: the median time per update, and the median over reps of
the per-rep ratio to the plain sum. The study's gradient-cosine records (every 100
updates) are left out: instrumentation, not the method.

  python benchmarks/study_rows.py --threads 1 --clock cpu --reps 15
  python benchmarks/study_rows.py --quick          # tiny model, 3 reps (smoke run)
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
from benchmarks.loss_weighting import batches_of  # noqa: E402
from benchmarks.step_overhead import CLOCK, Variant, quiet_reps  # noqa: E402

METHODS = "multilingual,pcgrad_all_layer,gradvac_all_layer,gradvac_all_layer:low,famo,upgrad,nash_mtl"


def options_of(path):
    """The options in a configs/*.args file, comments dropped (scripts/train.sh's args_of)."""
    if not os.path.isfile(path):
        raise SystemExit(f"no such config: {path}")
    with open(path) as f:
        return " ".join(line.split("#", 1)[0] for line in f).split()


def method_options(method, directions):
    """configs/methods/METHOD.args, and with ':low' GradVac on the smallest pair only."""
    name, _, scope = method.partition(":")
    if scope not in ("", "low"):
        raise SystemExit(f"unknown scope ':{scope}' in {method} (METHOD or METHOD:low)")
    options = options_of(os.path.join(ROOT, "configs", "methods", f"{name}.args"))
    return options + (["--gradvac-directions", ",".join(directions[-2:])] if scope == "low" else [])


def argv_of(method, corpus, model_options, directions):
    return [corpus["bin"], "--user-dir", os.path.join(ROOT, "fairseq_gradvac"), "--task", "multilingual_gradvac",
            "--lang-dict", corpus["lang_dict"], "--lang-pairs", ",".join(directions),
            "--sampling-method", "temperature", "--sampling-temperature", "5", "--seed", "1",
            *model_options, *method_options(method, directions)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default=METHODS,
                        help=f"comma-separated configs/methods names, METHOD:low on the smallest pair only; "
                             f"the first is the baseline of the ratios (default {METHODS})")
    parser.add_argument("--model", default="demo_cpu", help="configs/models/MODEL.args (default demo_cpu)")
    parser.add_argument("--directions", type=int, default=8, help="K (default 8, as the study)")
    parser.add_argument("--vocab", type=int, default=4000, help="dictionary size (default 4000, as the study's)")
    parser.add_argument("--rows", type=int, default=20000,
                        help="training rows of the largest direction, the smallest a tenth")
    parser.add_argument("--quick", action="store_true", help="tiny corpus and vocabulary, 3 reps (smoke run)")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--max-reps", type=int, default=None)
    parser.add_argument("--quiet", type=float, default=None,
                        help="a rep counts if other processes took at most this share of the CPU "
                             "(default 0.05; 1 with --clock cpu)")
    parser.add_argument("--clock", choices=sorted(CLOCK), default="wall")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batches", type=int, default=4, help="distinct batches cycled over the reps")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for method in methods:  # an unknown method or scope is refused before anything is built
        method_options(method, [])
    if args.quick:
        args.reps, args.rows, args.vocab = 3, 2000, 500
    step_overhead.apply_timing_options(args)
    model_options = options_of(os.path.join(ROOT, "configs", "models", f"{args.model}.args"))
    max_tokens = int(model_options[model_options.index("--max-tokens") + 1])

    import fairseq
    import logging

    logging.disable(logging.WARNING)
    import fairseq_gradvac  # noqa: F401
    from fairseq_gradvac.data import synthetic_corpus

    print(f"study_rows: {datetime.date.today()}, torch {torch.__version__}, fairseq {fairseq.__version__}, "
          f"python {platform.python_version()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads; "
          f"times: {'wall clock' if args.clock == 'wall' else 'process CPU time'}")
    print("command: python " + " ".join(sys.argv))
    workdir = args.workdir or tempfile.mkdtemp(prefix="study_rows_")
    device, sync = torch.device("cpu"), (lambda: None)
    try:
        corpus = synthetic_corpus.build(os.path.join(workdir, f"k{args.directions}-vocab{args.vocab}"),
                                        directions=args.directions, rows=args.rows, min_rows=args.rows // 10,
                                        min_len=12, max_len=36, vocab=args.vocab)
        # en-xx, xx-en per language, the largest first
        directions = [d for lang in sorted({d.split("-")[1] for d in corpus["directions"]} - {"en"})
                      for d in (f"en-{lang}", f"{lang}-en")]
        variants = [Variant.from_argv(m, argv_of(m, corpus, model_options, directions), device) for m in methods]
        batches = {v.label: batches_of(v, max_tokens, device, args.batches) for v in variants}
        first = batches[variants[0].label]
        tokens = statistics.mean(b["ntokens"] if "ntokens" in b else sum(d["ntokens"] for d in b.values())
                                 for b in first)
        params = sum(p.numel() for p in variants[0].model.parameters())
        print(f"\n{args.model}: {params / 1e6:.2f}M parameters; K={args.directions}, --max-tokens {max_tokens}, "
              f"{len(first)} batches of {tokens:.0f} target tokens on average", flush=True)
        for v in variants:
            v.update(batches[v.label][0], sync)  # warm-up
        rng = random.Random(1)

        def run_rep(i):
            order = list(variants)
            rng.shuffle(order)
            out = {v.label: v.update(batches[v.label][i % len(batches[v.label])], sync) for v in order}
            return {v.label: out[v.label] for v in variants}

        done, quiet = quiet_reps(run_rep, args.reps, args.max_reps, args.quiet, label="ms/update, rep")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    used = quiet if len(quiet) >= min(3, args.reps) else done
    base = variants[0].label
    print(f"\nsummary: configs/models/{args.model}.args, K={args.directions}, one update per method per rep "
          f"({len(used)} of {len(done)} reps); ms per update (median), x {base}: median of per-rep ratios")
    print(f"| method | options | batches | ms/update | x {base} |")
    print("|---|---|---|---:|---:|")
    for v in variants:
        ms = statistics.median(r[v.label][0] for r in used) * 1e3
        ratio = statistics.median(r[v.label][0] / r[base][0] for r in used)
        options = " ".join(method_options(v.label, directions))
        print(f"| {v.label} | {options} | {v.args.direction_batching} | {ms:.1f} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
