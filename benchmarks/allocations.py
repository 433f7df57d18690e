"""Peak memory of what a piece of code allocates, read from torch's own allocation events."""
import os
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
