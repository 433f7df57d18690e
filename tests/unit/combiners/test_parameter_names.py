"""fairseq's parameter names read one way by every grouping: the combiners' layers and
embeddings, the similarity records' aggregates, the figures' layer axis."""
from fairseq_gradvac.analysis.records import layer_groups
from fairseq_gradvac.combiners.groups import group_key
from fairseq_gradvac.combiners.parameter_names import layer_name, layer_of, parse_layer
from fairseq_gradvac.gradients.similarity import aggregates_of

NAMES = {  # name: (all_layer group, similarity aggregates besides "model")
    "encoder.embed_tokens.weight": ("embeddings", []),
    "encoder.embed_positions.weight": ("embeddings", []),
    "decoder.layernorm_embedding.weight": ("embeddings", []),
    "decoder.output_projection.weight": ("embeddings", []),
    "decoder.embed_out": ("embeddings", []),  # fairseq's untied output embedding
    "encoder.layers.0.fc1.weight": ("encoder.layers.0", ["encoder_layers"]),
    "decoder.layers.11.encoder_attn.k_proj.bias": ("decoder.layers.11", ["decoder_layers"]),
    "decoder.layer_norm.weight": ("other", ["decoder_layers"]),
}


def test_every_grouping_reads_a_name_the_same_way():
    for name, (group, aggregates) in NAMES.items():
        assert group_key(name, "all_layer") == group, name
        assert aggregates_of(name) == ["model"] + aggregates, name
        assert group_key(name, "enc_dec") == name.split(".")[0]


def test_layers_by_name():
    assert layer_of("module.encoder.layers.3.fc2.weight") == "encoder.layers.3"  # under a wrapper
    assert layer_of("encoder.layer_norm.weight") is None
    assert parse_layer(layer_name("decoder", 5)) == ("decoder", 5)
    assert parse_layer("decoder.layers.5.fc1") is None and parse_layer("decoder_layers") is None
    series = {(g, ("en-fr", "fr-en")): {} for g in ("decoder.layers.1", "encoder.layers.10",
                                                    "encoder.layers.2", "model", "embeddings")}
    assert layer_groups(series) == [("encoder", 2, "encoder.layers.2"), ("encoder", 10, "encoder.layers.10"),
                                    ("decoder", 1, "decoder.layers.1")]
