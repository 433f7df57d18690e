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


# --------------------------------------------------------------------------- fairseq objects
def fairseq_args(corpus, shape, task, combiner, granularity, max_tokens):
    from fairseq import options

    argv = [
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
    if combiner is not None:
        argv += ["--gradient-combiner", combiner, "--combine-granularity", granularity]
    return options.parse_args_and_arch(options.get_training_parser(), argv)


class Variant:
    def __init__(self, label, corpus, shape, task_name, combiner, granularity, max_tokens, device):
        from fairseq import optim, tasks

        self.label = label
        self.args = fairseq_args(corpus, shape, task_name, combiner, granularity, max_tokens)
        self.task = tasks.setup_task(self.args)
        torch.manual_seed(1)  # every variant starts from the same weights
        self.model = self.task.build_model(self.args).to(device)
        self.criterion = self.task.build_criterion(self.args).to(device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = optim.build_optimizer(self.args, params)
        self.split = combiner is not None  # takes one batch per direction
        self.updates = 0

    def update(self, batch, sync):
        """One update as fairseq's Trainer.train_step does it; returns seconds."""
        sync()
        start = time.perf_counter()
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
        self.updates += 1
        return time.perf_counter() - start


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
def bench(size, shape, corpus, args, device, sync):
    variants = [Variant(label, corpus, shape, t, c, g, args.max_tokens, device) for label, t, c, g in VARIANTS]
    nparams = sum(p.numel() for p in variants[0].model.parameters())
    batches = make_batches(variants[1].task, args.batches, args.max_tokens, device)
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
    times = defaultdict(list)
    ratios = defaultdict(list)
    rng = random.Random(1)
    for rep in range(args.reps):
        mixed, split = batches[rep % len(batches)]
        order = list(variants)
        rng.shuffle(order)
        t = {v.label: v.update(split if v.split else mixed, sync) for v in order}
        for label, s in t.items():
            times[label].append(s)
            ratios[label].append(s / t["stock"])
        print(f"  rep {rep + 1}/{args.reps}: " + ", ".join(f"{v.label} {t[v.label] * 1e3:.0f}" for v in variants), flush=True)
    rows = [(v.label, statistics.median(times[v.label]) * 1e3, statistics.median(ratios[v.label])) for v in variants]
    return rows, variants, batches, nparams


def print_table(size, rows):
    print(f"\n{size}: variant              ms/update (median)   ratio vs stock (median of per-rep ratios)")
    for label, ms, ratio in rows:
        print(f"  {label:<20} {ms:>12.1f}         {ratio:.3f}x")


# --------------------------------------------------------------------------- profile
@contextlib.contextmanager
def _timed(cls_or_module, name, bucket, sync):
    """Patch cls_or_module.name with a wrapper adding its wall time to bucket[name]."""
    orig = getattr(cls_or_module, name)
    own = name in vars(cls_or_module)  # False for an instance's (bound) method

    def wrapper(*a, **kw):
        sync()
        t0 = time.perf_counter()
        try:
            return orig(*a, **kw)
        finally:
            sync()
            bucket[name] += time.perf_counter() - t0

    setattr(cls_or_module, name, wrapper)
    try:
        yield
    finally:
        if own:
            setattr(cls_or_module, name, orig)
        else:
            delattr(cls_or_module, name)


def profile(size, variants, batches, reps, sync):
    """Phase breakdown of stock vs gradvac all_layer, plus an op-level torch.profiler diff."""
    from fairseq.tasks import FairseqTask

    import fairseq_gradvac.surgery.gradvac as gv
    from fairseq_gradvac.direction_gradients import DirectionGradients
    from fairseq_gradvac.surgery.groups import ParameterGroups

    stock = next(v for v in variants if v.label == "stock")
    ours = next(v for v in variants if v.label == "gradvac all_layer")
    phases = defaultdict(lambda: defaultdict(list))

    def one(v, batch):
        bucket = defaultdict(float)
        with contextlib.ExitStack() as stack:
            stack.enter_context(_timed(FairseqTask, "train_step", bucket, sync))
            stack.enter_context(_timed(DirectionGradients, "select", bucket, sync))
            stack.enter_context(_timed(ParameterGroups, "gram", bucket, sync))
            stack.enter_context(_timed(ParameterGroups, "weighted_sum", bucket, sync))
            stack.enter_context(_timed(gv, "vaccinate", bucket, sync))
            opt = v.optimizer
            for name in ("zero_grad", "all_reduce_grads", "multiply_grads", "clip_grad_norm", "step"):
                stack.enter_context(_timed(opt, name, bucket, sync))  # instance attributes
            bucket["total"] = v.update(batch, sync)
        return bucket

    def split_control(batch):
        """The K per-direction forward/backward passes alone: plain fresh .grad each time."""
        sync()
        t0 = time.perf_counter()
        for b in batch.values():
            stock.optimizer.zero_grad()
            FairseqTask.train_step(stock.task, b, stock.model, stock.criterion, stock.optimizer, 0)
        sync()
        stock.optimizer.zero_grad()
        return time.perf_counter() - t0

    for rep in range(reps):
        mixed, split = batches[rep % len(batches)]
        for v in ((stock, ours) if rep % 2 else (ours, stock)):
            for name, s in one(v, split if v.split else mixed).items():
                phases[v.label][name].append(s)
        phases["split control"]["train_step"].append(split_control(split))
    med = {lab: {n: statistics.median(s) * 1e3 for n, s in d.items()} for lab, d in phases.items()}
    st, gvp = med["stock"], med["gradvac all_layer"]
    ctrl = med["split control"]["train_step"]
    k = len(batches[0][1])
    print(f"\n{size}: where the time goes (median ms over {reps} updates each, wall clock per phase)")
    lines = [
        ("forward+backward, stock: 1 mixed batch", st["train_step"], None),
        (f"forward+backward, {k} direction batches, fresh .grad each (control)", ctrl, ctrl - st["train_step"]),
        (f"forward+backward into the [K,P] rows (ours)", gvp["train_step"], gvp["train_step"] - ctrl),
        ("zeroing rows at first use (DirectionGradients.select)", gvp.get("select", 0.0), gvp.get("select", 0.0)),
        ("Gram matrices (ParameterGroups.gram)", gvp.get("gram", 0.0), gvp.get("gram", 0.0)),
        ("Algorithm 1 on the Gram matrices (vaccinate)", gvp.get("vaccinate", 0.0), gvp.get("vaccinate", 0.0)),
        ("weighted sum (ParameterGroups.weighted_sum)", gvp.get("weighted_sum", 0.0), gvp.get("weighted_sum", 0.0)),
        ("rest of all_reduce_grads (order, EMA, report)",
         gvp["all_reduce_grads"] - gvp.get("gram", 0) - gvp.get("vaccinate", 0) - gvp.get("weighted_sum", 0), None),
        ("zero_grad, stock / ours", st["zero_grad"], gvp["zero_grad"] - st["zero_grad"]),
        ("multiply_grads, stock / ours", st["multiply_grads"], gvp["multiply_grads"] - st["multiply_grads"]),
        ("clip_grad_norm, stock / ours", st["clip_grad_norm"], gvp["clip_grad_norm"] - st["clip_grad_norm"]),
        ("Adam step, stock / ours", st["step"], gvp["step"] - st["step"]),
        ("whole update, stock / ours", st["total"], gvp["total"] - st["total"]),
    ]
    lines[7] = (lines[7][0], lines[7][1], lines[7][1])
    print(f"  {'phase':<72} {'ms':>9} {'extra ms':>9}")
    for name, ms, extra in lines:
        print(f"  {name:<72} {ms:>9.1f} {'' if extra is None else f'{extra:>+9.1f}'}")
    print("  ('extra' of the control: the cost of splitting the batch by direction; of ours: "
          "accumulating into the rows instead of fresh .grad tensors, over the control; "
          "the row zeroing is outside these forward+backward lines)")

    # Op level: one update each under torch.profiler, ops by extra self time.
    from torch.profiler import ProfilerActivity, profile as tprofile

    def op_table(v, batch):
        with tprofile(activities=[ProfilerActivity.CPU]) as prof:
            v.update(batch, sync)
        return {e.key: (e.self_cpu_time_total / 1e3, e.count) for e in prof.key_averages()}

    mixed, split = batches[0]
    a, b = op_table(stock, mixed), op_table(ours, split)
    diff = sorted(((b.get(key, (0, 0))[0] - a.get(key, (0, 0))[0], key) for key in set(a) | set(b)), reverse=True)
    print(f"\n{size}: torch.profiler, self CPU ms of one update, ops with the largest extra time (ours - stock)")
    print(f"  {'op':<48} {'stock ms':>9} {'calls':>6} {'ours ms':>9} {'calls':>6} {'extra':>8}")
    for d, key in diff[:14]:
        (sa, ca), (sb, cb) = a.get(key, (0, 0)), b.get(key, (0, 0))
        print(f"  {key[:48]:<48} {sa:>9.1f} {ca:>6} {sb:>9.1f} {cb:>6} {d:>+8.1f}")
    print(f"  {'(all ops)':<48} {sum(x for x, _ in a.values()):>9.1f} {sum(c for _, c in a.values()):>6} "
          f"{sum(x for x, _ in b.values()):>9.1f} {sum(c for _, c in b.values()):>6}")


# --------------------------------------------------------------------------- main
def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, small batches, 3 reps (smoke run)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--sizes", default=None, help="comma-separated: small,base (default both)")
    parser.add_argument("--reps", type=int, default=None, help="timed updates per variant (default: small 15, base 5)")
    parser.add_argument("--batches", type=int, default=4, help="distinct batches cycled over the reps")
    parser.add_argument("--max-tokens", type=int, default=None, help="batch size (default 4096; --quick 1024)")
    parser.add_argument("--profile", action="store_true", help="also break the time down (phases, ops)")
    parser.add_argument("--profile-reps", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="keep the generated corpora here (default: a temp dir)")
    args = parser.parse_args()

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sizes = ["tiny"] if args.quick else (args.sizes or "small,base").split(",")
    args.max_tokens = args.max_tokens or (1024 if args.quick else 4096)
    default_reps = {"tiny": 3, "small": 15, "base": 5}

    import fairseq  # noqa: F401
    import logging

    logging.disable(logging.WARNING)  # fairseq's info logging (dataset sizes, combiner)
    import fairseq_gradvac  # noqa: F401  (registers the task)

    print(f"step_overhead: {datetime.date.today()}, torch {torch.__version__}, fairseq {fairseq.__version__}, "
          f"python {platform.python_version()}, device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else
             f", {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads"))
    print("command: python " + " ".join(sys.argv))
    workdir = args.workdir or tempfile.mkdtemp(prefix="step_overhead_")
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
            run_args = argparse.Namespace(**{**vars(args), "reps": reps})
            rows, variants, batches, _ = bench(size, shape, corpus, run_args, device, sync)
            results[size] = rows
            print_table(size, rows)
            if args.profile:
                profile(size, variants, batches, args.profile_reps, sync)
            del variants, batches
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print("\nsummary (ms/update median, ratio vs stock):")
    for size, rows in results.items():
        print(f"  {size:<6} " + " | ".join(f"{label} {ms:.0f} ms {r:.3f}x" for label, ms, r in rows))


if __name__ == "__main__":
    main()
