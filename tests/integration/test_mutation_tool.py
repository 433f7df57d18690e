"""scripts/mutation_test.py makes the mutants docs/testing.md counts (no test run here)."""
import ast
import os
import sys

from scripts import mutation_test

SOURCE = '''def f(a, b):
    """A docstring with 1.5 in it is left alone."""
    if not a < b and b is None:
        return -a.amax(-1) + 2 * 0.5
    return True
'''


def test_every_operator_and_constant_is_mutated_once():
    found = [(line, description.split(":")[0]) for line, description, _ in mutation_test.mutants(SOURCE)]
    assert sorted(found) == sorted([
        (3, "And -> Or"), (3, "drop Not"), (3, "Lt -> LtE"), (3, "Lt -> Gt"), (3, "Is -> IsNot"),
        (4, "Add -> Sub"), (4, "drop USub"), (4, "Mult -> Div"), (4, ".amax -> .amin"),
        (4, "drop USub"), (4, "1 -> 2"), (4, "2 -> 3"), (4, "0.5 -> 1.0"), (5, "True -> False"),
    ])
    original = ast.dump(ast.parse(SOURCE))
    for _, description, mutated in mutation_test.mutants(SOURCE):
        assert ast.dump(ast.parse(mutated)) != original, description
        assert "1.5 in it" in mutated  # docstrings stay
