"""ParameterGroups: grouping at each granularity, tied weights, the flat layout, and the
batched Gram matrices and weighted sums against naive per-group loops."""
import os
import sys

import pytest
import torch

from fairseq_gradvac.combiners import GRANULARITIES, ParameterGroups
from fairseq_gradvac.combiners import groups as groups_module
from fairseq_gradvac.combiners.groups import group_key
from tests.helpers.reference_algorithm1 import TinyTransformer
from tests.helpers.tolerance import assert_near


def unique_params(model):
    seen, out = set(), []
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) not in seen:
            seen.add(id(p))
            out.append((name, p))
    return out


def naive_gram(grads, groups):
    out = []
    for o, s in zip(groups.offsets, groups.sizes):
        g = grads[:, o : o + s].double()
        out.append(g @ g.T)
    return torch.stack(out)


def naive_weighted_sum(grads, weights, groups):
    out = torch.zeros(groups.numel, dtype=torch.float64)
    for k, (o, s) in enumerate(zip(groups.offsets, groups.sizes)):
        for m in range(grads.shape[0]):
            out[o : o + s] += weights[k, m].double() * grads[m, o : o + s].double()
    return out


def test_tied_parameters_are_grouped_once():
    model = TinyTransformer()
    named = list(model.named_parameters(remove_duplicate=False))
    embed = model.encoder.embed_tokens.weight
    assert sum(p is embed for _, p in named) == 3  # encoder, decoder, output projection
    for granularity in GRANULARITIES:
        groups = ParameterGroups.from_named_parameters(named, granularity)
        assert sum(p is embed for p in groups.params) == 1
        assert groups.numel == sum(p.numel() for _, p in unique_params(model))
        assert sorted(map(id, groups.params)) == sorted(id(p) for _, p in unique_params(model))
        assert groups.param_names.count("encoder.embed_tokens.weight") == 1
        assert "decoder.output_projection.weight" not in groups.param_names
        assert sum(groups.sizes) == groups.numel


def test_frozen_parameters_are_left_out():
    model = TinyTransformer()
    model.encoder.layer_norm.weight.requires_grad_(False)
    groups = ParameterGroups.from_named_parameters(model.named_parameters(), "all_matrix")
    assert "encoder.layer_norm.weight" not in groups.param_names
    assert "encoder.layer_norm.weight" not in groups.names
    with pytest.raises(ValueError):
        ParameterGroups.from_named_parameters([], "all_layer")


def test_granularities_on_a_transformer():
    model = TinyTransformer(layers=3)
    named = list(model.named_parameters(remove_duplicate=False))
    by = {g: ParameterGroups.from_named_parameters(named, g) for g in GRANULARITIES}
    assert by["whole_model"].names == ["model"]
    assert sorted(by["enc_dec"].names) == ["decoder", "encoder"]
    layers = [f"encoder.layers.{i}" for i in range(3)] + [f"decoder.layers.{i}" for i in range(3)]
    assert sorted(by["all_layer"].names) == sorted(layers + ["embeddings", "other"])
    assert by["all_layer"].names == ["embeddings"] + layers[:3] + ["other"] + layers[3:]
    # each layer group holds exactly that layer's parameters
    groups = by["all_layer"]
    for k, key in enumerate(groups.names):
        members = [n for n, o in zip(groups.param_names, groups.param_offsets) if groups.offsets[k] <= o < groups.offsets[k] + groups.sizes[k]]
        assert members and all(group_key(n, "all_layer") == key for n in members)
        if key.startswith(("encoder.layers.", "decoder.layers.")):
            assert all(n.startswith(key + ".") for n in members)
    assert group_key("decoder.layer_norm.weight", "all_layer") == "other"
    assert group_key("encoder.layers.10.fc1.weight", "all_layer") == "encoder.layers.10"
    assert group_key("encoder.layers.1.fc1.weight", "all_layer") == "encoder.layers.1"
    assert sorted(by["all_matrix"].names) == sorted(n for n, _ in unique_params(model))
    with pytest.raises(ValueError, match="all_layer"):
        ParameterGroups.from_named_parameters(named, "per_head")


