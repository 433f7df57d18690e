"""Time the gradient combiners on a transformer-base parameter layout.

One run prints, per granularity, side by side:
  sum            ONE plain sum of the K gradients into an existing P-vector (what plain
                 multilingual training pays to form its update in its .grad tensors);
                 "sum, fresh P-vector" is grads.sum(0), which also touches new pages
  engine         this project's GradVac and PCGrad (fairseq_gradvac.combiners), end to end
                 through Combiner.combine (Gram matrices, Algorithm 1 for all groups at
                 once, weighted sum into an existing P-vector, as in training)
  torchjd        torchjd's GradVac applied group by group, its grouping recipe: a Python
                 loop over groups, Gram matrix of the group, GradVacWeighting (one per
                 group, keeping its EMA), weighted sum of the group's gradients
  libmtl         a literal LibMTL-style loop: per group, per task i, per task j, with
                 vector ops (dot, norms, axpy) on slices of the gradients

Times are medians over --reps repetitions after one warm-up call, the methods interleaved
rep by rep (the machine may be shared). Ratios: engine/sum, and torchjd/engine.

  python benchmarks/combine.py                  # K=8, transformer base (60.5M), CPU
  python benchmarks/combine.py --device cuda    # on a GPU
  python benchmarks/combine.py --quick          # small layout, a few seconds
"""
import argparse
import datetime
import os
import platform
import random
import statistics
import sys
import time
from typing import Callable, Dict, List

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fairseq_gradvac.combiners import ParameterGroups, build_combiner, gradient_methods  # noqa: E402
from fairseq_gradvac.combiners.groups import all_finite  # noqa: E402


# ---------------------------------------------------------------------------------------
# The layout: fairseq's `transformer` architecture (transformer base), shared embeddings.


def _fairseq_model(vocab: int, dim: int, ffn: int, heads: int, layers: int):
    from fairseq.data import Dictionary
    from fairseq.models.transformer import TransformerModel, base_architecture

    dictionary = Dictionary()
    for i in range(vocab - len(dictionary)):
        dictionary.add_symbol(f"w{i}")
    args = argparse.Namespace(
        share_all_embeddings=True, encoder_embed_dim=dim, decoder_embed_dim=dim,
        encoder_ffn_embed_dim=ffn, decoder_ffn_embed_dim=ffn, encoder_attention_heads=heads,
        decoder_attention_heads=heads, encoder_layers=layers, decoder_layers=layers,
    )
    base_architecture(args)

    class Task:
        source_dictionary = target_dictionary = dictionary

    with torch.device("meta"):  # shapes and names only, no memory
        return TransformerModel.build_model(args, Task())


def _replica_model(vocab: int, dim: int, ffn: int, layers: int):
    """Same parameter names and shapes as fairseq's TransformerModel (post-norm, tied)."""
    nn = torch.nn

    def attention():
        m = nn.Module()
        for name in ("k_proj", "v_proj", "q_proj", "out_proj"):
            setattr(m, name, nn.Linear(dim, dim))
        return m

    def layer(decoder: bool):
        m = nn.Module()
        m.self_attn = attention()
        m.self_attn_layer_norm = nn.LayerNorm(dim)
        if decoder:
            m.encoder_attn = attention()
            m.encoder_attn_layer_norm = nn.LayerNorm(dim)
        m.fc1, m.fc2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)
        m.final_layer_norm = nn.LayerNorm(dim)
        return m

    with torch.device("meta"):
        model = nn.Module()
        embed = nn.Embedding(vocab, dim)
        model.encoder, model.decoder = nn.Module(), nn.Module()
        model.encoder.embed_tokens = embed
        model.encoder.layers = nn.ModuleList(layer(False) for _ in range(layers))
        model.decoder.embed_tokens = embed
        model.decoder.layers = nn.ModuleList(layer(True) for _ in range(layers))
        model.decoder.output_projection = nn.Linear(dim, vocab, bias=False)
        model.decoder.output_projection.weight = embed.weight
    return model


