"""fairseq's parameter names, read in one place.

fairseq 0.12's transformer names its parameters ``encoder.layers.N.*``,
``decoder.layers.N.*``, ``encoder.embed_tokens.*``, ``decoder.output_projection.*`` (or
``decoder.embed_out`` untied), ``*.layernorm_embedding.*``, ``*.layer_norm.*``. Every
grouping the plugin makes reads names through these functions: the combiners'
granularities (groups.py), the similarity records' aggregates (gradients/similarity.py),
the layer axis of the figures and conflict tables (analysis/records.py) and GradNorm's
default layer; another architecture's names need a change here only.
"""
import re
from typing import Optional, Tuple

SIDES = ("encoder", "decoder")
# embed_tokens, embed_positions, layernorm_embedding, embed_out; output_projection
_EMBEDDING = ("embed", "output_projection")
# a layer's parameters, also under a wrapper's prefix (e.g. "module.")
_IN_LAYER = re.compile(r"^(?:.*\.)?((encoder|decoder)\.layers\.(\d+))\.")
_LAYER = re.compile(r"^(encoder|decoder)\.layers\.(\d+)$")


def side_of(name: str) -> Optional[str]:
    """"encoder" or "decoder" for a parameter of that side, else None."""
    top = name.split(".", 1)[0]
    return top if top in SIDES else None


def layer_of(name: str) -> Optional[str]:
    """The layer (e.g. ``decoder.layers.5``) parameter ``name`` belongs to, or None."""
    m = _IN_LAYER.match(name)
    return m.group(1) if m else None


def is_embedding(name: str) -> bool:
    """Whether ``name`` is an input or output embedding (or their layer norm)."""
    return any(part in name for part in _EMBEDDING)


def layer_name(side: str, index: int) -> str:
    return f"{side}.layers.{index}"


def parse_layer(group: str) -> Optional[Tuple[str, int]]:
    """(side, index) of a layer's name such as ``encoder.layers.3``, else None."""
    m = _LAYER.match(group)
    return (m.group(1), int(m.group(2))) if m else None
