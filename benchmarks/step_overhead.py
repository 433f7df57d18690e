"""Time one full training update of the stock multilingual task against multilingual_gradvac.

Same model, same data, same batches. For each model size, one run times, per update:

  stock            fairseq's translation_multi_simple_epoch: ONE forward/backward of the
                   mixed batch (FairseqTask.train_step on SampledMultiDataset's own
                   collation of the samples)
  sum              multilingual_gradvac --gradient-combiner sum: the same samples collated
                   one batch per direction, K forward/backward passes into the rows of the
                   [K, P] buffer, then model.all_reduce_grads() (the combination)
  pcgrad all_layer / gradvac all_layer   the same with PCGrad / GradVac per layer

Each update is what fairseq's Trainer.train_step does around task.train_step, in its
order: optimizer.zero_grad(), task.train_step(...), optimizer.all_reduce_grads(model)
(where multilingual_gradvac combines), optimizer.multiply_grads(1 / sample_size),
optimizer.clip_grad_norm(0) (the trainer computes the norm even without clipping) with
its finiteness check, and task.optimizer_step (a FairseqAdam step). The variants are
interleaved rep by rep in a shuffled order (machine noise hits them alike), after one
warm-up update each; the table gives the median ms/update and the median over reps of
the per-rep ratio variant / stock.

The corpus is generated here: 5 languages, K = 8 directions en<->{de,fr,cs,tr} of unequal
sizes, temperature sampling (T=5), one shared dictionary of the model's vocabulary size,
sentences of 12-36 words. Batches are fairseq's own length-bucketed batches
(SampledMultiDataset.batch_by_size with --max-tokens, multiple of 8 sentences), taken
among those holding all 8 directions.

  python benchmarks/step_overhead.py                   # small and transformer-base, CPU
  python benchmarks/step_overhead.py --profile         # plus where the extra time goes
  python benchmarks/step_overhead.py --quick           # tiny model, a few reps (smoke run)
  python benchmarks/step_overhead.py --device cuda     # on a GPU
"""
import argparse
import contextlib
import datetime
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

LANGS = ("en", "de", "fr", "cs", "tr")
PAIR_ROWS = {"de": 1200, "fr": 900, "cs": 600, "tr": 300}  # training rows of en-xx
MIN_LEN, MAX_LEN = 12, 36

SIZES = {
    # d=256, 3+3 layers (vocabulary as benchmarks/combine.py's small layout)
    "small": dict(dim=256, ffn=1024, heads=4, layers=3, vocab=8000),
    # transformer base: 6+6 layers, d=512, ffn 2048, 8 heads, shared 32k vocabulary
    "base": dict(dim=512, ffn=2048, heads=8, layers=6, vocab=32000),
    # --quick only
    "tiny": dict(dim=64, ffn=128, heads=2, layers=2, vocab=1000),
}

VARIANTS = (  # (label, task, combiner, granularity)
    ("stock", "translation_multi_simple_epoch", None, None),
    ("sum", "multilingual_gradvac", "sum", "all_layer"),
    ("pcgrad all_layer", "multilingual_gradvac", "pcgrad", "all_layer"),
    ("gradvac all_layer", "multilingual_gradvac", "gradvac", "all_layer"),
)


# --------------------------------------------------------------------------- corpus
def build_corpus(root, vocab, seed=0):
    """Raw text + one shared dictionary of ``vocab`` entries + fairseq-preprocess."""
    rng = random.Random(seed)
    raw, binary = os.path.join(root, "raw"), os.path.join(root, "bin")
    os.makedirs(raw, exist_ok=True)
    # 4 special symbols and one language token per language come on top of the words
    per_lang = (vocab - 4 - len(LANGS)) // len(LANGS)
    dict_path = os.path.join(root, "dict.txt")
    with open(dict_path, "w") as f:
        for lang in LANGS:
            for c in range(per_lang):
                f.write(f"{lang}{c} 1\n")
    procs = []
    for x, n in PAIR_ROWS.items():
        rows = [[rng.randrange(per_lang) for _ in range(rng.randint(MIN_LEN, MAX_LEN))] for _ in range(n)]
        for lang in ("en", x):
            with open(os.path.join(raw, f"train.en-{x}.{lang}"), "w") as f:
                f.write("\n".join(" ".join(f"{lang}{c}" for c in row) for row in rows) + "\n")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "fairseq_cli.preprocess", "--workers", "1",
             "--source-lang", "en", "--target-lang", x,
             "--trainpref", os.path.join(raw, f"train.en-{x}"),
             "--srcdict", dict_path, "--tgtdict", dict_path, "--destdir", binary],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        ))
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"fairseq preprocess failed:\n{err.decode()[-3000:]}")
    lang_dict = os.path.join(root, "langs.txt")
    with open(lang_dict, "w") as f:
        f.write("\n".join(LANGS) + "\n")
    directions = [f"en-{x}" for x in PAIR_ROWS] + [f"{x}-en" for x in PAIR_ROWS]
    return {"bin": binary, "lang_dict": lang_dict, "directions": directions}


