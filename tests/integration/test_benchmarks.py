"""The benchmark scripts run end to end (smoke runs; their timings are not checked here)."""
import os
import re
import subprocess
import sys

from tests.helpers import ROOT


def _run(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def test_combine_benchmark_prints_every_method():
    out = _run("benchmarks/combine.py", "--quick", "--tasks", "3", "--granularities", "all_layer",
               "--reps", "1", "--slow-reps", "1", "--threads", "1", "--parts")
    for method in ("| sum |", "sum, fresh P-vector", "engine", "torchjd", "libmtl", "part: gram matrices",
                   "part: weighted sum, existing",
                   "part: finiteness check"):
        assert method in out


def test_weigh_benchmark_times_the_k_by_k_part_of_every_method():
    out = _run("benchmarks/weigh.py", "--quick", "--tasks", "3,5", "--reps", "1", "--threads", "1",
               "--sum-up-to", "3")
    from fairseq_gradvac.combiners import gradient_methods

    rows = [line.split("|") for line in out.splitlines() if re.match(r"\| \d", line)]
    for k in ("3", "5"):
        timed = {r[2].strip(): float(r[3]) for r in rows if r[1].strip() == k}
        assert set(gradient_methods()) <= set(timed)
        assert all(t >= 0 for t in timed.values()) and timed["nash_mtl"] > 0
    assert any("plain sum" in r[2] and r[1].strip() == "3" for r in rows)
    assert not any("plain sum" in r[2] and r[1].strip() == "5" for r in rows)


def test_nash_solver_benchmark_counts_the_solves_that_reach_the_condition():
    out = _run("benchmarks/nash_solver.py", "--tasks", "3,8", "--draws", "2", "--size", "40")
    rows = [[c.strip() for c in line.split("|")] for line in out.splitlines() if re.match(r"\s+\d+ \|", line)]
    assert [r[0] for r in rows] == ["3", "8"]
    assert all(0 <= int(c) <= 2 for r in rows for c in r[1:4]) and all(r[3] == "2" for r in rows)


def test_scale_benchmark_gives_each_method_its_norm_ratios():
    out = _run("benchmarks/scale.py", "--tasks", "3", "--scales", "1,0", "--draws", "1", "--size", "30",
               "--methods", "sum,imtl_g")
    rows = {r[1].strip(): [float(x) for x in r[2:4]] for r in (l.split("|") for l in out.splitlines() if l.startswith("| `"))}
    assert rows == {"`sum`": [1.0, 1.0], "`imtl_g`": [rows["`imtl_g`"][0], 0.0]} and rows["`imtl_g`"][0] > 0


def test_mgda_conditioning_benchmark_grows_with_the_gradients_alignment():
    out = _run("benchmarks/mgda_conditioning.py", "--tasks", "3", "--cosines", "0.5,0.999", "--draws", "3")
    rows = [[float(c) for c in l.strip("|").split("|")] for l in out.splitlines() if l.startswith("| 3 |")]
    assert [r[1] for r in rows] == [0.5, 0.999] and rows[1][2] > 10 * rows[0][2]


def test_loss_weighting_benchmark_times_every_method_against_stock():
    out = _run("benchmarks/loss_weighting.py", "--quick", "--threads", "1", "--methods", "famo,uw,famo:next")
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in out.splitlines() if re.match(r"\| 8 \|", line)]
    assert [r[1] for r in rows] == ["stock", "famo", "uw", "famo:next"]
    assert all(float(r[2]) > 0 and r[4] == "1.00" for r in rows)  # no gradient memory beyond stock's
    assert rows[0][3] == "1.000"


def test_study_rows_benchmark_times_the_study_methods_from_their_option_files():
    out = _run("benchmarks/study_rows.py", "--quick", "--threads", "1", "--clock", "cpu",
               "--methods", "multilingual,gradvac_all_layer:low,famo,nash_mtl")
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in out[out.index("summary"):].splitlines()
            if line.startswith("| ") and not line.startswith("| method")]
    assert [r[0] for r in rows] == ["multilingual", "gradvac_all_layer:low", "famo", "nash_mtl"]
    options = {r[0]: r[1] for r in rows}
    # each method as configs/methods/*.args gives it to fairseq-train, batched as the study trains it
    assert options["nash_mtl"].startswith("--gradient-combiner nash_mtl --combine-granularity whole_model")
    assert options["gradvac_all_layer:low"].endswith("--gradvac-directions en-l003,l003-en")  # the smallest pair
    assert {r[0]: r[2] for r in rows} == {"multilingual": "split", "gradvac_all_layer:low": "split",
                                          "famo": "mixed", "nash_mtl": "split"}
    assert rows[0][4] == "1.000" and all(float(r[3]) > 0 and float(r[4]) > 0 for r in rows)


def test_study_rows_benchmark_refuses_a_method_without_a_config():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "benchmarks/study_rows.py", "--quick", "--methods", "multilingual,gradvax"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "no such config: " in proc.stderr and "gradvax.args" in proc.stderr


def test_step_overhead_benchmark_times_the_chosen_variants():
    out = _run("benchmarks/step_overhead.py", "--quick", "--variants", "gradvac", "--threads", "1")
    summary = out[out.index("summary"):]
    assert "stock" in summary and "gradvac all_layer" in summary and "pcgrad" not in summary