def build_model(quick: bool):
    shape = dict(vocab=8000, dim=256, ffn=1024, layers=3) if quick else dict(vocab=32000, dim=512, ffn=2048, layers=6)
    try:
        return _fairseq_model(heads=8 if not quick else 4, **shape), "fairseq TransformerModel"
    except ImportError:
        return _replica_model(**shape), "replica of fairseq's TransformerModel"


# ---------------------------------------------------------------------------------------
# The contenders.


def torchjd_group_by_group(groups: ParameterGroups, beta: float):
    from torchjd.aggregation import GradVacWeighting

    weightings = [GradVacWeighting(beta=beta) for _ in range(len(groups))]
    slices = [slice(o, o + s) for o, s in zip(groups.offsets, groups.sizes)]

    def combine(grads: torch.Tensor) -> torch.Tensor:
        out = torch.empty(grads.shape[1], dtype=grads.dtype, device=grads.device)
        for sl, weighting in zip(slices, weightings):
            g = grads[:, sl]
            out[sl] = weighting(g @ g.T) @ g
        return out

    return combine


def libmtl_loop(groups: ParameterGroups, num_tasks: int, beta: float):
    """LibMTL's GradVac, per group k, per task i, per task j (random order), vector ops;
    with the EMA updated on every visit (the post-2024 fix)."""
    rho_t = torch.zeros(num_tasks, num_tasks, len(groups))
    slices = [slice(o, o + s) for o, s in zip(groups.offsets, groups.sizes)]
    rng = random.Random(0)

    def combine(grads: torch.Tensor) -> torch.Tensor:
        pc_grads = grads.clone()
        for k, sl in enumerate(slices):
            for i in range(num_tasks):
                others = [j for j in range(num_tasks) if j != i]
                rng.shuffle(others)
                gi = pc_grads[i, sl]
                for j in others:
                    gj = grads[j, sl]
                    rho = torch.dot(gi, gj) / (gi.norm() * gj.norm())
                    target = rho_t[i, j, k]
                    if rho < target:
                        w = gi.norm() * (target * (1 - rho**2).sqrt() - rho * (1 - target**2).sqrt()) / (
                            gj.norm() * (1 - target**2).sqrt()
                        )
                        gi.add_(gj, alpha=w.item())
                    rho_t[i, j, k] = (1 - beta) * target + beta * rho.item()
        return pc_grads.sum(0)

    return combine


# ---------------------------------------------------------------------------------------