def test_fairseq_transformer_all_layer():
    pytest.importorskip("fairseq")
    import argparse

    from fairseq.data import Dictionary
    from fairseq.models.transformer import TransformerModel, base_architecture

    dictionary = Dictionary()
    for i in range(20):
        dictionary.add_symbol(f"w{i}")
    args = argparse.Namespace(
        share_all_embeddings=True, encoder_layers=2, decoder_layers=3, encoder_embed_dim=16,
        encoder_ffn_embed_dim=32, encoder_attention_heads=2, decoder_attention_heads=2,
    )
    base_architecture(args)

    class Task:
        source_dictionary = target_dictionary = dictionary

    model = TransformerModel.build_model(args, Task())
    named = list(model.named_parameters(remove_duplicate=False))
    groups = ParameterGroups.from_named_parameters(named, "all_layer")
    expected = ["embeddings"] + [f"encoder.layers.{i}" for i in range(2)] + [f"decoder.layers.{i}" for i in range(3)]
    assert groups.names == expected
    assert groups.numel == sum(p.numel() for p in model.parameters())  # the tied matrix once
    assert groups.sizes[groups.index("embeddings")] == len(dictionary) * 16


@pytest.mark.parametrize("sizes", [[5, 5, 5], [3, 9, 9, 1, 17, 3], [64]])
def test_layout_and_param_views_round_trip(sizes):
    groups = ParameterGroups.from_sizes(sizes)
    assert groups.sizes == sizes  # the caller's order
    assert groups.offsets == [sum(groups.sizes[:k]) for k in range(len(sizes))]
    assert groups.numel == sum(sizes)
    model = TinyTransformer()
    groups = ParameterGroups.from_named_parameters(model.named_parameters(), "all_layer")
    flat = torch.zeros(groups.numel)
    for view, p in zip(groups.param_views(flat), groups.params):
        assert view.shape == p.shape
        view.copy_(p.detach())  # views write through to flat
    for view, p in zip(groups.param_views(flat), groups.params):
        assert torch.equal(view, p.detach())
    again = torch.cat([v.reshape(-1) for v in groups.param_views(flat)])
    assert torch.equal(again, flat)  # every entry belongs to exactly one parameter, in order
    for o, p in zip(groups.param_offsets, groups.params):
        assert torch.equal(flat[o : o + p.numel()], p.detach().reshape(-1))
    # group k is a contiguous slice holding its parameters
    for k in range(len(groups)):
        inside = [o for o in groups.param_offsets if groups.offsets[k] <= o < groups.offsets[k] + groups.sizes[k]]
        assert inside[0] == groups.offsets[k]


@pytest.mark.parametrize("sizes", [[5, 5, 5], [3, 9, 9, 1, 17, 3, 9], [40], [16, 16, 24, 24, 8, 37, 37, 4]])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("block", [None, 8])
def test_gram_and_weighted_sum_equal_naive_loops(sizes, dtype, block, monkeypatch):
    if block is not None:  # exercise every path of the blocked Gram: no block, whole blocks, tails
        monkeypatch.setattr(groups_module, "GRAM_BLOCK", block)
    groups = ParameterGroups.from_sizes(sizes)
    gen = torch.Generator().manual_seed(0)
    grads = torch.randn(4, groups.numel, generator=gen).to(dtype)
    gram = groups.gram(grads)
    assert gram.shape == (len(sizes), 4, 4) and gram.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert_near(gram.double(), naive_gram(grads, groups), tol)
    weights = torch.randn(len(sizes), 4, generator=gen)
    out = groups.weighted_sum(grads, weights)
    assert out.dtype == dtype and out.shape == (groups.numel,)
    assert_near(out.double(), naive_weighted_sum(grads, weights, groups), tol)
    buffer = torch.full((groups.numel,), float("nan"), dtype=dtype)
    assert groups.weighted_sum(grads, weights, out=buffer) is buffer
    torch.testing.assert_close(buffer, out, rtol=0, atol=0)