def test_step_overhead_benchmark_times_tokens_at_several_numbers_of_directions():
    out = _run("benchmarks/step_overhead.py", "--quick", "--directions", "4,8", "--threads", "1", "--reps", "1",
               "--profile", "--profile-reps", "1", "--profile-ops", "3")
    # the allocator's thresholds, set for the whole process (every variant) as the task sets them
    assert "keeps freed blocks up to 1024 MB for the next update" in out or "not glibc" in out
    table = [line.split("|") for line in out[out.index("summary"):].splitlines() if line.startswith("| ")]
    assert [row[1].strip() for row in table[1:]] == ["4", "8"]  # (after the header)
    for row in table[1:]:  # ratios of real timings; stock on single's own batch
        assert float(row[2]) > 0 and float(row[4]) > 0 and float(row[6]) > 0 and float(row[7]) > 0 < float(row[8])
    # where single spends more than stock on the same batch, phase by phase and op by op, at each K
    for k in (4, 8):
        profile = out[out.index(f"K={k}: profile of single vs stock"):]
        assert re.search(r"forward\+backward \(FairseqTask.train_step\)\s+[0-9.]+\s+[-+][0-9.]+", profile)
        assert re.search(r"\btotal\s+[0-9.]+\s+[-+][0-9.]+", profile)
        assert f"K={k}: torch.profiler" in profile


def test_step_overhead_benchmark_refuses_an_unknown_variant():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "benchmarks/step_overhead.py", "--quick", "--variants", "gradvax"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown variants ['gradvax']" in proc.stderr


def test_distributed_benchmark_counts_the_exchange():
    """2 workers on the tiny shape at K = 8 and K = 50: split batches send (K+1)/2 times the
    bytes of stock legacy_ddp per update, single-direction batches at most 1.05 times, and
    keep at most (S + K/N + 1) P of gradients, S = 1 (counted at the collectives and read
    from the allocations, not timed)."""
    out = _run("benchmarks/distributed.py", "--sizes", "tiny", "--directions", "8", "50", "--workers", "2",
               "--updates", "4", "--warmup", "1")
    tables = out.split("K = ")[1:]
    assert [t.split(",")[0] for t in tables] == ["8", "50"]
    for k, table in zip((8, 50), tables):
        rows = {line.split("|")[1].strip(): line.split("|") for line in table.splitlines() if line.startswith("| ")}
        assert set(rows) == {"variant", "stock", "split", "single"}
        assert float(rows["stock"][3]) == 1.0 and float(rows["stock"][5]) == 1.0
        # split: one all-to-all per direction in the batch (nearly all K), and a K x K
        # statistics all-reduce that grows with K^2
        rounds = int(rows["split"][8].split("all_to_all_single ")[1].split(",")[0])
        assert 0.8 * k <= rounds <= k
        assert (rounds + 1) / 2 - 0.05 <= float(rows["split"][3]) <= (k + 1) / 2 + 0.1
        assert float(rows["single"][3]) <= 1.05
        # single: one row, at most 2 summed slices (one per worker) and the update: 3 P
        # (plus the finiteness check's fp64 chunk, 1/32 P at most), whatever K
        assert float(rows["single"][5]) <= 3.05
        assert rows["single"][8].strip().endswith("all_to_all_single 1")


def test_similarity_overhead_benchmark_records_and_reports_both_intervals():
    out = _run("benchmarks/similarity_overhead.py", "--quick", "--threads", "1", "--combiners", "sum",
               "--reps", "1")
    summary = out[out.index("summary"):]
    assert "tiny sum: N=1" in summary and "N=100" in summary


def test_min_norm_benchmark_compares_both_solvers():
    out = _run("benchmarks/min_norm.py", "--cases", "6x4", "--reps", "1")
    row = next(line for line in out.splitlines() if line.startswith("| 6 | 4 |")).split("|")
    assert float(row[7]) < 1e-9  # Wolfe's duality gap: exact


def test_gpu_check_dry_run_runs_every_step_on_the_cpu():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-2000:]
    for c, batchings in (("sum", ("single", "split")), ("gradvac", ("single", "split")),
                         ("famo", ("single", "split", "mixed"))):
        for b in batchings:
            assert re.search(rf"^\| {c} \| amp \| {b} \| ok \| \d+\.\d+ \|", out, re.M), out
    assert "| gradvac | amp | mixed" not in out
    for step in ("== 1.", "== 2.", "== 3.", "== 4.", "== 5."):
        assert step in out
    assert "summary" in out and "engine" in out and "gpu_check: all checks passed" in out


def test_allocations_benchmark_prints_fp16_next_to_fp32_within_the_bound():
    out = _run("benchmarks/allocations.py", "--params", "4000000", "--directions", "8",
               "--granularities", "whole_model", "--threads", "1")
    row = next(l for l in out.splitlines() if l.startswith("| whole_model | 8 |"))
    cells = [float(c.strip().rstrip(" P")) for c in row.split("|")[3:6]]
    assert all(1.0 <= c <= 1.125 for c in cells), row  # fp32, fp16, bf16: the update vector and a little
    assert "within the bound" in out