def timed(fns: Dict[str, Callable[[], object]], reps: Dict[str, int], device: torch.device,
          clock: Callable[[], float] = time.perf_counter) -> Dict[str, float]:
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    times: Dict[str, List[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm-up
        fn()
        sync()
    for rep in range(max(reps.values())):
        for name, fn in fns.items():
            if rep >= reps[name]:
                continue
            sync()
            start = clock()
            fn()
            sync()
            times[name].append(clock() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def make_grads(num_tasks: int, numel: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """Correlated gradients (a shared direction, a per-task sign and noise): some pairs
    conflict and some do not, so both branches of Algorithm 1 run."""
    gen = torch.Generator(device=device).manual_seed(seed)
    grads = torch.randn(num_tasks, numel, generator=gen, device=device)
    shared = torch.randn(numel, generator=gen, device=device)
    signs = torch.tensor([1.0, -0.5, 1.0, 0.8, -1.0, 0.3, 1.0, -0.2] * (num_tasks // 8 + 1))[:num_tasks]
    grads.add_(signs.to(device)[:, None] * shared)
    return grads


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tasks", type=int, default=8, help="K, the number of directions")
    parser.add_argument("--granularities", default="all_layer,all_matrix")
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions of the fast methods")
    parser.add_argument("--slow-reps", type=int, default=3, help="timed repetitions of torchjd and libmtl")
    parser.add_argument("--beta", type=float, default=1e-2)
    parser.add_argument("--quick", action="store_true", help="a small layout (d=256, 3+3 layers, 8k vocabulary)")
    parser.add_argument("--skip", default="", help="comma-separated methods to leave out (torchjd, libmtl)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--combiners", default="", help="comma-separated combiners to time (default: every one)")
    parser.add_argument("--parts", action="store_true",
                        help="also time the engine's parts alone: the Gram matrices, the weighted sum "
                             "(into a fresh P-vector and into an existing one) and the finiteness check")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall-clock time, or this process's CPU time (with --threads 1: robust to "
                             "other processes taking turns on the cores)")
    args = parser.parse_args()
    if args.clock == "cpu" and args.device != "cpu":
        parser.error("--clock cpu times CPU work only: use it with --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    skip = set(filter(None, args.skip.split(",")))
    model, source = build_model(args.quick)
    named = list(model.named_parameters())
    k = args.tasks
    tasks = [f"d{i}" for i in range(k)]

    print(f"# benchmarks/combine.py {' '.join(sys.argv[1:])}")
    print(
        f"# {datetime.date.today()}  torch {torch.__version__}  {platform.processor() or platform.machine()}  "
        f"device {device}{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}  "
        f"threads {torch.get_num_threads()}  clock {args.clock}"
    )
    print(f"# load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    print(f"# layout: {source}, {sum(p.numel() for _, p in named) / 1e6:.1f}M parameters (tied counted once), K={k}, fp32")
    rows = []
    for granularity in args.granularities.split(","):
        groups = ParameterGroups.from_named_parameters(named, granularity)
        grads = make_grads(k, groups.numel, device)
        step = [0]
        losses = torch.linspace(2.0, 4.0, k, device=device)  # (GradNorm's loss ratios)

        # The engine writes each update into a vector it keeps, as the training path does and
        # as stock fairseq accumulates into its .grad tensors; so does the plain sum it is
        # compared with. A fresh P-vector (first touch of its pages) is timed beside it.
        kept, summed = (torch.empty(groups.numel, dtype=grads.dtype, device=device) for _ in range(2))

        def run(combiner):
            step[0] += 1
            return combiner.combine(grads, tasks, groups, step[0], losses=losses, out=kept)

        fns = {"sum": lambda: torch.sum(grads, 0, out=summed), "sum, fresh P-vector": lambda: grads.sum(0)}
        # every registered combiner, end to end (GradVac and PCGrad first: the table's ratios)
        chosen = [n for n in args.combiners.split(",") if n] or gradient_methods()
        for name in ["gradvac", "pcgrad"] + [n for n in chosen if n not in ("gradvac", "pcgrad")]:
            combiner = build_combiner(name, **({"beta": args.beta} if name == "gradvac" else {}))
            fns[f"engine {name}"] = lambda c=combiner: run(c)
        if args.parts:
            weights = torch.rand(len(groups), k, device=device)
            fns["part: gram matrices"] = lambda: groups.gram(grads)
            fns["part: weighted sum, fresh P-vector"] = lambda: groups.weighted_sum(grads, weights)
            fns["part: weighted sum, existing P-vector"] = lambda: groups.weighted_sum(grads, weights, out=kept)
            fns["part: finiteness check of a P-vector"] = lambda: all_finite(kept)
        reps = {name: args.reps for name in fns}
        if "torchjd" not in skip:
            fns["torchjd gradvac per group"] = lambda f=torchjd_group_by_group(groups, args.beta): f(grads)
            reps["torchjd gradvac per group"] = args.slow_reps
        if "libmtl" not in skip:
            fns["libmtl-style loop"] = lambda f=libmtl_loop(groups, k, args.beta): f(grads)
            reps["libmtl-style loop"] = args.slow_reps
        times = timed(fns, reps, device, time.process_time if args.clock == "cpu" else time.perf_counter)
        rows.append((granularity, len(groups), times))
        del grads

    print(f"# load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    print("| granularity | groups | method | median ms | x sum | torchjd / engine |")
    print("|---|---:|---|---:|---:|---:|")
    for granularity, n_groups, times in rows:
        base, engine = times["sum"], times["engine gradvac"]
        for name, t in times.items():
            vs_engine = ""
            if name == "torchjd gradvac per group":
                vs_engine = f"{t / engine:.1f}"
            print(f"| {granularity} | {n_groups} | {name} | {t * 1e3:.1f} | {t / base:.2f} | {vs_engine} |")


if __name__ == "__main__":
    main()
