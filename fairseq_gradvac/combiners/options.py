"""The combiners on fairseq's command line.

Each combiner class declares its own options (``add_args``) and builds itself from the
parsed arguments (``from_args``), as fairseq's registries do; this module composes them
for the task and refuses an option given to a method that does not read it. A new method
touches only its own file and the registry.
"""
import argparse
import math
from typing import Dict, List, Sequence, Tuple

from .combiner import Combiner, available_combiners, combiner_class


def finite_float(value: str) -> float:
    """A float option that refuses nan/inf here, where argparse's error names the option."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {value!r}")
    return number


def positive_int(value: str) -> int:
    """An integer option >= 1."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value!r}")
    return number


def direction_list(value: str) -> List[str]:
    """Comma-separated directions; an empty list would silently select none."""
    directions = [d.strip() for d in value.split(",") if d.strip()]
    if not directions:
        raise argparse.ArgumentTypeError(f"{value!r} names no direction (leave it out for all)")
    return directions


def direction_weights(value: str) -> Dict[str, float]:
    """``en-hi:2,hi-en:0.5`` -> {direction: weight}, each a finite number >= 0, once."""
    weights: Dict[str, float] = {}
    for item in (part.strip() for part in value.split(",")):
        direction, sep, number = item.rpartition(":")
        try:
            weight = float(number)
        except ValueError:
            weight = math.nan
        if not sep or not direction or not math.isfinite(weight) or weight < 0:
            raise argparse.ArgumentTypeError(
                f"{item!r} is not DIRECTION:WEIGHT with a finite weight >= 0 (e.g. en-hi:2)"
            )
        if direction in weights:
            raise argparse.ArgumentTypeError(f"{direction} is weighted twice")
        weights[direction] = weight
    return weights


def _declared() -> Dict[str, Tuple[argparse.Action, List[str]]]:
    """dest -> (the option, the combiners that read it), over the registry; an option two
    methods share (GradVac's and PCGrad's --gradvac-directions) is declared by both."""
    declared: Dict[str, Tuple[argparse.Action, List[str]]] = {}
    for name in available_combiners():
        scratch = argparse.ArgumentParser(add_help=False)
        combiner_class(name).add_args(scratch)
        for action in scratch._actions:
            declared.setdefault(action.dest, (action, []))[1].append(name)
    return declared


def add_combiner_args(group) -> None:
    """Every registered combiner's options, once each, to an argparse group."""
    for action, _ in _declared().values():
        group._add_action(action)


def combiner_from_args(args: argparse.Namespace, directions: Sequence[str]) -> Combiner:
    """The combiner ``--gradient-combiner`` names, built from its options; an option of
    another method, set away from its default, is refused (it would be silently ignored)."""
    name = args.gradient_combiner
    running = {name, *combiner_class(name).wrapped(args)}
    for dest, (action, readers) in _declared().items():
        if not running & set(readers) and getattr(args, dest, action.default) != action.default:
            raise ValueError(f"{action.option_strings[0]} applies to {' and '.join(readers)}, not {name}")
    if getattr(args, "sentence_avg", False) and combiner_class(name).mean_losses:
        # their update N sum_i w_i g_i / n_i has the plain sum's scale only when fairseq
        # divides it by N tokens; --sentence-avg divides by sentences instead
        raise ValueError(
            f"{name} weighs each direction's mean loss per token and scales the update for "
            f"fairseq's division by the batch's tokens; --sentence-avg divides by sentences: "
            f"train {name} without --sentence-avg"
        )
    return combiner_class(name).from_args(args, list(directions))
