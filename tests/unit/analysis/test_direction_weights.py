"""analysis.direction_weights on hand-written bundles: a Gramian method's weights from the
whole-model Gram matrix rebuilt out of similarity.csv's norms and cosines (against the
method's weights on the gradients' own Gram matrix), the plain sum's shares, Kish's
effective tokens against per-token weights written out, FAMO's from loss_weights.csv and
the pi the log printed, and per-layer rows left out."""
import csv
import json

import numpy as np
import pytest
import torch

from fairseq_gradvac.analysis import direction_weights as dw
from fairseq_gradvac.combiners import ParameterGroups, build_combiner
from tests.helpers.tolerance import assert_near

DIRECTIONS = ["en-fr", "fr-en", "en-hi"]


def _rows(seed):
    """Three conflicting gradients of spread norms (their weights are far from uniform)."""
    gen = torch.Generator().manual_seed(seed)
    shared = torch.randn(64, generator=gen, dtype=torch.float64)
    return torch.stack([shared + 0.5 * torch.randn(64, generator=gen, dtype=torch.float64),
                        -0.8 * shared + torch.randn(64, generator=gen, dtype=torch.float64),
                        3.0 * torch.randn(64, generator=gen, dtype=torch.float64)])


def _run(root, name, combiner, updates, granularity="whole_model", extra=""):
    """A bundle: run.json's command and similarity.csv's whole-model rows (plus a layer's, which
    must not count), one update per (gradients, token counts, directions)."""
    run = root / name
    run.mkdir()
    command = f"fairseq-train data --gradient-combiner {combiner} --combine-granularity {granularity} --seed 1 {extra}"
    (run / "run.json").write_text(json.dumps({"command": command}))
    with open(run / "similarity.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["update", "a", "b", "group", "cosine", "norm_a", "norm_b", "ntokens_a", "ntokens_b"])
        for update, (g, n, directions) in enumerate(updates, 1):
            for i in range(len(directions)):
                for j in range(i + 1, len(directions)):
                    cos = float(g[i] @ g[j] / (g[i].norm() * g[j].norm()))
                    for group, c in (("model", cos), ("encoder.layers.0", -cos)):
                        w.writerow([100 * update, directions[i], directions[j], group, repr(c),
                                    repr(float(g[i].norm())), repr(float(g[j].norm())), int(n[i]), int(n[j])])
    return run


def _kish(n, w):
    """Kish's effective sample size over N of per-token weights written out token by token."""
    tokens = torch.cat([torch.full((int(k),), float(x), dtype=torch.float64) for k, x in zip(n, w)])
    return float(tokens.sum() ** 2 / (tokens * tokens).sum()) / len(tokens)


@pytest.mark.parametrize("method,extra,kwargs", [("upgrad", "", {}), ("nash_mtl", "--nash-mtl-update-every 1", {}),
                                                 ("cagrad", "--cagrad-c 0.8", {"c": 0.8})])
def test_a_gramian_method_gets_its_weights_from_the_rebuilt_gram_matrix(tmp_path, method, extra, kwargs):
    n = torch.tensor([300.0, 120.0, 30.0])
    updates = [(_rows(0), n, DIRECTIONS), (_rows(1)[:2], n[:2], DIRECTIONS[:2])]  # en-hi absent from the second
    run = _run(tmp_path, f"{method}_t5_seed1", method, updates, extra=extra)
    shares, stats, how = dw.run_shares(str(run))
    ratio = stats["effective_tokens_over_n"]
    # the method with the run's options (CAGrad's c from the command, not its default)
    combiner, groups = build_combiner(method, **kwargs), ParameterGroups(["model"], [[("w", torch.zeros(1))]])
    expected, kish, logs = {d: 0.0 for d in DIRECTIONS}, [], []
    first = None
    for g, counts, directions in updates:  # the method's weights on the gradients' own Gram matrix
        w = combiner.weigh((g @ g.T)[None].float(), directions, groups, 0, ntokens=counts.float())[0].double()
        first = first if first is not None else (w * counts / counts.sum()).tolist()
        for d, s in zip(directions, (w * counts / counts.sum()).tolist()):
            expected[d] += s / len(updates)  # absent from an update: 0 there
        kish.append(_kish(counts, w))
        logs.append((counts.log().numpy(), (w * counts / counts.sum()).log().numpy()))
        combiner.commit(torch.ones((), dtype=torch.bool))
    assert_near(torch.tensor([shares[d] for d in DIRECTIONS]), torch.tensor([expected[d] for d in DIRECTIONS]),
                rel=1e-5)
    assert abs(ratio - sum(kish) / 2) < 1e-5 and ratio < 0.999  # unequal per-token weights: fewer effective tokens
    assert f"{method} whole_model" in how and "failed" not in how
    # b: numpy's least-squares fit of the per-update centred log shares on the log tokens
    x = np.concatenate([lx - lx.mean() for lx, _ in logs])
    y = np.concatenate([ly - ly.mean() for _, ly in logs])
    assert abs(stats["share_token_slope"] - np.polyfit(x, y, 1)[0]) < 1e-5
    # (the two sides differ: the plain sum's shares of these updates are far from the method's)
    plain = {d: sum(float(c[i] / c.sum()) for g, c, ds in updates for i, x in enumerate(ds) if x == d) / 2
             for d in DIRECTIONS}
    assert max(abs(expected[d] - plain[d]) for d in DIRECTIONS) > 0.02
    if kwargs:  # (and the run's option matters: the default's weights are others)
        default = build_combiner(method)
        g, counts, directions = updates[0]
        w = default.weigh((g @ g.T)[None].float(), directions, groups, 0, ntokens=counts.float())[0].double()
        assert max(abs(float(x) - shares_0) for x, shares_0 in zip(w * counts / counts.sum(), first)) > 1e-3


def test_the_plain_sum_shares_are_token_counts_and_its_effective_tokens_are_n(tmp_path):
    updates = [(_rows(0), torch.tensor([300.0, 120.0, 30.0]), DIRECTIONS),
               (_rows(1)[:2], torch.tensor([50.0, 150.0]), DIRECTIONS[:2])]
    shares, stats, _ = dw.run_shares(str(_run(tmp_path, "multilingual_t5_seed1", "sum", updates)))
    assert_near(torch.tensor([shares[d] for d in DIRECTIONS]),
                torch.tensor([(300 / 450 + 50 / 200) / 2, (120 / 450 + 150 / 200) / 2, 30 / 450 / 2]), rel=1e-12)
    assert abs(stats["effective_tokens_over_n"] - 1.0) < 1e-12 and abs(stats["share_token_slope"] - 1.0) < 1e-12


def test_famo_reads_the_applied_factors_and_each_epochs_logged_token_shares(tmp_path):
    """c applied (not the exact c), pi of the update's epoch: the log of a run killed in epoch 1
    and resumed prints epoch 1's pi twice, then epoch 2's."""
    run = tmp_path / "famo_t5_seed2"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"command": "fairseq-train data --gradient-combiner famo"}))
    pi = {1: {"en-fr": 0.6, "fr-en": 0.3, "en-hi": 0.1}, 2: {"en-fr": 0.5, "fr-en": 0.3, "en-hi": 0.2}}
    c = {"en-fr": 0.2, "fr-en": 0.3, "en-hi": 0.5}
    n = {"en-fr": 500, "fr-en": 350, "en-hi": 150}  # each update's tokens, N = 1000
    epoch_of = {100: 1, 300: 2}
    with open(run / "loss_weights.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["update", "direction", "weight", "exact", "effective", "loss"])
        for update, epoch in epoch_of.items():
            for d in DIRECTIONS:
                w.writerow([update, d, c[d], 1 / 3, c[d] * n[d] / (1000 * pi[epoch][d]), 5.0])

    def pi_line(epoch):
        return ("x | INFO | fairseq_gradvac.tasks.multilingual_gradvac | famo: the epoch's target tokens by "
                "direction (pi): " + ", ".join(f"{d} {100 * v:.1f}%" for d, v in pi[epoch].items()) + "\n")
    (run / "train.log").write_text(
        pi_line(1) + "x | INFO | fairseq.trainer | begin training epoch 1\n"
        "x | INFO | train_inner | epoch 001:    100 / 200 loss=5.0, num_updates=100, lr=0.001\n"
        + pi_line(1) + "x | INFO | fairseq.trainer | begin training epoch 1\n"  # resumed
        "x | INFO | train_inner | epoch 001:    150 / 200 loss=5.0, num_updates=150, lr=0.001\n"
        + pi_line(2) + "x | INFO | fairseq.trainer | begin training epoch 2\n"
        "x | INFO | train_inner | epoch 002:    100 / 200 loss=5.0, num_updates=300, lr=0.001\n")
    shares, stats, how = dw.run_shares(str(run))
    ratio = stats["effective_tokens_over_n"]
    assert stats["share_token_slope"] is None  # (no token counts in loss_weights.csv)
    expected = [sum(c[d] * n[d] / (1000 * pi[e][d]) for e in (1, 2)) / 2 for d in DIRECTIONS]
    assert_near(torch.tensor([shares[d] for d in DIRECTIONS]), torch.tensor(expected), rel=1e-12)
    # every token of direction d weighs c_d / pi_d of its update's epoch
    kish = [_kish([n[d] for d in DIRECTIONS], [c[d] / pi[e][d] for d in DIRECTIONS]) for e in (1, 2)]
    assert abs(ratio - sum(kish) / 2) < 1e-9 and abs(kish[0] - kish[1]) > 0.01 and ratio < 0.9
    assert "loss_weights.csv" in how


def test_methods_whose_weights_the_logs_cannot_rebuild_are_left_out(tmp_path):
    updates = [(_rows(0), torch.tensor([300.0, 120.0, 30.0]), DIRECTIONS)]
    for name, combiner, extra in (("gradvac_whole_model_t5_seed1", "gradvac", ""),
                                  ("nash_mtl_t5_seed1", "nash_mtl", "--nash-mtl-update-every 4"),
                                  ("gradnorm_t5_seed1", "gradnorm", "")):
        shares, stats, why = dw.run_shares(str(_run(tmp_path, name, combiner, updates, extra=extra)))
        assert shares is None and "state the logged updates do not hold" in why, name
    empty = _run(tmp_path, "upgrad_t5_seed1", "upgrad", [])
    assert dw.run_shares(str(empty))[2] == "upgrad: no whole-model record in similarity.csv"


def test_the_report_lists_per_layer_rows_as_left_out_and_writes_its_files(tmp_path):
    updates = [(_rows(0), torch.tensor([300.0, 120.0, 30.0]), DIRECTIONS)]
    for seed in (1, 2):
        _run(tmp_path, f"multilingual_t5_seed{seed}", "sum", updates)
    _run(tmp_path, "gradvac_all_layer_t5_seed1", "gradvac", updates, granularity="all_layer")
    (tmp_path / "data.json").write_text(json.dumps({"token_shares": {"5": {"en-fr": 0.5, "fr-en": 0.3, "en-hi": 0.2}}}))
    dw.main([str(tmp_path), "--out", str(tmp_path / "weights")])
    text = (tmp_path / "weights" / "weights.md").read_text()
    assert "| multilingual_t5 | 2 | 66.7 ±0.0 | 6.67 ±0.00 | 26.7 ±0.0 | 1.00 ±0.00 | 1.00 ±0.00 |" in text
    assert "| (target tokens sampled at T=5) | | 50.0 | 20.0 | 30.0 | | |" in text
    assert "gradvac_all_layer_t5 (gradvac all_layer: per-layer, no one share per direction)" in text
    with open(tmp_path / "weights" / "weights.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["row"], r["direction"]) for r in rows if r["quantity"] == "share_percent"} == \
        {("multilingual_t5", d) for d in DIRECTIONS}
