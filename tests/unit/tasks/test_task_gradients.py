"""In-process checks of the task's data split and per-direction gradients (real fairseq objects)."""
import csv
import math
from collections import Counter

import pytest
import torch
from fairseq import metrics, options, tasks
from fairseq.data import FairseqDataset, data_utils
from fairseq.data.multilingual.sampled_multi_dataset import SampledMultiDataset

import fairseq_gradvac  # noqa: F401  (registers the task)
from tests.helpers import tiny_corpus
from fairseq_gradvac.data.direction_batches import direction_of
from tests.helpers.fairseq_runs import TINY_MODEL, task_args
from tests.helpers.tolerance import assert_near


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tiny_corpus.build(str(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="module")
def mined(corpus, tmp_path_factory):
    """--extra-data of en-fr (also in --lang-pairs: a second en-fr data set) and fr-cs (new)."""
    return tiny_corpus.build_extra(corpus, str(tmp_path_factory.mktemp("mined")), ["en-fr", "fr-cs"])


def _extra_data(path, encoder_langtok="tgt"):
    return ("--extra-data", repr({"mined": path}), "--extra-lang-pairs", repr({"mined": "en-fr,fr-cs"}),
            "--langtoks", repr({"mined": (encoder_langtok, None)}))


def _setup(corpus, *extra, encoder_langtok="tgt"):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(
        parser,
        task_args(corpus, encoder_langtok=encoder_langtok) + TINY_MODEL
        + ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
           "--dropout", "0", "--optimizer", "adam", "--lr", "1e-3", "--seed", "1", *extra],
    )
    task = tasks.setup_task(args)
    torch.manual_seed(1)
    model = task.build_model(args)  # also sets the arch's max positions, as fairseq-train does
    task.load_dataset("train")
    criterion = task.build_criterion(args)
    return args, task, model, criterion


