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
    """(the most bytes that ``fn``'s own tensor allocations of ``at_least`` bytes or more held
    at once, ``fn()``), from the CPU profiler's allocation and free events in time order.

    Counted: allocations on fn's thread outside collectives (a collective's transient
    buffers are the backend's: gloo copies an all-gather's output, NCCL does not), and the
    frees of those blocks, wherever they happen (gloo's thread may drop the last reference
    to a receive buffer a moment after the call returns). Frees of blocks allocated before
    ``fn`` are not counted, so the peak is never too low."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    events = [e for e in prof.events() if e.self_cpu_memory_usage and abs(e.self_cpu_memory_usage) >= at_least]
    thread = Counter(e.thread for e in prof.events()).most_common(1)[0][0]  # fn's own: most ops
    held = Counter()  # sizes of the counted blocks alive
    live = peak = 0
    for event in sorted(events, key=lambda e: e.time_range.start):
        size = event.self_cpu_memory_usage
        if size > 0 and event.thread == thread and not _in_collective(event):
            held[size] += 1
            live += size
            peak = max(peak, live)
        elif size < 0 and held[-size] > 0:
            held[-size] -= 1
            live += size
    return peak, result
