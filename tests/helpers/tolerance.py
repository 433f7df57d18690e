"""Scale-aware float comparisons, the one formula every test uses.

An entry of a gradient, a Gram matrix or a combination is a long sum whose terms may cancel:
its rounding error is of the size of the largest terms, not of the entry. A per-element
relative tolerance then measures the order in which the CPU's kernels add (AVX2 and AVX-512
differ), not the code; so the error is measured against the size of the whole reference.
"""
import torch


def assert_near(actual, expected, rel=None, msg="", scale=None):
    """max |actual - expected| <= rel * scale, where scale is max |expected| unless given (the
    size of a larger whole, e.g. all of a model's parameters) and rel defaults to 64 eps of
    the less precise dtype of the two."""
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    assert actual.shape == expected.shape, f"{msg}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    if rel is None:
        rel = 64 * max(torch.finfo(t.dtype).eps if t.is_floating_point() else 0.0 for t in (actual, expected))
    actual, expected = actual.double(), expected.double()
    assert torch.isfinite(actual).all() and torch.isfinite(expected).all(), f"{msg}: not finite"
    if scale is None:
        scale = expected.abs().max().item() if expected.numel() else 0.0
    error = (actual - expected).abs().max().item() if expected.numel() else 0.0
    assert error <= rel * scale, f"{msg}: max |difference| {error:.3g} > {rel:g} x scale {scale:.3g}"