# --------------------------------------------------------------------------- machine noise
class ForeignLoad:
    """CPU time other processes (and the hypervisor's steal) took while we ran, Linux only.

    foreign = (busy jiffies of the whole machine) - (our process's jiffies), as a fraction
    of the machine's capacity over the interval. On a 2-core machine a second busy
    process does not just take its share: torch's OpenMP threads wait at every parallel
    region for a descheduled partner thread, so a variant with more (smaller) ops slows
    down far more than one with fewer. Updates that ran beside such load are flagged.
    """

    def __init__(self):
        self.ok = os.path.exists("/proc/stat") and os.path.exists("/proc/self/stat")
        self.hz = os.sysconf("SC_CLK_TCK") if self.ok else 100
        self.ncpu = os.cpu_count() or 1

    def _read(self):
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        busy = sum(v) - v[3] - v[4]  # all but idle and iowait (steal counts as busy)
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        own = int(fields[11]) + int(fields[12])  # utime + stime
        return busy, own, time.perf_counter()

    def start(self):
        return self._read() if self.ok else None

    def stop(self, mark):
        """Foreign load over the interval, as a fraction of the whole machine (0..1)."""
        if mark is None:
            return float("nan")
        busy, own, t = self._read()
        capacity = (t - mark[2]) * self.hz * self.ncpu
        return max(0.0, ((busy - mark[0]) - (own - mark[1])) / max(capacity, 1e-9))


FOREIGN = ForeignLoad()

# What a "ms" is: wall-clock time (default), or --clock cpu: this process's CPU time
# (all threads). With --threads 1 the CPU time does not grow when other processes take
# the cores, so it compares the variants on a busy machine; with more threads it counts
# OpenMP's spin-waiting too.
CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter


# --------------------------------------------------------------------------- fairseq objects
def model_argv(corpus, shape, task, max_tokens):
    """fairseq-train's data, model, criterion and optimizer options of a benchmark run."""
    return [
        corpus["bin"], "--user-dir", os.path.join(ROOT, "fairseq_gradvac"), "--task", task,
        "--lang-dict", corpus["lang_dict"], "--lang-pairs", ",".join(corpus["directions"]),
        "--encoder-langtok", "src", "--decoder-langtok",
        "--sampling-method", "temperature", "--sampling-temperature", "5",
        "--arch", "transformer", "--share-all-embeddings",
        "--encoder-layers", str(shape["layers"]), "--decoder-layers", str(shape["layers"]),
        "--encoder-embed-dim", str(shape["dim"]), "--decoder-embed-dim", str(shape["dim"]),
        "--encoder-ffn-embed-dim", str(shape["ffn"]), "--decoder-ffn-embed-dim", str(shape["ffn"]),
        "--encoder-attention-heads", str(shape["heads"]), "--decoder-attention-heads", str(shape["heads"]),
        "--dropout", "0.1",
        "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
        "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "5e-4",
        "--max-tokens", str(max_tokens), "--seed", "1",
    ]


FP16 = False  # --fp16: every variant in fairseq's mixed precision (a CUDA device)
MALLOC_KEEP_MB = None  # --malloc-keep-mb: glibc's thresholds, set once for the process in main()


def fairseq_args(corpus, shape, task, combiner, granularity, max_tokens, batching="split"):
    from fairseq import options

    argv = model_argv(corpus, shape, task, max_tokens) + (["--fp16"] if FP16 else [])
    if combiner is not None:
        argv += ["--gradient-combiner", combiner, "--combine-granularity", granularity,
                 "--direction-batching", batching]
        # (None: the task's own default, for the scripts that import this one's Variant)
        argv += ["--malloc-keep-mb", str(MALLOC_KEEP_MB)] if MALLOC_KEEP_MB is not None else []
    return options.parse_args_and_arch(options.get_training_parser(), argv)