def test_gram_blocks_at_the_real_block_size():
    block = groups_module.GRAM_BLOCK
    groups = ParameterGroups.from_sizes([2 * block, 2 * block, 3 * block + 5, 3 * block + 5, 100, block - 1])
    grads = torch.randn(3, groups.numel, dtype=torch.float64)
    assert_near(groups.gram(grads), naive_gram(grads, groups))
    grads32 = grads.float()
    assert_near(groups.gram(grads32).double(), naive_gram(grads32, groups), 1e-5)


def test_gram_on_a_model_layout():
    groups = ParameterGroups.from_named_parameters(TinyTransformer().named_parameters(), "all_matrix")
    grads = torch.randn(3, groups.numel, dtype=torch.float64)
    assert_near(groups.gram(grads), naive_gram(grads, groups))
    weights = torch.randn(len(groups), 3, dtype=torch.float64)
    assert_near(groups.weighted_sum(grads, weights), naive_weighted_sum(grads, weights, groups))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("block", [None, 64])
def test_half_precision_gradients_use_fp32_math(dtype, block, monkeypatch):
    if block is not None:
        monkeypatch.setattr(groups_module, "GRAM_BLOCK", block)
    groups = ParameterGroups.from_sizes([300, 300, 1000])
    gen = torch.Generator().manual_seed(1)
    # large enough that squares and sums overflow fp16 (max 65504)
    grads = (torch.randn(3, groups.numel, generator=gen) * 300).to(dtype)
    exact = grads.double()
    gram = groups.gram(grads)
    assert gram.dtype == torch.float32 and torch.isfinite(gram).all()
    assert_near(gram.double(), naive_gram(exact, groups), 1e-5)
    weights = torch.tensor([[0.5, -1.25, 2.0], [1.0, 1.0, 1.0], [0.1, 0.2, 0.3]])
    out = groups.weighted_sum(grads, weights)
    assert out.dtype == dtype
    expected = naive_weighted_sum(exact, weights, groups)
    # fp32 accumulation, one rounding to the half type at the end: every entry within half an
    # ulp of itself, plus the fp32 rounding of its sum (relative to the scale: terms cancel)
    eps, fp32 = torch.finfo(dtype).eps, 16 * torch.finfo(torch.float32).eps * expected.abs().max()
    assert ((out.double() - expected).abs() <= 0.51 * eps * expected.abs() + fp32).all()
    # 2048 + 1 - 2048: a half-precision accumulator loses the 1 (its spacing at 2048 is 2 or 16)
    cancel = torch.tensor([2048.0, 1.0, -2048.0]).to(dtype)[:, None].expand(3, groups.numel).contiguous()
    assert torch.equal(groups.weighted_sum(cancel, torch.ones(3, 3)), torch.ones(groups.numel, dtype=dtype))


def test_bad_inputs():
    with pytest.raises(ValueError):
        ParameterGroups.from_sizes([3, 0])
    with pytest.raises(ValueError):
        ParameterGroups([], [])
    groups = ParameterGroups.from_sizes([3, 4])
    with pytest.raises(ValueError):
        groups.gram(torch.zeros(2, 8))
    with pytest.raises(ValueError):
        groups.gram(torch.zeros(7))
    with pytest.raises(ValueError, match="no parameter group"):
        groups.index("decoder")
    assert groups.index("group1") == 1


