"""The distributed exchange without fairseq: N gloo processes, each with its own rows, give
the combination one process computes from the rows summed over workers (to the rounding of
summing them in another order), and the same state on every rank (bitwise: each rank runs
the same kernels on the same all-reduced numbers)."""
import os
import pickle

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fairseq_gradvac.analysis.similarity import SimilarityGroups
from fairseq_gradvac.direction_gradients import DirectionGradients
from fairseq_gradvac.gradient_exchange import GradientExchange
from fairseq_gradvac.surgery import ParameterGroups, build_combiner
from tolerance import assert_near

DIRECTIONS = ["en-fr", "fr-en", "en-cs", "cs-en", "en-hi"]
SIZES = [(7, 3), (13,), (5, 5), (31,), (2, 9), (11,)]
P = 119  # neither 2 nor 3 divides it
METHODS = [("gradvac", {"beta": 0.3}), ("pcgrad", {}), ("mgda", {}), ("gradnorm", {}), ("sum", {})]
STEPS = 4


def _present(step, rank, world):
    """Which directions rank ``rank`` has at ``step``: en-hi on no rank at step 0, cs-en on
    rank 0 only at step 1, every direction somewhere at step 2, rank 1 none at step 3."""
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
    for name in ("all_reduce", "reduce_scatter_tensor", "all_gather_into_tensor"):
        original = getattr(dist, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] = calls.get(_name, 0) + 1
            return _original(*args, **kwargs)

        setattr(dist, name, counted)
    results = {}
    for (method, kwargs), mode in [(m, mode) for mode in ("sharded", "stacked") for m in METHODS]:
        params = _params()
        grads = DirectionGradients(_groups(params), DIRECTIONS, GradientExchange(world, rank, None, mode))
        combiner = build_combiner(method, **kwargs)
        outs, records = [], []
        calls.clear()
        for step in range(STEPS):
            for p in params:
                p.grad = None  # the trainer's zero_grad
            grads.reset()
            for d in _present(step, rank, world):
                grads.select(d)
                _backward(params, _grads(step, rank, d))
                grads.record(d, torch.tensor(1.0 + DIRECTIONS.index(d) + rank), 10 + rank)
            if rank == 0 and step == 2:  # a dummy batch: zeros, not recorded
                grads.select("en-hi")
                _backward(params, torch.zeros(P, dtype=torch.float64))
            combined = grads.combine(combiner, step, record=step % 2 == 1)  # joins the all-reduce
            outs.append(None if combined is None else combined.clone())
            record = grads.last_record
            records.append(None if record is None else (record.update, record.directions, record.gram.clone()))
        results[method, mode] = (outs, combiner.state_dict(), dict(calls), records)
    with open(os.path.join(out, f"{rank}.pkl"), "wb") as f:
        pickle.dump(results, f)
    dist.destroy_process_group()


def _reference(world):
    """One process: the rows summed over workers, combined by the engine directly."""
    results = {}
    params = _params()
    groups = _groups(params)
    for method, kwargs in METHODS:
        combiner = build_combiner(method, **kwargs)
        outs, records = [], []
        for step in range(STEPS):
            per_rank = {r: _present(step, r, world) for r in range(world)}
            tasks = [d for d in DIRECTIONS if any(d in v for v in per_rank.values())]
            if not tasks:
                outs.append(None)
                records.append(None)
                continue
            rows = torch.stack([
                sum(_grads(step, r, d) for r in range(world) if d in per_rank[r]) for d in tasks
            ]) / world  # fairseq's convention: the trainer multiplies by world / sample size
            losses = torch.tensor([
                sum(1.0 + DIRECTIONS.index(d) + r for r in range(world) if d in per_rank[r]) for d in tasks
            ])
            ntokens = torch.tensor([
                float(sum(10 + r for r in range(world) if d in per_rank[r])) for d in tasks
            ])
            outs.append(combiner.combine(rows, tasks, groups, step, losses=losses / ntokens, ntokens=ntokens))
            # the record: Gram matrices of the summed rows (one worker's scale, not / world)
            records.append((step + 1, tasks, SimilarityGroups(groups).gram(rows * world)) if step % 2 == 1 else None)
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
    reference = _reference(world)
    for (method, _), mode in [(m, mode) for mode in ("sharded", "stacked") for m in METHODS]:
        expected_outs, expected_state, expected_records = reference[method]
        for rank, results in enumerate(ranks):
            outs, state, calls, records = results[method, mode]
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
                assert_near(out, expected, 1e-6, f"{method} {mode} rank {rank} step {step}")
            assert state["task_names"] == expected_state["task_names"]
            for key, value in expected_state.items():
                if isinstance(value, torch.Tensor):
                    assert_near(state[key], value, 1e-6, f"{method} {key}")
                    assert torch.equal(state[key], ranks[0][method, mode][1][key])  # identical on every rank
            # per update: sharded = reduce-scatter + one small all-reduce + all-gather
            if mode == "sharded":
                assert calls == {"reduce_scatter_tensor": STEPS, "all_reduce": STEPS,
                                 "all_gather_into_tensor": STEPS}, calls
            else:
                assert calls == {"all_reduce": 2 * STEPS}, calls
    # the cases happened: a direction on no rank, on one rank only, a rank with nothing
    assert "en-hi" not in sum((_present(0, r, world) for r in range(world)), [])
    assert sum("cs-en" in _present(1, r, world) for r in range(world)) == 1
    assert _present(3, 1, world) == []
    assert reference["mgda"][0][0] is not None and reference["gradvac"][1]["phi_hat"].abs().sum() > 0


def test_bad_exchange_arguments():
    with pytest.raises(ValueError, match="unknown gradient exchange"):
        GradientExchange(2, 0, None, "ring")
    with pytest.raises(ValueError, match="bad rank"):
        GradientExchange(2, 2)
    assert GradientExchange(4, 0).padded_numel(123) == 124
    assert GradientExchange(4, 0, mode="stacked").padded_numel(123) == 123