class Variant:
    def __init__(self, label, corpus, shape, task_name, combiner, granularity, max_tokens, device,
                 batching="split"):
        self._build(label, fairseq_args(corpus, shape, task_name, combiner, granularity, max_tokens, batching), device)

    @classmethod
    def from_argv(cls, label, argv, device):
        """A variant from fairseq-train's own options (a recipe's configs/*.args)."""
        from fairseq import options

        variant = cls.__new__(cls)
        variant._build(label, options.parse_args_and_arch(options.get_training_parser(), argv), device)
        return variant

    def _build(self, label, args, device):
        from fairseq import optim, tasks

        self.label = label
        self.args = args
        self.task = tasks.setup_task(self.args)
        torch.manual_seed(1)  # every variant starts from the same weights
        self.model = self.task.build_model(self.args).to(device)
        self.criterion = self.task.build_criterion(self.args).to(device)
        if FP16:  # as fairseq's Trainer does it: fp16 model, fp32 master weights
            self.model = self.model.half()
        params = [p for p in self.model.parameters() if p.requires_grad]
        if FP16:
            from fairseq.dataclass.utils import convert_namespace_to_omegaconf

            self.optimizer = optim.FP16Optimizer.build_optimizer(convert_namespace_to_omegaconf(self.args), params)
        else:
            self.optimizer = optim.build_optimizer(self.args, params)
        # bench() gives the plugin's task the batch split per direction, stock the mixed one
        self.split = args.task != "translation_multi_simple_epoch"
        self.updates = 0

    def update(self, batch, sync):
        """One update as fairseq's Trainer.train_step does it; returns (seconds, foreign load).

        ``self.last_sys``: the kernel time of the update (mostly page faults of fresh
        allocations), from getrusage.
        """
        sync()
        sys0 = resource.getrusage(resource.RUSAGE_SELF).ru_stime
        mark = FOREIGN.start()
        start = clock()
        self.model.train()
        self.criterion.train()
        self.optimizer.zero_grad()
        _, sample_size, _ = self.task.train_step(
            batch, self.model, self.criterion, self.optimizer, self.updates
        )
        self.optimizer.all_reduce_grads(self.model)  # multilingual_gradvac combines here
        sample_size = sample_size.float() if torch.is_tensor(sample_size) else float(sample_size)
        self.optimizer.multiply_grads(1.0 / (sample_size or 1.0))
        grad_norm = self.optimizer.clip_grad_norm(0.0)
        if not torch.isfinite(grad_norm).all():
            raise FloatingPointError("gradients are Nan/Inf")
        self.task.optimizer_step(self.optimizer, model=self.model, update_num=self.updates)
        sync()
        seconds = clock() - start
        self.last_sys = resource.getrusage(resource.RUSAGE_SELF).ru_stime - sys0
        self.updates += 1
        return seconds, FOREIGN.stop(mark)


def make_batches(task, n, max_tokens, device, seed=0):
    """n fairseq batches holding all directions: (mixed batch, OrderedDict direction -> batch)."""
    from fairseq import utils
    from fairseq.data.multilingual.sampled_multi_dataset import SampledMultiDataset

    task.load_dataset("train")
    dataset = task.datasets["train"]
    indices = dataset.ordered_indices()
    batches = dataset.batch_by_size(indices, max_tokens=max_tokens, required_batch_size_multiple=8)
    k = len(dataset.datasets)
    full = []
    for b in batches:
        samples = [dataset[int(i)] for i in b]
        if len({ds for ds, _ in samples}) == k and len(b) * max(dataset.num_tokens(int(i)) for i in b) > 0.8 * max_tokens:
            full.append(samples)
    if not full:
        raise RuntimeError("no batch holds every direction: raise --max-tokens")
    random.Random(seed).shuffle(full)
    move = utils.move_to_cuda if device.type == "cuda" else (lambda x: x)
    out = []
    for samples in full[:n]:
        mixed = SampledMultiDataset.collater(dataset, samples)  # fairseq's own mixed batch
        split = dataset.collater(samples)  # multilingual_gradvac's: one batch per direction
        out.append((move(mixed), move(split)))
    return out


# --------------------------------------------------------------------------- timing
def apply_timing_options(args):
    """--max-reps (3 x --reps unless given), --threads, --clock and --quiet's default, as the
    benchmarks that import this one's Variant take them."""
    global clock
    args.max_reps = args.max_reps or 3 * args.reps
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = CLOCK[args.clock]
    if args.quiet is None:
        args.quiet = 1.0 if args.clock == "cpu" else 0.05


def quiet_reps(run_rep, want, max_reps, threshold, label="rep", kernel_share=False):
    """Run reps until ``want`` of them ran beside at most ``threshold`` foreign load.

    run_rep(i) -> {name: (seconds, foreign, ...)}, with ``kernel_share`` (seconds, foreign,
    the kernel's share of the seconds). Returns (all reps, quiet reps).
    """
    done, quiet = [], []
    while len(quiet) < want and len(done) < max_reps:
        rep = run_rep(len(done))
        done.append(rep)
        foreign = max(r[1] for r in rep.values())
        ok = not foreign > threshold  # NaN (no /proc) counts as quiet
        if ok:
            quiet.append(rep)
        print(f"  {label} {len(done)}: " + ", ".join(f"{k} {r[0] * 1e3:.0f}" for k, r in rep.items())
              + f" ms; foreign load {foreign:.0%}" + ("" if ok else " (noisy, not counted)")
              + (f"; kernel share {', '.join(f'{r[2]:.0%}' for r in rep.values())}" if kernel_share else ""),
              flush=True)
    return done, quiet


