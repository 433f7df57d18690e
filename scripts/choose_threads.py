"""The demo's OMP_NUM_THREADS: every core that other processes leave free NOW.

On 2 cores a 2-thread training process next to other work slows down manyfold (OpenMP
threads spin waiting for a descheduled partner; docs/results.md), so the busy cores are
measured over a short /proc/stat sample, minus what this process itself used. The load
average is not used: its 1-minute decay still counts work that ended a minute ago.

Prints "THREADS WHY". Where /proc/stat is missing (not Linux) it takes every core.
"""
import argparse
import os
import re
import time

MAX_THREADS = 4  # more was not measured
BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user nice system irq softirq steal; idle (3) and iowait (4) are free


def cpu_ticks(stat_text):
    """(busy, total) clock ticks summed over all cores, and the number of cores, from the
    text of /proc/stat."""
    lines = stat_text.splitlines()
    fields = lines[0].split() if lines else []
    if not fields or fields[0] != "cpu":
        raise ValueError(f"/proc/stat does not start with the 'cpu' line: {fields[:1]}")
    ticks = [int(v) for v in fields[1:9]]
    cores = sum(1 for line in lines if re.match(r"cpu[0-9]+ ", line))
    return sum(ticks[i] for i in BUSY_FIELDS), sum(ticks), max(1, cores)


def own_ticks(self_stat_text):
    """utime + stime of a process, from the text of /proc/<pid>/stat (after the command name)."""
    fields = self_stat_text.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def busy_cores(stat_before, stat_after, own_before, own_after):
    """Cores other processes kept busy between the two samples (0 to the number of cores)."""
    busy0, total0, _ = cpu_ticks(stat_before)
    busy1, total1, n = cpu_ticks(stat_after)
    if total1 <= total0:
        return 0.0
    others = max(0, busy1 - busy0 - (own_after - own_before))
    return min(n, n * others / (total1 - total0))


def choose(n, busy):
    """Threads: the free cores, rounded, at least 1 and at most MAX_THREADS."""
    return max(1, min(MAX_THREADS, n, int(n - busy + 0.5)))


def sample(seconds, read=lambda path: open(path).read()):
    """busy_cores over ``seconds`` of the real machine."""
    before, own0 = read("/proc/stat"), own_ticks(read("/proc/self/stat"))
    time.sleep(seconds)
    return busy_cores(before, read("/proc/stat"), own0, own_ticks(read("/proc/self/stat")))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="length of the /proc/stat sample")
    args = parser.parse_args()
    n = os.cpu_count() or 1
    if not os.path.exists("/proc/stat"):
        print(min(n, MAX_THREADS), f"{n} cores, no /proc/stat to measure the load: every core")
        return
    busy = sample(args.seconds)
    print(choose(n, busy), f"{n} cores, {busy:.2f} of them busy with other processes over {args.seconds:g} s")


if __name__ == "__main__":
    main()
