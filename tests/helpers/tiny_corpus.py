"""A tiny learnable multilingual corpus, binarized for fairseq (fairseq's own test style).

Each language spells the same random "concepts" with its own words, so every direction
is a word-by-word substitution a 2-layer model learns in a few hundred updates.
"""
import os
import random
import subprocess
import sys

LANGS = ("en", "fr", "cs", "tr")


def _word(lang, concept):
    return f"{lang[0]}{concept}"


def _sentences(rng, n, concepts=40, max_len=8):
    return [[rng.randrange(concepts) for _ in range(rng.randint(2, max_len))] for _ in range(n)]


def _preprocess(*args):
    subprocess.run(
        [sys.executable, "-m", "fairseq_cli.preprocess", "--workers", "1", *args],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def build(root, langs=LANGS[:3], train_sizes=None, n_valid=20, n_test=20, seed=0):
    """Write raw text and a binarized corpus under ``root``; returns the paths.

    Training directions: en<->xx for every other language; test files also for the
    zero-shot pairs among the non-English languages. ``train_sizes`` maps a language to
    its number of training rows (default 200 each).
    """
    rng = random.Random(seed)
    raw, binary = os.path.join(root, "raw"), os.path.join(root, "bin")
    os.makedirs(raw, exist_ok=True)
    others = [l for l in langs if l != "en"]
    train_sizes = train_sizes or {}
    splits = {"valid": _sentences(rng, n_valid), "test": _sentences(rng, n_test)}
    pairs = {("en", x): ("train", "valid", "test") for x in others}
    for i, a in enumerate(others):
        for b in others[i + 1:]:
            pairs[(a, b)] = ("test",)
    every_line = []
    for (a, b), pair_splits in pairs.items():
        for split in pair_splits:
            rows = splits[split] if split != "train" else _sentences(rng, train_sizes.get(b, 200))
            for lang in (a, b):
                lines = [" ".join(_word(lang, c) for c in row) for row in rows]
                every_line += lines
                with open(os.path.join(raw, f"{split}.{a}-{b}.{lang}"), "w") as f:
                    f.write("\n".join(lines) + "\n")
    with open(os.path.join(raw, "all.txt"), "w") as f:
        f.write("\n".join(every_line) + "\n")
    _preprocess("--only-source", "--trainpref", os.path.join(raw, "all.txt"),
                "--destdir", os.path.join(root, "dict"))
    dict_path = os.path.join(root, "dict", "dict.txt")
    for (a, b), pair_splits in pairs.items():
        prefs = []
        for split in pair_splits:
            prefs += [f"--{split}pref", os.path.join(raw, f"{split}.{a}-{b}")]
        _preprocess("--source-lang", a, "--target-lang", b, *prefs, "--srcdict", dict_path,
                    "--tgtdict", dict_path, "--destdir", binary)
    lang_dict = os.path.join(root, "langs.txt")
    with open(lang_dict, "w") as f:
        f.write("\n".join(langs) + "\n")
    directions = [f"en-{x}" for x in others] + [f"{x}-en" for x in others]
    return {"bin": binary, "raw": raw, "lang_dict": lang_dict, "directions": directions,
            "zero_shot": [f"{a}-{b}" for (a, b), s in pairs.items() if s == ("test",)],
            "dict": dict_path}


def build_extra(corpus, root, directions, n=100, seed=1):
    """More training rows of ``directions`` ("en-fr", ...), binarized with ``corpus``'s
    dictionary into ``root``: a data set for ``--extra-data``."""
    rng = random.Random(seed)
    raw = os.path.join(root, "raw")
    os.makedirs(raw, exist_ok=True)
    for direction in directions:
        a, b = direction.split("-")
        rows = _sentences(rng, n)
        for lang in (a, b):
            with open(os.path.join(raw, f"train.{a}-{b}.{lang}"), "w") as f:
                f.write("\n".join(" ".join(_word(lang, c) for c in row) for row in rows) + "\n")
        _preprocess("--source-lang", a, "--target-lang", b, "--trainpref",
                    os.path.join(raw, f"train.{a}-{b}"), "--srcdict", corpus["dict"],
                    "--tgtdict", corpus["dict"], "--destdir", os.path.join(root, "bin"))
    return os.path.join(root, "bin")