def bench(size, shape, corpus, args, device, sync):
    chosen = [v for v in VARIANTS if v[0] == "stock" or v[0] in args.variants]
    variants = [Variant(label, corpus, shape, t, c, g, args.max_tokens, device) for label, t, c, g in chosen]
    nparams = sum(p.numel() for p in variants[0].model.parameters())
    batches = make_batches(variants[-1].task, args.batches, args.max_tokens, device)
    mixed0, split0 = batches[0]
    print(
        f"\n[{size}] d={shape['dim']}, {shape['layers']}+{shape['layers']} layers, ffn {shape['ffn']}, "
        f"{shape['heads']} heads, vocab {len(variants[0].task.source_dictionary)}, {nparams / 1e6:.1f}M "
        f"parameters; {len(batches)} batches of ~{mixed0['ntokens']} target tokens, "
        f"{mixed0['nsentences']} sentences, K={len(split0)} directions "
        f"({', '.join(str(b['nsentences']) for b in split0.values())} sentences)",
        flush=True,
    )
    for v in variants:  # warm-up: buffers, allocator, first-call costs
        v.update(batches[0][1] if v.split else batches[0][0], sync)
    rng = random.Random(1)

    def run_rep(i):
        mixed, split = batches[i % len(batches)]
        order = list(variants)
        rng.shuffle(order)  # interleaved, in a fresh order every rep
        t = {v.label: v.update(split if v.split else mixed, sync) + (v.last_sys,) for v in order}
        return {v.label: t[v.label] for v in variants}

    done, quiet = quiet_reps(run_rep, args.reps, args.max_reps, args.quiet)
    used = quiet if len(quiet) >= min(3, args.reps) else done
    note = (f"{len(used)} quiet reps of {len(done)}" if used is quiet
            else f"all {len(done)} reps: only {len(quiet)} were quiet, the medians include noisy ones")
    rows = []
    for v in variants:
        ms = statistics.median(rep[v.label][0] for rep in used) * 1e3
        ratio = statistics.median(rep[v.label][0] / rep["stock"][0] for rep in used)
        kernel = statistics.median(rep[v.label][2] for rep in used) * 1e3
        rows.append((v.label, ms, ratio, kernel))
    return rows, note, variants, batches


def print_table(size, rows, note):
    print(f"\n{size} ({note}):")
    print(f"  {'variant':<20} {'ms/update (median)':>19} {'ratio vs stock':>15} {'kernel ms':>10}")
    for label, ms, ratio, kernel in rows:
        print(f"  {label:<20} {ms:>19.1f} {ratio:>14.3f}x {kernel:>10.0f}")
    print("  (ratio: median of the per-rep ratios; kernel: system CPU time of the update, "
          "mostly page faults of fresh allocations)")


# --------------------------------------------------------------------------- many directions
def full_batches(task, max_tokens, device, n, seed=0):
    """n of fairseq's batches of ``task`` filled to at least 80% of --max-tokens, collated
    as the task trains on them (mixed, or one batch per direction); and the share of real
    target tokens among the padded ones over all of the epoch's batches (a direction's
    batches are length-sorted within that direction alone: fewer rows, more padding)."""
    from fairseq import utils
    from fairseq.data.multilingual.sampled_multi_dataset import SampledMultiDataset

    task.load_dataset("train")
    dataset = task.datasets["train"]
    batches = dataset.batch_by_size(dataset.ordered_indices(), max_tokens=max_tokens, required_batch_size_multiple=8)
    full = [b for b in batches if len(b) * max(dataset.num_tokens(int(i)) for i in b) > 0.8 * max_tokens]
    target = dataset.sizes[:, 1]
    fill = sum(int(target[b].sum()) for b in batches) / sum(len(b) * int(target[b].max()) for b in batches)
    random.Random(seed).shuffle(full)
    move = utils.move_to_cuda if device.type == "cuda" else (lambda x: x)
    collate = SampledMultiDataset.collater if task.__class__.__name__ == "TranslationMultiSimpleEpochTask" else type(dataset).collater
    return [move(collate(dataset, [dataset[int(i)] for i in b])) for b in full[:n]], fill


