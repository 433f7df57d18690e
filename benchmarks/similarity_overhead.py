"""What recording the gradient similarities (--similarity-interval N) costs per update.

One run, K = 8 directions, side by side (benchmarks/step_overhead.py's corpus, batches and
update, fairseq's order of operations), for each combiner in --combiners:

  off        the update without recording
  every      the same update recording at every update (N = 1): the Gram matrices of the
             recorded groups (all_layer + the 3 aggregates), joined to the update's one
             small all-reduce, and the similarity.csv rows written

The variants are interleaved rep by rep in a shuffled order, from the same weights. The
table gives the median ms/update and the median per-rep ratio every/off (the cost at
N = 1, measured directly). A 1% difference is below a shared machine's noise, so the cost
at N = 100 (--interval) comes from the recording's own work timed alone, many times, on
the last update's real rows (the Gram matrices of the recorded groups, the CSV rows, their
write): 1 + record / (N x off), since 1 update in N records.

  python benchmarks/similarity_overhead.py --sizes base     # K=8, transformer base, CPU
  python benchmarks/similarity_overhead.py --quick          # tiny model (smoke run)
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
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import step_overhead  # noqa: E402  (corpus, batches, fairseq's update)


def time_recording(variant, reps, sync):
    """Median ms of one recording's own work on ``variant``'s rows of its last update."""
    from fairseq_gradvac.tasks.csv_log import CsvLog
    from fairseq_gradvac.gradients.similarity import COLUMNS, SimilarityRecord

    grads = variant.task._grads
    rows = grads.buffer[:, : grads.groups.numel]
    log = CsvLog(os.path.join(variant.task.args.save_dir, "timed.csv"), COLUMNS)
    log.open(0)
    times = []
    for i in range(reps + 1):  # + a warm-up
        sync()
        start = time.perf_counter()
        gram = grads.similarity.gram(rows)
        record = SimilarityRecord(i + 1, grads.directions, grads.similarity.names, gram, [1] * len(grads.directions))
        log.write(record.update, record.rows())
        sync()
        times.append(time.perf_counter() - start)
    log.close()
    return statistics.median(times[1:]) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, 3 reps (smoke run)")
    parser.add_argument("--sizes", default="base", help="comma-separated: small,base [base]")
    parser.add_argument("--combiners", default="gradvac", help="comma-separated, e.g. sum,gradvac [gradvac]")
    parser.add_argument("--reps", type=int, default=None, help="timed updates per variant (default 3; --quick 2)")
    parser.add_argument("--interval", type=int, default=100, help="the N whose cost is reported [100]")
    parser.add_argument("--record-reps", type=int, default=20, help="timed recordings alone [20]")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--max-tokens", type=int, default=None, help="batch size (default 4096; --quick 1024)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sizes = ["tiny"] if args.quick else args.sizes.split(",")
    reps = args.reps or (2 if args.quick else 3)
    max_tokens = args.max_tokens or (1024 if args.quick else 4096)

    import logging

    import fairseq

    logging.disable(logging.WARNING)
    import fairseq_gradvac  # noqa: F401  (registers the task)

    print(f"similarity_overhead: {datetime.date.today()}, torch {torch.__version__}, fairseq "
          f"{fairseq.__version__}, python {platform.python_version()}, device {device}, "
          f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads")
    print("command: python " + " ".join(sys.argv))
    workdir = tempfile.mkdtemp(prefix="similarity_overhead_")
    summary = []
    try:
        for size in sizes:
            shape = step_overhead.SIZES[size]
            root = os.path.join(workdir, size)
            corpus = step_overhead.build_corpus(root, shape["vocab"])
            variants = []
            for combiner in args.combiners.split(","):
                for interval in (0, 1):
                    v = step_overhead.Variant(f"{combiner} {'every' if interval else 'off'}", corpus, shape,
                                              "multilingual_gradvac", combiner, "all_layer", max_tokens, device)
                    v.task.args.similarity_interval = interval
                    v.task.args.save_dir = os.path.join(root, v.label.replace(" ", "_"))
                    variants.append(v)
            batches = step_overhead.make_batches(variants[0].task, 4, max_tokens, device)
            nparams = sum(p.numel() for p in variants[0].model.parameters())
            print(f"\n[{size}] {nparams / 1e6:.1f}M parameters, K={len(batches[0][1])} directions, "
                  f"~{batches[0][0]['ntokens']} target tokens per batch", flush=True)
            for v in variants:  # warm-up
                v.update(batches[0][1], sync)
            rng = random.Random(1)
            times = {v.label: [] for v in variants}
            for i in range(reps):
                order = list(variants)
                rng.shuffle(order)
                for v in order:
                    times[v.label].append(v.update(batches[i % len(batches)][1], sync)[0])
                print(f"  rep {i + 1}: " + ", ".join(f"{k} {t[-1] * 1e3:.0f}" for k, t in times.items()) + " ms",
                      flush=True)
            for v in variants:
                if v.label.endswith("every"):
                    rows = os.path.join(v.task.args.save_dir, "similarity.csv")
                    assert sum(1 for _ in open(rows)) > 1, "nothing recorded"
            record_ms = time_recording(variants[-1], args.record_reps, sync)
            print(f"\n{size}: {'combiner':<10} {'off ms':>9} {'every ms':>9} {'N=1':>8} "
                  f"{'record ms':>9} {'N=' + str(args.interval):>8}")
            for combiner in args.combiners.split(","):
                off, on = times[f"{combiner} off"], times[f"{combiner} every"]
                ratio1 = statistics.median(b / a for a, b in zip(off, on))
                extra = record_ms / 1e3
                m_off = statistics.median(off)
                ratio_n = 1 + extra / (args.interval * m_off)
                print(f"{'':<{len(size) + 2}}{combiner:<10} {m_off * 1e3:>9.0f} {statistics.median(on) * 1e3:>9.0f} "
                      f"{ratio1:>7.3f}x {extra * 1e3:>9.1f} {ratio_n:>7.4f}x")
                summary.append(f"{size} {combiner}: N=1 {ratio1:.3f}x, N={args.interval} {ratio_n:.4f}x")
            del variants, batches
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\nsummary (recording cost per update vs off): " + "; ".join(summary))


if __name__ == "__main__":
    main()
