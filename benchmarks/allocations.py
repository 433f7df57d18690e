"""Peak memory of what a piece of code allocates, read from torch's own allocation events."""
import os
import sys
from collections import Counter

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # (kineto's start/stop lines on every profile)
from torch.profiler import ProfilerActivity, profile  # noqa: E402


def _in_collective(event):
    while event is not None:
        if event.name.startswith("c10d::"):
            return True
        event = event.cpu_parent
    return False


def peak_bytes(fn, at_least=0):
    """(the most bytes that ``fn``'s own tensor allocations held at once, ``fn()``), from the
    CPU profiler's events on fn's thread: each op's own allocations minus its own frees (an
    op's self usage nets them: a sum frees the fp64 copy it made), counted at the op's start
    when positive and at its end when negative, in time order. Left out: collectives (their
    transient buffers are the backend's: gloo copies an all-gather's output, NCCL does not)
    and events under ``at_least`` bytes. Frees of blocks allocated before ``fn`` would lower
    the peak, so ``fn`` must not free large blocks it did not allocate."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    thread = Counter(e.thread for e in prof.events()).most_common(1)[0][0]  # fn's own: most ops
    events = [e for e in prof.events() if abs(e.self_cpu_memory_usage) >= max(at_least, 1)
              and e.thread == thread and not _in_collective(e)]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.time_range.end if e.self_cpu_memory_usage < 0 else e.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak, result


def combination_memory(params, k, dtype, granularity, combiner="gradvac"):
    """What one worker's combination allocates (peak_bytes of DirectionGradients.combine),
    as a multiple of one row's bytes, with K rows of ``params`` entries in ``dtype``, laid
    out like transformer base: embeddings (a quarter of P) then 12 equal layers."""
    import torch

    from fairseq_gradvac.gradients.direction_gradients import DirectionGradients
    from fairseq_gradvac.combiners import ParameterGroups, build_combiner

    embed = params // 4
    layer = (params - embed) // 12
    sizes = [embed] + [layer] * 12
    names = ["embeddings"] + [f"{side}.layers.{i}" for side in ("encoder", "decoder") for i in range(6)]
    weights = [torch.nn.Parameter(torch.zeros(s, dtype=dtype)) for s in sizes]
    groups = ParameterGroups(names, [[(n + ".w", w)] for n, w in zip(names, weights)])
    if granularity == "whole_model":
        groups = ParameterGroups(["model"], [[(n + ".w", w) for n, w in zip(names, weights)]])
    directions = [f"en-x{i}" for i in range(k)]
    grads = DirectionGradients(groups, directions)
    gen = torch.Generator().manual_seed(0)
    for d in directions:
        grads.select(d)
        for w in weights:
            w.grad.copy_(torch.randn(w.shape, generator=gen))
        grads.record(d, 1.0, 100)
    peak, _ = peak_bytes(lambda: grads.combine(build_combiner(combiner), 0))
    grads.close()
    return peak / (groups.numel * torch.empty((), dtype=dtype).element_size())


def main(argv=None):
    """Print the combination's memory per worker (one worker) for fp32, fp16 and bf16 rows."""
    import argparse
    import datetime

    import torch

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--params", type=int, default=8_000_000, help="P, entries of one row")
    p.add_argument("--directions", default="8,50", help="K values")
    p.add_argument("--granularities", default="whole_model,all_layer")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"allocations: {datetime.date.today()}, torch {torch.__version__}; GradVac's combination on one "
          f"worker, P = {a.params:,}; peak allocations beyond the K rows, in rows of the rows' dtype (P); "
          "the bound: 1 P (the update vector) + 1/8 P")
    print(f"command: python benchmarks/allocations.py --params {a.params} --directions {a.directions} "
          f"--granularities {a.granularities}")
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    print("| granularity | K | " + " | ".join(dtypes) + " |")
    print("|---|---:|" + "---:|" * len(dtypes))
    worst = 0.0
    for granularity in a.granularities.split(","):
        for k in map(int, a.directions.split(",")):
            cells = [combination_memory(a.params, k, dtype, granularity) for dtype in dtypes.values()]
            worst = max(worst, *cells)
            print(f"| {granularity} | {k} | " + " | ".join(f"{c:.3f} P" for c in cells) + " |", flush=True)
    print(f"largest: {worst:.3f} P ({'within' if worst <= 1 + 1 / 8 else 'OVER'} the bound 1.125 P)")
    return 0 if worst <= 1 + 1 / 8 else 1


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    raise SystemExit(main())