def _samples(task, n=48):
    dataset = task.datasets["train"]
    step = max(1, len(dataset) // n)
    return dataset, [dataset[i] for i in range(0, len(dataset), step)][:n]


def _rows(task):
    """This update's per-direction gradients so far, in training order: [K_present, P]."""
    grads = task._grads
    return torch.stack([grads.row(d) for d in grads.present_directions()])


class _Backward:
    """The one optimizer method train_step uses (fairseq's FairseqOptimizer.backward)."""

    def backward(self, loss):
        loss.backward()


def _flat_grad(model):
    return torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("encoder_langtok,extra", [("src", False), ("tgt", False), ("tgt", True)])
def test_batches_split_exactly_by_direction(corpus, mined, encoder_langtok, extra):
    _, task, _, _ = _setup(corpus, *(_extra_data(mined, encoder_langtok) if extra else ()),
                           encoder_langtok=encoder_langtok)
    dataset, samples = _samples(task)
    directions = corpus["directions"] + (["fr-cs"] if extra else [])
    assert task.training_directions == directions
    assert {dataset.keys[i] for i, _ in samples} == set(dataset.keys)  # every data set sampled
    by_direction = dataset.collater(samples)
    mixed = SampledMultiDataset.collater(dataset, samples)  # fairseq's own mixed batch
    assert list(by_direction) == directions
    # Every row reaches its direction's batch, from all of the direction's data sets.
    rows_per_direction = Counter(direction_of(dataset.keys[i]) for i, _ in samples)
    assert {d: b["nsentences"] for d, b in by_direction.items()} == rows_per_direction
    pad = task.source_dictionary.pad()
    rows = []  # (source, target) without padding; ids are per-direction, so not keys
    for direction, batch in by_direction.items():
        src = batch["net_input"]["src_tokens"]
        assert (src[:, 0] == pad).any() or (src != pad).all()  # sources stay left-padded
        langtok = task.data_manager.get_encoder_langtok(*direction.split("-"), encoder_langtok)
        for i in range(len(src)):
            tokens = src[i][src[i] != pad]
            assert tokens[0].item() == langtok  # the direction's own language token
            rows.append((tokens.tolist(), batch["target"][i][batch["target"][i] != pad].tolist()))
    assert sum(b["nsentences"] for b in by_direction.values()) == mixed["nsentences"]
    assert sum(b["ntokens"] for b in by_direction.values()) == mixed["ntokens"]
    msrc, mtgt = mixed["net_input"]["src_tokens"], mixed["target"]
    mixed_rows = [
        (msrc[i][msrc[i] != pad].tolist(), mtgt[i][mtgt[i] != pad].tolist()) for i in range(len(msrc))
    ]
    assert sorted(rows) == sorted(mixed_rows)


@pytest.mark.parametrize("extra", [False, True])
def test_direction_gradients_sum_to_the_mixed_batch_gradient(corpus, mined, extra):
    _, task, model, criterion = _setup(corpus, "--gradient-combiner", "sum",
                                       *(_extra_data(mined) if extra else ()))
    dataset, samples = _samples(task)
    mixed = SampledMultiDataset.collater(dataset, samples)
    loss, size, _ = criterion(model, mixed)
    loss.backward()
    joint = _flat_grad(model)
    model.zero_grad(set_to_none=True)

    by_direction = dataset.collater(samples)
    total, size_sum, log = task.train_step(by_direction, model, criterion, _Backward(), 0)
    assert task._grads.directions == list(by_direction)
    rows = _rows(task)
    assert size_sum == size
    assert_near(total, loss.detach(), 1e-5, "loss")
    assert log["ntokens"] == mixed["ntokens"]
    model.all_reduce_grads()  # what the trainer calls after the last micro-batch
    combined = _flat_grad(model)
    assert_near(combined, joint, 1e-5, "sum of the rows")
    # Each row holds its own direction's gradient, in ParameterGroups' flat order.
    groups = task._grads.groups
    for row, batch in zip(rows, by_direction.values()):
        model.zero_grad(set_to_none=True)
        criterion(model, batch)[0].backward()
        alone = groups.flatten([p.grad if p.grad is not None else torch.zeros_like(p) for p in groups.params])
        assert_near(row, alone, 1e-5, "row")


def test_update_freq_accumulates_per_direction(corpus):
    # Pre-norm adds a small group of final layer norms: the flat layout's first parameter
    # is then not the model's first one.
    _, task, model, criterion = _setup(corpus, "--gradient-combiner", "sum",
                                       "--encoder-normalize-before", "--decoder-normalize-before")
    dataset, samples = _samples(task)
    half = len(samples) // 2
    first, second = dataset.collater(samples[:half]), dataset.collater(samples[half:])
    task.train_step(first, model, criterion, _Backward(), 0)
    task.train_step(second, model, criterion, _Backward(), 0)  # same update: accumulates
    buffer = task._grads.buffer
    assert buffer.shape[0] == len(task._grads.directions)  # split batches: a row for each direction
    model.all_reduce_grads()
    accumulated = _flat_grad(model)

    model.zero_grad(set_to_none=True)
    task.train_step(dataset.collater(samples), model, criterion, _Backward(), 1)
    model.all_reduce_grads()
    assert_near(accumulated, _flat_grad(model), 1e-5, "accumulated")
    assert task._grads.buffer is buffer  # one buffer for the whole run


def test_gradvac_changes_the_update_and_reports(corpus):
    _, task, model, criterion = _setup(corpus, "--gradient-combiner", "gradvac")
    dataset, samples = _samples(task)
    task.train_step(dataset.collater(samples), model, criterion, _Backward(), 0)
    plain = _rows(task).sum(0)
    model.all_reduce_grads()
    combined = torch.cat([p.grad.reshape(-1) for p in task._grads.groups.params])
    report = task._report
    assert report.finite.item() and report.tasks == list(dataset.collater(samples))
    # phi_hat starts at 0: every conflicting pair (cos < 0) is corrected, no other.
    visited = ~torch.isnan(report.phi)
    assert torch.equal(report.corrected, visited & (report.phi < 0))
    assert report.corrected.any()
    assert (combined - plain).abs().max() > 1e-4 * plain.abs().max()  # far above rounding (~1e-7)


def test_mgda_gets_each_direction_token_count(corpus):
    """The task passes each direction's token count: MGDA's alpha is the min-norm point of
    the mean-loss gradients row_i / n_i, and the update is N sum_i alpha_i row_i / n_i."""
    _, task, model, criterion = _setup(corpus, "--gradient-combiner", "mgda",
                                       "--combine-granularity", "whole_model")
    dataset, samples = _samples(task)
    # all rows of the first direction, one in three of the others: unequal token counts
    samples = [s for i, s in enumerate(samples) if s[0] == 0 or i % 3 == 0]
    by_direction = dataset.collater(samples)
    task.train_step(by_direction, model, criterion, _Backward(), 0)
    directions = task._grads.directions
    rows = _rows(task).double()
    n = torch.tensor([by_direction[d]["ntokens"] for d in directions], dtype=torch.float64)
    assert n.max() > 2 * n.min()  # counts that differ, or the test proves nothing
    mean_grads = rows / n[:, None]
    expected_scale = n.sum()
    model.all_reduce_grads()
    alpha = task._report.weights[0].double()
    gram = mean_grads @ mean_grads.T
    ga = gram @ alpha
    assert (alpha >= 0).all() and abs(alpha.sum().item() - 1) < 1e-6
    assert ga.min() >= alpha @ ga - 1e-5 * gram.diagonal().max()  # KKT: the min-norm point
    combined = torch.cat([p.grad.reshape(-1) for p in task._grads.groups.params]).double()
    expected = expected_scale * (alpha @ mean_grads)
    assert_near(combined, expected, 1e-5, "MGDA's update")


def test_gradnorm_measures_the_last_decoder_layer_by_default(corpus):
    """--gradnorm-layer, not --combine-granularity, says where GradNorm reads the norms
    (all_matrix used to give it one LayerNorm bias of 32 entries)."""
    args, task, model, criterion = _setup(corpus, "--gradient-combiner", "gradnorm",
                                          "--combine-granularity", "all_matrix")
    assert task.combiner.layer == "decoder.layers.1"  # TINY_MODEL: 2 decoder layers
    dataset, samples = _samples(task)
    task.train_step(dataset.collater(samples), model, criterion, _Backward(), 0)
    groups = task._grads.groups
    start, stop = task.combiner.gram_columns(groups)
    layer = {n: p for n, p in model.named_parameters() if n.startswith("decoder.layers.1.")}
    assert stop - start == sum(p.numel() for p in layer.values()) > 32 * 32
    model.all_reduce_grads()
    assert task._report.finite.item()
    _, chosen, _, _ = _setup(corpus, "--gradient-combiner", "gradnorm", "--gradnorm-layer", "encoder.layers.0")
    assert chosen.combiner.layer == "encoder.layers.0"
    del args.decoder_layers  # a model without decoder layers: the layer must be named
    with pytest.raises(ValueError, match="--gradnorm-layer"):
        task._build_combiner(args)


def test_logged_metrics_have_the_right_values(corpus, tmp_path):
    """Two directions in the update: each one's loss (base 2, per token) and token count in
    direction_losses.csv are its own batch's; the console's cos_mean is the whole-model cosine
    of the two rows, 'conflicts' the share of groups where it is negative, and 'corrected'
    the share of (pair, group) visits with a negative cosine (the targets start at 0)."""
    _, task, model, criterion = _setup(corpus, "--gradient-combiner", "gradvac",
                                       "--combine-granularity", "all_matrix",
                                       "--similarity-interval", "1", "--save-dir", str(tmp_path))
    dataset, samples = _samples(task)
    samples = [s for s in samples if s[0] in (0, 1)]
    by_direction = dataset.collater(samples)
    _, _, log = task.train_step(by_direction, model, criterion, _Backward(), 0)
    rows = _rows(task).double()
    model.all_reduce_grads()
    with metrics.aggregate(new_root=True) as aggregate:
        task.reduce_metrics([log], criterion)
    logged = aggregate.get_smoothed_values()
    assert not any(k.startswith(("loss_", "ntok_", "cos_")) and k != "cos_mean" for k in logged)
    with open(tmp_path / "direction_losses.csv") as f:
        losses = {r["direction"]: r for r in csv.DictReader(f)}
    assert list(losses) == list(by_direction)
    with torch.no_grad():
        for direction, batch in by_direction.items():
            loss, _, alone = criterion(model, batch)
            assert float(losses[direction]["loss"]) == pytest.approx(
                loss.item() / batch["ntokens"] / math.log(2), abs=1e-3)
            assert int(losses[direction]["ntokens"]) == batch["ntokens"]
            assert losses[direction]["update"] == "1"
    groups = task._grads.groups
    cosines = torch.stack([
        torch.nn.functional.cosine_similarity(rows[0, o:o + n], rows[1, o:o + n], dim=0)
        for o, n in zip(groups.offsets, groups.sizes)
    ])
    assert -0.9 < cosines.mean() < 0.9 and (cosines < 0).any() and (cosines > 0).any()
    whole = torch.nn.functional.cosine_similarity(rows[0], rows[1], dim=0)
    assert logged["cos_mean"] == pytest.approx(whole.item(), abs=1e-3)
    assert logged["conflicts"] == pytest.approx((cosines < 0).double().mean().item(), abs=1e-3)
    assert logged["corrected"] == pytest.approx((cosines < 0).double().mean().item(), abs=1e-3)

def test_failed_solves_reach_the_log_line_and_solves_csv(corpus, tmp_path, monkeypatch):
    """MGDA stopped at its start (the iteration guard at 0): every group's solve fails, which
    the interval's solve_fails and SAVE_DIR/solves.csv count, update by update."""
    from fairseq_gradvac.combiners import mgda

    monkeypatch.setattr(mgda, "ITERATIONS_PER_TASK", 0)
    _, task, model, criterion = _setup(corpus, "--gradient-combiner", "mgda", "--combine-granularity",
                                       "all_layer", "--save-dir", str(tmp_path))
    dataset, samples = _samples(task)
    with metrics.aggregate(new_root=True) as aggregate:
        for update in range(2):
            _, _, log = task.train_step(dataset.collater(samples), model, criterion, _Backward(), update)
            model.all_reduce_grads()
            failed = task._report.failed_solves
            task.reduce_metrics([log], criterion)
    groups = len(task._grads.groups)
    assert 0 < failed <= groups
    with open(tmp_path / "solves.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["update"] for r in rows] == ["1", "2"] and rows[1]["failed"] == str(failed)
    assert all(int(r["groups"]) == groups and float(r["max_residual"]) > mgda.GAP_TOLERANCE for r in rows)
    assert aggregate.get_smoothed_values()["solve_fails"] == sum(int(r["failed"]) for r in rows)


@pytest.mark.parametrize("extra", [False, True])
def test_single_direction_batches_are_fairseqs_batches_of_each_direction(corpus, mined, extra):
    """--direction-batching single: over an epoch every sampled sentence lands in exactly
    one batch, every batch holds one direction (both data sets of a direction with
    --extra-data) within --max-tokens and --required-batch-size-multiple, each direction
    gets fairseq's sampled count, a batch equals fairseq's own collation of its sentences,
    and split mode keeps fairseq's batches as they were."""
    extra_args = _extra_data(mined) if extra else ()
    _, task, model, _ = _setup(corpus, "--direction-batching", "single", *extra_args)
    _, split_task, _, _ = _setup(corpus, *extra_args)
    dataset = task.datasets["train"]
    assert dataset.direction_batching == "single"
    kwargs = dict(max_tokens=300, max_sentences=None, max_positions=model.max_positions(),
                  required_batch_size_multiple=4, seed=1, epoch=1)
    batches = list(task.get_batch_iterator(dataset, **kwargs).next_epoch_itr(shuffle=True))
    sampler = list(task.get_batch_iterator(dataset, **kwargs).frozen_batches)
    split_sampler = list(split_task.get_batch_iterator(split_task.datasets["train"], **kwargs).frozen_batches)
    indices = sorted(int(i) for b in sampler for i in b)
    assert indices == list(range(len(dataset)))  # every sampled sentence once (none too long here)
    # fairseq drops the epoch's last batch if it is not a multiple of 4; single mode keeps
    # each direction's last batch
    split_indices = [int(i) for b in split_sampler for i in b]
    assert set(split_indices) <= set(indices) and len(indices) - len(split_indices) < 4
    with data_utils.numpy_seed(1):  # as fairseq's batch sampler orders them
        order = split_task.datasets["train"].ordered_indices()
    expected_split = FairseqDataset.batch_by_size(split_task.datasets["train"], order, 300, None, 4)
    assert [list(b) for b in split_sampler] == [list(b) for b in expected_split]  # stock batches
    sampled = Counter(direction_of(dataset.keys[dataset[i][0]]) for i in indices)  # fairseq's count
    got = Counter()
    for batch in batches:
        assert len(batch) == 1  # one direction
        (direction, b), = batch.items()
        got[direction] += b["nsentences"]
        assert b["nsentences"] * b["net_input"]["src_tokens"].shape[1] <= 300
    assert got == sampled and len(got) == len(task.training_directions)
    # multiples of 4 but for the remainder of a direction (with --extra-data: 3 of 5)
    assert sum(len(b) % 4 != 0 for b in sampler) == sum(n % 4 != 0 for n in got.values()) == (3 if extra else 0)
    # full batches: per direction a part-full last one and a kept remainder at most
    assert len(sampler) - len(split_sampler) <= 2 * len(got)
    # a batch is fairseq's own collation of the same sentences
    first = sampler[0]
    ours = dataset.collater([dataset[int(i)] for i in first])
    (_, b), = ours.items()
    stock = SampledMultiDataset.collater(dataset, [dataset[int(i)] for i in first])
    for key in ("src_tokens", "src_lengths", "prev_output_tokens"):
        assert torch.equal(b["net_input"][key], stock["net_input"][key])
    assert torch.equal(b["target"], stock["target"]) and b["ntokens"] == stock["ntokens"]