def bench_directions(k, shape, args, device, sync):
    """Time per target token at K directions: stock (one mixed batch), split (the same batch,
    one pass per direction) and single (a batch of one direction), all GradVac all_layer,
    each update one batch of up to --max-tokens."""
    from fairseq_gradvac.data import synthetic_corpus

    root = os.path.join(args.workdir_path, f"k{k}-vocab{shape['vocab']}")
    corpus = synthetic_corpus.build(root, directions=k, rows=args.rows, min_rows=args.rows // 10, min_len=12,
                                    max_len=36, vocab=shape["vocab"])
    variants = [
        Variant("stock", corpus, shape, "translation_multi_simple_epoch", None, None, args.max_tokens, device),
        Variant("split", corpus, shape, "multilingual_gradvac", "gradvac", "all_layer", args.max_tokens, device),
        Variant("single", corpus, shape, "multilingual_gradvac", "gradvac", "all_layer", args.max_tokens, device,
                batching="single"),
    ]
    batches, fill = {}, {}
    for v in variants:
        batches[v.label], fill[v.label] = full_batches(v.task, args.max_tokens, device, args.batches)
    per_batch = statistics.mean(len(b) for b in batches["split"])
    single_tokens = statistics.mean(b["ntokens"] for batch in batches["single"] for b in batch.values())
    print(f"\nK={k}: {len(batches['stock'])} batches per variant; target tokens per batch: stock/split "
          f"{statistics.mean(b['ntokens'] for b in batches['stock']):.0f}, single {single_tokens:.0f}; real target "
          f"tokens per padded one over an epoch's batches: stock {fill['stock']:.4f}, single {fill['single']:.4f} "
          f"({args.rows} to {args.rows // 10} training rows per direction); a split "
          f"batch holds {per_batch:.1f} directions on average", flush=True)
    for v in variants:
        v.update(batches[v.label][0], sync)  # warm-up
    rng = random.Random(1)

    stock, single = variants[0], variants[2]
    # "same batch": stock's update on single's own one-direction batch (a plain fairseq
    # sample): single / same batch is what the plugin adds to a step, with the batch's
    # lengths and padding, which differ from a mixed batch's, taken out.
    runs = [(v.label, v, lambda i, v=v: batches[v.label][i % len(batches[v.label])]) for v in variants]
    runs.append(("same batch", stock, lambda i: _only(batches["single"][i % len(batches["single"])])))
    labels = [label for label, _, _ in runs]

    def run_rep(i):
        order = list(runs)
        rng.shuffle(order)
        out = {}
        for label, v, batch_of in order:
            batch = batch_of(i)
            tokens = batch["ntokens"] if "net_input" in batch else sum(b["ntokens"] for b in batch.values())
            seconds, foreign = v.update(batch, sync)
            # (printed as ms per 1,000 tokens, with the kernel's share: page faults, mostly)
            out[label] = (seconds * 1000 / tokens, foreign, v.last_sys / seconds)
        return {label: out[label] for label in labels}

    done, quiet = quiet_reps(run_rep, args.reps, args.max_reps, args.quiet, label=f"K={k} per 1,000 tokens, rep",
                               kernel_share=True)
    used = quiet if len(quiet) >= min(3, args.reps) else done
    rows = [(label, statistics.median(r[label][0] for r in used) * 1e3,
             statistics.median(r[label][0] / r["stock"][0] for r in used)) for label in labels]
    rows.append(("single x same batch", None, statistics.median(r["single"][0] / r["same batch"][0] for r in used)))
    if args.profile:
        profile_single(k, stock, single, batches["single"], args, sync)
    return rows, len(used), len(done)


def _only(batch):
    """The one direction's batch of a single-direction batch {direction: batch}."""
    (b,) = batch.values()
    return b


# --------------------------------------------------------------------------- profile
@contextlib.contextmanager
def _timed(cls_or_module, name, bucket, sync, key=None):
    """Patch cls_or_module.name with a wrapper adding its time to bucket[key or name]."""
    orig = getattr(cls_or_module, name)
    own = name in vars(cls_or_module)  # False for an instance's (bound) method

    def wrapper(*a, **kw):
        sync()
        t0 = clock()
        try:
            return orig(*a, **kw)
        finally:
            sync()
            bucket[key or name] += clock() - t0

    setattr(cls_or_module, name, wrapper)
    try:
        yield
    finally:
        if own:
            setattr(cls_or_module, name, orig)
        else:
            delattr(cls_or_module, name)


def _phases(v, batch, sync):
    """One update of ``v`` with its phases timed one by one: ({phase: seconds}, foreign load)."""
    from fairseq.tasks import FairseqTask

    import fairseq_gradvac.combiners.gradvac as gv
    from fairseq_gradvac.combiners.groups import ParameterGroups
    from fairseq_gradvac.gradients.direction_gradients import DirectionGradients

    bucket = defaultdict(float)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_timed(FairseqTask, "train_step", bucket, sync))
        stack.enter_context(_timed(type(v.task), "train_step", bucket, sync, key="task_train_step"))
        stack.enter_context(_timed(DirectionGradients, "select", bucket, sync))
        stack.enter_context(_timed(ParameterGroups, "gram", bucket, sync))
        stack.enter_context(_timed(ParameterGroups, "weighted_sum", bucket, sync))
        stack.enter_context(_timed(gv, "vaccinate", bucket, sync))
        opt = v.optimizer
        for name in ("zero_grad", "all_reduce_grads", "multiply_grads", "clip_grad_norm", "step"):
            stack.enter_context(_timed(opt, name, bucket, sync))  # instance attributes
        bucket["total"], foreign = v.update(batch, sync)
    return bucket, foreign