@pytest.mark.parametrize("shards", [2, 3, 7])
@pytest.mark.parametrize("block", [None, 8])
def test_column_ranges_add_up_to_the_whole(shards, block, monkeypatch):
    """The distributed exchange cuts the flat layout into shards that split groups anywhere:
    the shards' partial Gram matrices add up to the whole, and their weighted sums are the
    whole's columns."""
    if block is not None:
        monkeypatch.setattr(groups_module, "GRAM_BLOCK", block)
    groups = ParameterGroups.from_sizes([3, 9, 9, 1, 17, 3, 9, 40, 40])
    gen = torch.Generator().manual_seed(2)
    grads = torch.randn(5, groups.numel, generator=gen, dtype=torch.float64)
    weights = torch.randn(len(groups), 5, generator=gen, dtype=torch.float64)
    width = -(-groups.numel // shards)
    bounds = [(s * width, min((s + 1) * width, groups.numel)) for s in range(shards)]
    partial = [groups.gram(grads[:, a:b], start=a) for a, b in bounds if a < b]
    assert_near(sum(partial), naive_gram(grads, groups), 1e-12)
    pieces = [groups.weighted_sum(grads[:, a:b], weights, start=a) for a, b in bounds if a < b]
    assert_near(torch.cat(pieces), naive_weighted_sum(grads, weights, groups))
    # a range inside one group leaves every other group's Gram matrix zero
    inside = groups.gram(grads[:, 55:60], start=55)  # group 7: columns 51-90
    assert inside.abs().sum(dim=(1, 2)).nonzero().flatten().tolist() == [7]
    with pytest.raises(ValueError, match="range of those columns"):
        groups.gram(grads[:, :10], start=groups.numel - 5)
    with pytest.raises(ValueError):
        groups.gram(grads[:, :10])  # without start, the whole layout is expected


def test_flatten_and_unflatten_follow_the_parameters():
    model = TinyTransformer()
    groups = ParameterGroups.from_named_parameters(model.named_parameters(), "all_layer")
    tensors = [torch.randn_like(p) for p in groups.params]
    flat = groups.flatten(tensors)
    assert flat.shape == (groups.numel,)
    for t, back in zip(tensors, groups.unflatten(flat)):
        assert torch.equal(t, back)
    with pytest.raises(ValueError, match="expected shape"):
        groups.flatten([t.t() if t.dim() == 2 and t.shape[0] != t.shape[1] else t for t in tensors])
    with pytest.raises(ValueError):
        groups.unflatten(flat[:-1])


def test_columns_of_a_module_or_parameter():
    """The column range of decoder.layers.1 holds exactly its parameters at every granularity
    (a group of its own, several groups, or a part of one)."""
    model = TinyTransformer()
    named = dict(model.named_parameters())
    layer = [n for n in named if n.startswith("decoder.layers.1.")]
    for granularity in GRANULARITIES:
        groups = ParameterGroups.from_named_parameters(model.named_parameters(remove_duplicate=False), granularity)
        start, stop = groups.columns("decoder.layers.1")
        inside = [n for n, o in zip(groups.param_names, groups.param_offsets) if start <= o < stop]
        assert inside == layer
        assert stop - start == sum(named[n].numel() for n in layer)
        views = groups.param_views(torch.arange(groups.numel))
        assert views[groups.param_names.index(layer[0])].reshape(-1)[0].item() == start
        one = groups.columns(layer[2])
        assert one[1] - one[0] == named[layer[2]].numel()
        with pytest.raises(ValueError, match="no parameter is called 'decoder.layers.7'"):
            groups.columns("decoder.layers.7")
    # a module split by a parameter of another module between its groups
    groups = ParameterGroups(["x", "y"], [[("a.w", torch.zeros(3)), ("b.w", torch.zeros(2))],
                                          [("a.v", torch.zeros(4))]])
    with pytest.raises(ValueError, match="not contiguous"):
        groups.columns("a")
    assert groups.columns("a.v") == (5, 9)
    # a prefix is a whole name component: a.1 is not a.10
    groups = ParameterGroups(["g"], [[("a.10.w", torch.zeros(5)), ("a.1.w", torch.zeros(3)),
                                      ("a.1", torch.zeros(2))]])
    assert groups.columns("a.1") == (5, 10)
    assert groups.columns("a.10") == (0, 5)


def test_consecutive_groups_of_equal_size_make_one_run():
    """The batching the speed depends on (docs/performance.md): one batched matmul per run
    of equal-size groups, in the flat layout's or a column range's coordinates."""
    groups = ParameterGroups.from_sizes([3, 9, 9, 1, 17, 17, 17, 3])
    runs = [(r.start, r.first, r.count, r.size) for r in groups._runs(0, groups.numel)]
    assert runs == [(0, 0, 1, 3), (3, 1, 2, 9), (21, 3, 1, 1), (22, 4, 3, 17), (73, 7, 1, 3)]
    # columns [3, 30): groups 1 and 2 whole, 3 whole, 4 in part; group 0 ends at 3: no part
    runs = [(r.start, r.first, r.count, r.size) for r in groups._runs(3, 30)]
    assert runs == [(0, 1, 2, 9), (18, 3, 1, 1), (19, 4, 1, 8)]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_pieces_split_groups_anywhere_and_add_up(dtype, monkeypatch):
    """Pieces of whole small groups and column stretches of large ones (a tiny piece limit
    here) give the Gram matrices and weighted sums of the whole rows, also on a column range."""
    monkeypatch.setattr(groups_module, "GRAM_BLOCK", 8)
    monkeypatch.setattr(groups_module, "PIECE", 10 ** 6)  # pieces of 8 entries: 2 columns of K = 4
    groups = ParameterGroups.from_sizes([3, 9, 9, 1, 17, 40, 40, 5, 5, 5])
    gen = torch.Generator().manual_seed(3)
    grads = torch.randn(4, groups.numel, generator=gen).to(dtype)
    weights = torch.randn(len(groups), 4, generator=gen)
    exact = grads.double()
    assert_near(groups.gram(grads).double(), naive_gram(exact, groups), 1e-5)
    expected = naive_weighted_sum(exact, weights.double(), groups)
    eps = torch.finfo(dtype).eps
    out = groups.weighted_sum(grads, weights)
    assert ((out.double() - expected).abs() <= 0.51 * eps * expected.abs() + 1e-5 * expected.abs().max()).all()
    lo = 11  # a range that cuts groups
    part = groups.weighted_sum(grads[:, lo:], weights, start=lo)
    assert torch.equal(part, out[lo:])
    assert_near((groups.gram(grads[:, :lo], start=0) + groups.gram(grads[:, lo:], start=lo)).double(),
                naive_gram(exact, groups), 1e-5)


@pytest.mark.parametrize("k,dtype", [(8, torch.float16), (8, torch.bfloat16), (50, torch.float16),
                                     (50, torch.float32)])  # (bf16 takes fp16's path)
@pytest.mark.parametrize("granularity", ["whole_model", "all_layer"])
def test_half_precision_combination_memory_is_a_small_fixed_fraction_of_p(k, dtype, granularity, monkeypatch):
    """gram() and weighted_sum() allocate at most 1/10 of one row's bytes beyond their
    output, whatever K and the groups (before the pieces: 16 to 18 P in fp16 at K = 8, whole
    model; in fp32 at K = 50, the per-block products, K^2 / GRAM_BLOCK P: 39 P at the
    block of 64 here, 0.61 P at the real block)."""
    from benchmarks.allocations import peak_bytes

    monkeypatch.setattr(groups_module, "GRAM_BLOCK", 64)  # a small P: blocks in proportion
    layers = [40_000] * 6 + [25_000]  # six equal layers and the embeddings: P = 265,000
    sizes = layers if granularity == "all_layer" else [sum(layers)]
    groups = ParameterGroups.from_sizes(sizes)
    grads = torch.randn(k, groups.numel).to(dtype)
    weights = torch.randn(len(groups), k)
    row = groups.numel * grads.element_size()
    out = torch.empty(groups.numel, dtype=dtype)
    gram_peak, gram = peak_bytes(lambda: groups.gram(grads))
    sum_peak, _ = peak_bytes(lambda: groups.weighted_sum(grads, weights, out=out))
    assert gram.shape == (len(groups), k, k)
    assert gram_peak - gram.numel() * 4 <= 0.1 * row, (gram_peak / row, k, dtype, granularity)  # beyond the output
    assert sum_peak <= 0.1 * row, (sum_peak / row, k, dtype, granularity)
