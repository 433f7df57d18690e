"""The demo's thread choice (scripts/choose_threads.py): the cores busy now, not a minute ago."""
import importlib.util
import os
import subprocess
import sys
import time

import pytest

from tests.helpers.fairseq_runs import ROOT

SCRIPT = os.path.join(ROOT, "scripts", "choose_threads.py")
spec = importlib.util.spec_from_file_location("choose_threads", SCRIPT)
C = importlib.util.module_from_spec(spec)
spec.loader.exec_module(C)


def stat(user, system, idle, iowait=0, steal=0, cores=2):
    """A /proc/stat text: the all-core line (ticks summed over the cores) and per-core lines."""
    per_core = "".join(f"cpu{i} 0 0 0 0 0 0 0 0 0 0\n" for i in range(cores))
    return f"cpu  {user} 0 {system} {idle} {iowait} 0 0 {steal} 0 0\n{per_core}intr 1 2 3\n"


def fake_proc(before, after, own=(0, 0)):
    """read() for sample(): each file gives its first text, then its second."""
    texts = {"/proc/stat": [before, after],
             "/proc/self/stat": [f"7 (python3 x) S 1 " + "0 " * 9 + f"{t} 0 0 0" for t in own]}
    return lambda path: texts[path].pop(0)


def test_loaded_a_minute_ago_idle_now_takes_every_core(monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0, 1.5, 0.5))  # a finished test run
    # 1 s on 2 cores at 100 Hz: 200 ticks, 3 of them busy
    busy = C.sample(0, read=fake_proc(stat(1000, 500, 5000), stat(1002, 501, 5197)))
    assert busy == pytest.approx(2 * 3 / 200)
    assert C.choose(2, busy) == 2


def test_busy_now_takes_the_free_cores():
    # another process keeps one of 2 cores busy: 100 of 200 ticks
    busy = C.sample(0, read=fake_proc(stat(1000, 500, 5000), stat(1090, 510, 5100)))
    assert busy == pytest.approx(1.0)
    assert C.choose(2, busy) == 1
    assert C.choose(8, busy) == 4  # at most 4 threads (more was not measured)
    assert C.choose(2, 2.0) == 1  # at least one
    # 8 cores, 3 busy, half a core of iowait (free): 5 free cores -> 4
    assert C.choose(8, C.busy_cores(stat(0, 0, 0, cores=8), stat(300, 0, 450, 50, cores=8), 0, 0)) == 4
    # steal (the hypervisor gave the core to someone else) counts as busy
    assert C.busy_cores(stat(0, 0, 0), stat(0, 0, 100, steal=100), 0, 0) == pytest.approx(1.0)


def test_own_ticks_are_not_counted():
    # all the busy ticks were this process's own (python starting up, reading files)
    before, after = stat(1000, 500, 5000), stat(1100, 500, 5100)
    assert C.sample(0, read=fake_proc(before, after, own=(40, 140))) == 0.0
    assert C.sample(0, read=fake_proc(before, after, own=(40, 90))) == pytest.approx(0.5)


def test_bad_stat_is_named():
    with pytest.raises(ValueError, match="/proc/stat"):
        C.cpu_ticks("intr 1 2 3\n")


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux's /proc/stat")
def test_a_real_busy_process_is_seen():
    """A child that spins on one core is measured as (at least most of) a busy core, so the
    choice leaves that core to it; other processes on a shared machine can only add to it."""
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # let it start spinning
        out = subprocess.run([sys.executable, SCRIPT, "--seconds", "1"], capture_output=True, text=True,
                             check=True).stdout
    finally:
        child.kill()
        child.wait()
    threads, why = out.split(" ", 1)
    n = os.cpu_count()
    busy = float(why.split(", ")[1].split()[0])
    assert f"{n} cores" in why and 0.8 <= busy <= n
    assert int(threads) == C.choose(n, busy) <= max(1, min(C.MAX_THREADS, n - 1))
