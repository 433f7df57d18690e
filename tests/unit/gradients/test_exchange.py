"""The distributed exchange without fairseq: N gloo processes, each with its own rows, give
the combination one process computes from the rows summed over workers (to the rounding of
summing them in another order), and the same state on every rank (bitwise: each rank runs
the same kernels on the same all-reduced numbers); with rows for every direction (split
batches) or for a few (single-direction batches), within the memory bound (S + K/N + 1) P
per worker, read from the allocations the code makes."""
import os
import pickle
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fairseq_gradvac.gradients.similarity import SimilarityGroups
from fairseq_gradvac.gradients.direction_gradients import DirectionGradients
from fairseq_gradvac.gradients.exchange import GradientExchange, LocalExchange, exchange_for
from fairseq_gradvac.combiners import ParameterGroups, build_combiner
from tests.helpers.device_check import wrong_default_device
from tests.helpers.tolerance import assert_near

from benchmarks.allocations import peak_bytes

DIRECTIONS = ["en-fr", "fr-en", "en-cs", "cs-en", "en-hi"]
SIZES = [(7, 3), (13,), (50, 50), (31,), (2, 9), (21418,)]
P = 24001  # neither 2 nor 3 divides it; rows large next to the K x K statistics
METHODS = [("gradvac", {"beta": 0.3}), ("pcgrad", {}), ("mgda", {}), ("gradnorm", {}), ("sum", {})]
STEPS = 4
ROWS = (len(DIRECTIONS), 2)  # rows for every direction (split batches), or for two (single)


def _present(step, rank, world, rows=len(DIRECTIONS)):
    """Which directions rank ``rank`` has at ``step``: en-hi on no rank at step 0, cs-en on
    rank 0 only at step 1, every direction somewhere at step 2, rank 1 none at step 3; with
    ``rows`` < K (single-direction batches) its first ``rows`` of those, turned by rank so
    that ranks hold different directions."""
    if rows < len(DIRECTIONS):
        mine = _present(step, rank, world)
        turn = rank % len(mine) if mine else 0
        return sorted((mine[turn:] + mine[:turn])[:rows], key=DIRECTIONS.index)
    if step == 0:
        return [d for d in DIRECTIONS if d != "en-hi"]
    if step == 1:
        return DIRECTIONS[:4] if rank == 0 else DIRECTIONS[:2]
    if step == 3 and rank == 1:
        return []
    return DIRECTIONS[rank % 2 :: 1 + rank % 2] or DIRECTIONS


def _grads(step, rank, direction):
    gen = torch.Generator().manual_seed(1000 * step + 10 * rank + DIRECTIONS.index(direction))
    base = torch.randn(P, generator=gen, dtype=torch.float64)
    shared = torch.randn(P, generator=torch.Generator().manual_seed(step), dtype=torch.float64)
    return (base - 0.8 * shared) * (1 + rank)  # conflicts, and unequal norms


def _params():
    return [torch.nn.Parameter(torch.zeros(s, dtype=torch.float64)) for s in SIZES]


def _groups(params):
    return ParameterGroups([f"g{i}" for i in range(3)], [
        [("p0", params[0]), ("p1", params[1])], [("p2", params[2]), ("p3", params[3])],
        [("p4", params[4]), ("p5", params[5])],
    ])


def _backward(params, flat):
    """A backward pass whose gradient is ``flat`` (through autograd, so the hooks run)."""
    pieces = torch.split(flat, [p.numel() for p in params])
    sum((p * g.view(p.shape)).sum() for p, g in zip(params, pieces)).backward()