def _op_diff(a_variant, a_batch, b_variant, b_batch, args, sync, title):
    """torch.profiler: self CPU time per op of one update each (retried until both ran
    quietly), printed by what b spends beyond a."""
    from torch.profiler import ProfilerActivity, profile as tprofile

    def op_table(v, batch):
        with tprofile(activities=[ProfilerActivity.CPU]) as prof:
            _, foreign = v.update(batch, sync)
        return {e.key: (e.self_cpu_time_total / 1e3, e.count) for e in prof.key_averages()}, foreign

    for attempt in range(args.max_reps):
        (a, fa), (b, fb) = op_table(a_variant, a_batch), op_table(b_variant, b_batch)
        if not max(fa, fb) > args.quiet:
            break
    diff = sorted(((b.get(key, (0, 0))[0] - a.get(key, (0, 0))[0], key) for key in set(a) | set(b)), reverse=True)
    print(f"\n{title}: torch.profiler, self CPU ms of one update each (foreign load {max(fa, fb):.0%}), "
          "ops by extra time (ours - stock)")
    print(f"  {'op':<48} {'stock ms':>9} {'calls':>6} {'ours ms':>9} {'calls':>6} {'extra':>8}")

    def row(d, key):
        (sa, ca), (sb, cb) = a.get(key, (0, 0)), b.get(key, (0, 0))
        print(f"  {key[:48]:<48} {sa:>9.1f} {ca:>6} {sb:>9.1f} {cb:>6} {d:>+8.1f}")

    for d, key in diff[: args.profile_ops]:
        row(d, key)
    print("  ... ops where ours took less time:")
    for d, key in diff[::-1][: max(3, args.profile_ops // 3)][::-1]:
        row(d, key)
    print(f"  {'(all ops)':<48} {sum(x for x, _ in a.values()):>9.1f} {sum(c for _, c in a.values()):>6} "
          f"{sum(x for x, _ in b.values()):>9.1f} {sum(c for _, c in b.values()):>6}")


def profile_single(k, stock, single, batches, args, sync):
    """Where a single-direction update spends more than stock's update on the same batch."""
    buckets = {"stock": [], "single": []}

    def run_rep(i):
        batch = batches[i % len(batches)]
        out = {}
        for name, v, b in [("stock", stock, _only(batch)), ("single", single, batch)][:: 1 if i % 2 else -1]:
            bucket, foreign = _phases(v, b, sync)
            buckets[name].append(bucket)
            out[name] = (bucket["total"], foreign)
        return out

    print(f"\nK={k}: profile of single vs stock on the same one-direction batch, phases timed one by one")
    done, quiet = quiet_reps(run_rep, args.profile_reps, args.max_reps, args.quiet, "profile rep")
    keep = [i for i, rep in enumerate(done) if any(rep is q for q in quiet)] or list(range(len(done)))
    st, ours = ({key: statistics.median(bs[i].get(key, 0.0) for i in keep) * 1e3 for key in set().union(*bs)}
                for bs in (buckets["stock"], buckets["single"]))
    g = lambda d, key: d.get(key, 0.0)  # noqa: E731
    rest = g(ours, "all_reduce_grads") - g(ours, "gram") - g(ours, "vaccinate") - g(ours, "weighted_sum")
    lines = [
        ("forward+backward (FairseqTask.train_step)", g(st, "train_step"), g(ours, "train_step") - g(st, "train_step")),
        ("task.train_step around it (rows, logs)", None,
         g(ours, "task_train_step") - g(ours, "train_step") - g(ours, "select")),
        ("selecting the direction's row (DirectionGradients.select)", None, g(ours, "select")),
        ("Gram, Algorithm 1, weighted sum", None, g(ours, "gram") + g(ours, "vaccinate") + g(ours, "weighted_sum")),
        ("rest of all_reduce_grads (the update vector, EMA, report)", g(st, "all_reduce_grads"),
         rest - g(st, "all_reduce_grads")),
    ] + [(name, g(st, name), g(ours, name) - g(st, name))
         for name in ("zero_grad", "multiply_grads", "clip_grad_norm", "step", "total")]
    print(f"  {'phase (median ms over ' + str(len(keep)) + ' updates)':<64} {'stock ms':>9} {'extra ms':>9}")
    for name, ms, extra in lines:
        print(f"  {name:<64} {'' if ms is None else f'{ms:>9.1f}':>9} {extra:>+9.1f}")
    _op_diff(stock, _only(batches[0]), single, batches[0], args, sync, f"K={k}")


def profile(size, variants, batches, args, sync):
    """Phase breakdown of stock vs gradvac all_layer, plus an op-level torch.profiler diff."""
    from fairseq.tasks import FairseqTask

    stock = next(v for v in variants if v.label == "stock")
    ours = next(v for v in variants if v.label == "gradvac all_layer")

    def split_control(batch):
        """The K per-direction forward/backward passes alone, each into fresh .grad tensors."""
        sync()
        mark = FOREIGN.start()
        t0 = clock()
        for b in batch.values():
            stock.optimizer.zero_grad()
            FairseqTask.train_step(stock.task, b, stock.model, stock.criterion, stock.optimizer, 0)
        sync()
        seconds = clock() - t0
        foreign = FOREIGN.stop(mark)
        stock.optimizer.zero_grad()
        return {"train_step": seconds}, foreign

    buckets = {}

    def run_rep(i):
        mixed, split = batches[i % len(batches)]
        out = {}
        for name, fn in [("stock", lambda: _phases(stock, mixed, sync)), ("ours", lambda: _phases(ours, split, sync)),
                         ("control", lambda: split_control(split))][:: 1 if i % 2 else -1]:
            bucket, foreign = fn()
            buckets.setdefault(name, []).append(bucket)
            out[name] = (sum(bucket.values()) if name == "control" else bucket["total"], foreign)
        return out

    print(f"\n{size}: profile, phases timed one by one (stock / gradvac all_layer / split control)")
    done, quiet = quiet_reps(run_rep, args.profile_reps, args.max_reps, args.quiet, "profile rep")
    keep = [i for i, rep in enumerate(done) if any(rep is q for q in quiet)] or list(range(len(done)))
    med = {name: defaultdict(float) for name in buckets}
    for name, bs in buckets.items():
        for key in set().union(*bs):
            med[name][key] = statistics.median(bs[i].get(key, 0.0) for i in keep) * 1e3
    st, gvp, ctrl = med["stock"], med["ours"], med["control"]["train_step"]
    k = len(batches[0][1])
    rest = gvp["all_reduce_grads"] - gvp["gram"] - gvp["vaccinate"] - gvp["weighted_sum"]
    what = "wall clock" if clock is time.perf_counter else "process CPU time"
    print(f"\n{size}: where the time goes (median ms over {len(keep)} updates each, {what} per phase)")
    lines = [
        ("forward+backward, stock: 1 mixed batch", st["train_step"], None),
        (f"forward+backward, the {k} direction batches, fresh .grad each (control)", ctrl, ctrl - st["train_step"]),
        ("forward+backward into the [K,P] rows (ours)", gvp["train_step"], gvp["train_step"] - ctrl),
        ("zeroing each row at first use (DirectionGradients.select)", gvp["select"], gvp["select"]),
        ("Gram matrices (ParameterGroups.gram)", gvp["gram"], gvp["gram"]),
        ("Algorithm 1 on the Gram matrices (vaccinate)", gvp["vaccinate"], gvp["vaccinate"]),
        ("weighted sum (ParameterGroups.weighted_sum)", gvp["weighted_sum"], gvp["weighted_sum"]),
        ("rest of all_reduce_grads (visit order, EMA, report)", rest, rest),
        ("zero_grad", st["zero_grad"], gvp["zero_grad"] - st["zero_grad"]),
        ("multiply_grads", st["multiply_grads"], gvp["multiply_grads"] - st["multiply_grads"]),
        ("clip_grad_norm", st["clip_grad_norm"], gvp["clip_grad_norm"] - st["clip_grad_norm"]),
        ("Adam step", st["step"], gvp["step"] - st["step"]),
        ("whole update", st["total"], gvp["total"] - st["total"]),
    ]
    print(f"  {'phase':<72} {'stock ms':>9} {'extra ms':>9}")
    for name, ms, extra in lines:
        print(f"  {name:<72} {ms:>9.1f} {'' if extra is None else f'{extra:>+9.1f}'}")
    print("  (extra: ours minus stock; for the control, what splitting the batch by direction costs; "
          "for ours' forward+backward, what accumulating into the rows costs over the control. "
          "The first column is the stock's time, or ours' where the stock has no such phase.)")

    mixed, split = batches[0]
    _op_diff(stock, mixed, ours, split, args, sync, size)


# --------------------------------------------------------------------------- main
def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, small batches, 3 reps (smoke run)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--sizes", default=None, help="comma-separated: small,base (default both)")
    parser.add_argument("--reps", type=int, default=None,
                        help="quiet reps (one timed update per variant) to collect (default: small 15, base 7)")
    parser.add_argument("--max-reps", type=int, default=None, help="give up collecting quiet reps after this many (default 3 x --reps)")
    parser.add_argument("--quiet", type=float, default=None,
                        help="a rep counts if other processes took at most this share of the machine's CPU "
                             "while it ran (default 0.05; 1, i.e. every rep, with --clock cpu)")
    parser.add_argument("--clock", choices=sorted(CLOCK), default="wall",
                        help="wall-clock time, or this process's CPU time (robust to other processes "
                             "with --threads 1)")
    parser.add_argument("--variants", default="sum,pcgrad,gradvac",
                        help="comma-separated variants to time besides stock: sum, pcgrad, gradvac "
                             "(fewer variants: less memory)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    parser.add_argument("--batches", type=int, default=4, help="distinct batches cycled over the reps")
    parser.add_argument("--max-tokens", type=int, default=None, help="batch size (default 4096; --quick 1024)")
    parser.add_argument("--rows", type=int, default=None,
                        help="--directions: training rows of the largest direction, the smallest a tenth "
                             "(default 20000; --quick 2000)")
    parser.add_argument("--profile", action="store_true", help="also break the time down (phases, ops)")
    parser.add_argument("--profile-reps", type=int, default=3, help="quiet updates per phase breakdown")
    parser.add_argument("--profile-ops", type=int, default=16, help="ops listed in the torch.profiler diff")
    parser.add_argument("--workdir", default=None, help="keep the generated corpora here (default: a temp dir)")
    parser.add_argument("--fp16", action="store_true", help="every variant in fp16 (fairseq's --fp16; CUDA)")
    from fairseq_gradvac.tasks import allocator

    parser.add_argument("--malloc-keep-mb", type=int, default=allocator.DEFAULT_MB,
                        help="glibc's thresholds for the whole process, every variant alike, as the "
                             "plugin's option of that name sets them (0: glibc's own)")
    parser.add_argument("--directions", default=None, metavar="K,K,...",
                        help="instead: time per target token of stock, split and single-direction "
                             "batches at each K (synthetic corpora; the first of --sizes)")
    args = parser.parse_args()
    names = {v[0].split()[0]: v[0] for v in VARIANTS[1:]}
    unknown = {v.strip() for v in args.variants.split(",")} - set(names)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {sorted(names)}")
    args.variants = [names[v.strip()] for v in args.variants.split(",")]

    device = torch.device(args.device)
    if args.fp16 and device.type != "cuda":
        parser.error("--fp16 needs --device cuda (fairseq's FP16Optimizer keeps its fp32 copy on a GPU)")
    global FP16
    FP16 = args.fp16
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sizes = ["tiny"] if args.quick else (args.sizes or "small,base").split(",")
    args.max_tokens = args.max_tokens or (1024 if args.quick else 4096)
    args.rows = args.rows or (2000 if args.quick else 20000)
    default_reps = {"tiny": 3, "small": 15, "base": 7}
    if args.threads:
        torch.set_num_threads(args.threads)
    global clock
    clock = CLOCK[args.clock]
    if args.quiet is None:
        args.quiet = 1.0 if args.clock == "cpu" else 0.05

    import fairseq  # noqa: F401
    import logging

    logging.disable(logging.WARNING)  # fairseq's info logging (dataset sizes, combiner)
    import fairseq_gradvac  # noqa: F401  (registers the task)

    print(f"step_overhead: {datetime.date.today()}, torch {torch.__version__}, fairseq {fairseq.__version__}, "
          f"python {platform.python_version()}, device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else
             f", {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads")
          + f"; times: {'wall clock' if args.clock == 'wall' else 'process CPU time'}")
    print("command: python " + " ".join(sys.argv))
    global MALLOC_KEEP_MB
    MALLOC_KEEP_MB = args.malloc_keep_mb
    print(allocator.keep_freed_memory(args.malloc_keep_mb) + "; the whole process: every variant")
    workdir = args.workdir or tempfile.mkdtemp(prefix="step_overhead_")
    if args.directions:
        args.workdir_path = workdir
        size = sizes[0]
        reps = args.reps or default_reps[size]
        run_args = argparse.Namespace(**{**vars(args), "reps": reps, "max_reps": args.max_reps or 3 * reps})
        shape = SIZES[size]
        try:
            table = [(k, bench_directions(k, shape, run_args, device, sync)) for k in map(int, args.directions.split(","))]
        finally:
            if args.workdir is None:
                shutil.rmtree(workdir, ignore_errors=True)
        print(f"\nsummary: {size} (d={shape['dim']}, {shape['layers']}+{shape['layers']} layers, vocabulary "
              f"{shape['vocab']}), --max-tokens {args.max_tokens}, GradVac all_layer; microseconds per "
              "target token (median), ratio to stock per token (median of per-rep ratios); same batch: "
              "stock's update on single's one-direction batch, and single x same batch: what the plugin "
              "adds to an update on the same batch")
        print("| K | stock us/token | split us/token | x stock | single us/token | x stock | "
              "same batch us/token | single x same batch | reps |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for k, (rows, used, done) in table:
            r = {label: (us, ratio) for label, us, ratio in rows}
            print(f"| {k} | {r['stock'][0]:.1f} | {r['split'][0]:.1f} | {r['split'][1]:.3f} | "
                  f"{r['single'][0]:.1f} | {r['single'][1]:.3f} | {r['same batch'][0]:.1f} | "
                  f"{r['single x same batch'][1]:.3f} | {used} of {done} |")
        return
    results = {}
    try:
        for size in sizes:
            shape = SIZES[size]
            root = os.path.join(workdir, f"vocab{shape['vocab']}")
            if not os.path.exists(os.path.join(root, "langs.txt")):
                build_corpus(root, shape["vocab"])
            directions = [f"en-{x}" for x in PAIR_ROWS] + [f"{x}-en" for x in PAIR_ROWS]
            corpus = {"bin": os.path.join(root, "bin"), "lang_dict": os.path.join(root, "langs.txt"),
                      "directions": directions}
            reps = args.reps or default_reps[size]
            run_args = argparse.Namespace(**{**vars(args), "reps": reps, "max_reps": args.max_reps or 3 * reps})
            rows, note, variants, batches = bench(size, shape, corpus, run_args, device, sync)
            results[size] = rows, note
            print_table(size, rows, note)
            if args.profile and "gradvac all_layer" in args.variants:
                profile(size, variants, batches, run_args, sync)
            elif args.profile:
                print("--profile compares stock with gradvac all_layer: add gradvac to --variants")
            del variants, batches
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print("\nsummary (ms/update median, ratio vs stock):")
    for size, (rows, note) in results.items():
        print(f"  {size:<6} " + " | ".join(f"{label} {ms:.0f} ms {r:.3f}x" for label, ms, r, _ in rows) + f"  ({note})")


if __name__ == "__main__":
    main()