def _worker(rank, world, init, out):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.set_num_threads(1)
    calls = {}
    for name in ("all_reduce", "all_to_all_single", "all_gather_into_tensor"):
        original = getattr(dist, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] = calls.get(_name, 0) + 1
            return _original(*args, **kwargs)

        setattr(dist, name, counted)
    results = {}
    for (method, kwargs), rows in [(m, rows) for rows in ROWS for m in METHODS]:
        params = _params()
        grads = DirectionGradients(_groups(params), DIRECTIONS, GradientExchange(world, rank), rows=rows)
        combiner = build_combiner(method, **kwargs)
        outs, records, peaks = [], [], []
        calls.clear()
        for step in range(STEPS):
            for p in params:
                p.grad = None  # the trainer's zero_grad
            grads.reset()
            for d in _present(step, rank, world, rows):
                grads.select(d)
                _backward(params, _grads(step, rank, d))
                grads.record(d, torch.tensor(1.0 + DIRECTIONS.index(d) + rank), 10 + rank)
            if rank == 0 and step == 2 and rows == len(DIRECTIONS):  # a dummy batch: zeros, not recorded
                grads.select("en-hi")
                _backward(params, torch.zeros(P, dtype=torch.float64))
            # (the record joins the all-reduce)
            # row storage: allocations of half a worker's slice or more (not the K x K statistics)
            # every tensor the exchange and the combination make follows the rows' device
            with wrong_default_device():
                peak, combined = peak_bytes(lambda: grads.combine(combiner, step, record=step % 2 == 1),
                                            at_least=P // world // 2 * 8)
            peaks.append(peak)
            outs.append(None if combined is None else combined.clone())
            record = grads.last_record
            records.append(None if record is None else (record.update, record.directions, record.gram.clone()))
        results[method, rows] = (outs, combiner.state_dict(), dict(calls), records, peaks,
                                 grads.buffer.numel() * grads.buffer.element_size())
    with open(os.path.join(out, f"{rank}.pkl"), "wb") as f:
        pickle.dump(results, f)
    dist.destroy_process_group()


def _reference(world, rows):
    """One process: the rows summed over workers, combined by the engine directly."""
    results = {}
    params = _params()
    groups = _groups(params)
    for method, kwargs in METHODS:
        combiner = build_combiner(method, **kwargs)
        outs, records = [], []
        for step in range(STEPS):
            per_rank = {r: _present(step, r, world, rows) for r in range(world)}
            tasks = [d for d in DIRECTIONS if any(d in v for v in per_rank.values())]
            if not tasks:
                outs.append(None)
                records.append(None)
                continue
            summed = torch.stack([
                sum(_grads(step, r, d) for r in range(world) if d in per_rank[r]) for d in tasks
            ]) / world  # fairseq's convention: the trainer multiplies by world / sample size
            losses = torch.tensor([
                sum(1.0 + DIRECTIONS.index(d) + r for r in range(world) if d in per_rank[r]) for d in tasks
            ])
            ntokens = torch.tensor([
                float(sum(10 + r for r in range(world) if d in per_rank[r])) for d in tasks
            ])
            outs.append(combiner.combine(summed, tasks, groups, step, losses=losses / ntokens, ntokens=ntokens))
            # the record: Gram matrices of the summed rows (one worker's scale, not / world)
            records.append((step + 1, tasks, SimilarityGroups(groups).gram(summed * world)) if step % 2 == 1 else None)
        results[method] = (outs, combiner.state_dict(), records)
    return results


def _run(world, tmp_path):
    init = f"file://{tmp_path}/store"
    mp.start_processes(_worker, args=(world, init, str(tmp_path)), nprocs=world,
                       start_method="spawn", join=True)
    return [pickle.load(open(tmp_path / f"{r}.pkl", "rb")) for r in range(world)]


@pytest.mark.parametrize("world", [2, 3])
def test_exchange_equals_one_worker_on_the_summed_rows(world, tmp_path):
    ranks = _run(world, tmp_path)
    for (method, _), rows in [(m, rows) for rows in ROWS for m in METHODS]:
        expected_outs, expected_state, expected_records = _reference(world, rows)[method]
        for rank, results in enumerate(ranks):
            outs, state, calls, records, peaks, buffer_bytes = results[method, rows]
            # the raw-cosine record (steps 1 and 3): the Gram matrices of the summed rows
            for record, expected in zip(records, expected_records):
                assert (record is None) == (expected is None)
                if expected is not None:
                    assert record[:2] == expected[:2]
                    assert_near(record[2], expected[2], 1e-6)
            for step, (out, expected) in enumerate(zip(outs, expected_outs)):
                if expected is None:
                    assert out is None, (method, step)
                    continue
                assert_near(out, expected, 1e-6, f"{method} rows {rows} rank {rank} step {step}")
            assert state["task_names"] == expected_state["task_names"]
            for key, value in expected_state.items():
                if isinstance(value, torch.Tensor):
                    assert_near(state[key], value, 1e-6, f"{method} {key}")
                    assert torch.equal(state[key], ranks[0][method, rows][1][key])  # identical on every rank
            # per update: the labels' all-gather, one all-to-all per row index (the most
            # rows a worker sends), one small all-reduce, the all-gather of the P-vector
            rounds = sum(max(len(_present(step, r, world, rows)) for r in range(world)) for step in range(STEPS))
            assert calls == {"all_gather_into_tensor": 2 * STEPS, "all_to_all_single": rounds,
                             "all_reduce": STEPS}, calls
            # memory: this worker's S rows, then at most K/N + 1 rows' worth while combining
            padded = -(-P // world) * world
            assert buffer_bytes == rows * padded * 8
            assert max(peaks) <= (len(DIRECTIONS) / world + 1) * padded * 8, (method, rows, peaks, padded)
    # the cases happened: a direction on no rank, on one rank only, a rank with nothing
    assert "en-hi" not in sum((_present(0, r, world) for r in range(world)), [])
    assert sum("cs-en" in _present(1, r, world) for r in range(world)) == 1
    assert _present(3, 1, world) == []
    assert any(set(_present(s, 0, world, 2)) ^ set(_present(s, 1, world, 2)) for s in range(STEPS))
    reference = _reference(world, len(DIRECTIONS))
    assert reference["mgda"][0][0] is not None and reference["gradvac"][1]["phi_hat"].abs().sum() > 0


def test_bad_exchange_arguments():
    with pytest.raises(ValueError, match="bad rank"):
        GradientExchange(2, 2)
    assert GradientExchange(4, 0).padded_numel(123) == 124
    assert GradientExchange(4, 3).columns(124, 123) == (93, 123)
    assert GradientExchange(8, 7).columns(8, 5) == (7, 7)  # more workers than columns
    # one worker: the local exchange, which sends nothing and keeps the rows where they are
    assert type(exchange_for(1, 0)) is LocalExchange and type(exchange_for(2, 1)) is GradientExchange
    local, rows = LocalExchange(), torch.arange(12.0).view(3, 4)
    assert local.padded_numel(123) == 123 and local.columns(123, 123) == (0, 123)
    kept, order = local.present_rows(rows, 3, [0, 2], [[5, 7]], [5, 7], [0, 2], torch.empty(4))
    assert kept.data_ptr() == rows.data_ptr() and kept.shape == (3, 3) and order == [0, 2]


def _fp16_worker(rank, world, init, out):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    exchange = GradientExchange(world, rank)
    rows = torch.full((1, 2 * world), 40000.0, dtype=torch.float16)  # finite; the N-worker sum is not
    labels = exchange.gather_labels([0], 1, rows.device)
    received = torch.empty(rows.shape[1], dtype=torch.float16)
    summed = exchange.sum_rows(rows, [0], labels, [0], received)
    with open(os.path.join(out, f"{rank}.pkl"), "wb") as f:
        pickle.dump(summed.clone(), f)
    dist.destroy_process_group()


def test_fp16_rows_whose_sum_overflows_are_finite_after_the_exchange(tmp_path):
    """Stock legacy_ddp divides by N before it sums: 2 x 40000 / 2 is finite in fp16 there, so
    it must be here (summing first gives inf, a skipped update and a halved loss scale)."""
    mp.spawn(_fp16_worker, args=(2, f"file://{tmp_path}/store", str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        with open(tmp_path / f"{rank}.pkl", "rb") as f:
            summed = pickle.load(f)
        assert summed.dtype == torch.float16 and torch.equal(summed, torch.full((1, 2), 40000.0, dtype=torch.float16))
