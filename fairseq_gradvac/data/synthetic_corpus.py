"""A synthetic multilingual corpus with many directions, binarized for fairseq in seconds.

English and L other languages, en-xx and xx-en for each: K = 2 L directions (50 at
L = 25, 200 at L = 100), for tests and benchmarks of scale in K. Every language spells the
same random "concepts" with its own permutation of one small shared vocabulary, so each
direction is a word-by-word substitution a small model can learn, and the vocabulary stays
tiny whatever L. Rows per pair fall off geometrically (imbalanced like real data). The
binary files are written with fairseq's own dataset builder (no fairseq-preprocess per
pair, which would take a second or two each).

    python -m fairseq_gradvac.data.synthetic_corpus OUT --directions 50
"""
import argparse
import os
import random

import torch

WORDS = 64  # the shared vocabulary: w0 .. w63


def language(i: int) -> str:
    return f"l{i:03d}"


def build(root: str, directions: int = 50, rows: int = 200, min_rows: int = 20, n_valid: int = 10,
          min_len: int = 3, max_len: int = 12, vocab: int = 0, seed: int = 0) -> dict:
    """Write ``root``/bin (fairseq's binary files and dictionaries) and ``root``/langs.txt.

    ``directions`` must be even (en-xx and xx-en per language); the first pair gets ``rows``
    training rows, the last ``min_rows``; ``vocab`` pads the dictionary with unused words to
    that size (a benchmark's model shape). Returns the paths and the directions, as
    tests/tiny_corpus.build does."""
    from fairseq.data import Dictionary, indexed_dataset

    if directions < 2 or directions % 2:
        raise ValueError(f"--directions must be even and at least 2 (en-xx and xx-en), got {directions}")
    rng = random.Random(seed)
    others = [language(i) for i in range(directions // 2)]
    langs = ["en"] + others
    binary = os.path.join(root, "bin")
    os.makedirs(binary, exist_ok=True)
    dictionary = Dictionary()
    for w in range(WORDS):
        dictionary.add_symbol(f"w{w}")
    for u in range(max(0, vocab - len(dictionary) - len(langs))):  # (+ fairseq's language tokens)
        dictionary.add_symbol(f"u{u}")
    for lang in langs:
        dictionary.save(os.path.join(binary, f"dict.{lang}.txt"))
    perm = {lang: list(range(WORDS)) for lang in langs}
    for lang in others:
        rng.shuffle(perm[lang])
    decay = (min_rows / rows) ** (1 / max(1, len(others) - 1))

    def write(prefix, lang, sentences):
        builder = indexed_dataset.make_builder(prefix + ".bin", impl="mmap", vocab_size=len(dictionary))
        for concepts in sentences:
            ids = [dictionary.index(f"w{perm[lang][c]}") for c in concepts] + [dictionary.eos()]
            builder.add_item(torch.IntTensor(ids))
        builder.finalize(prefix + ".idx")

    for i, x in enumerate(others):
        n = max(min_rows, round(rows * decay ** i))
        for split, count in (("train", n), ("valid", n_valid)):
            sentences = [[rng.randrange(WORDS) for _ in range(rng.randint(min_len, max_len))]
                         for _ in range(count)]
            for lang in ("en", x):
                write(os.path.join(binary, f"{split}.en-{x}.{lang}"), lang, sentences)
    lang_dict = os.path.join(root, "langs.txt")
    with open(lang_dict, "w") as f:
        f.write("\n".join(langs) + "\n")
    pairs = [f"en-{x}" for x in others] + [f"{x}-en" for x in others]
    return {"bin": binary, "lang_dict": lang_dict, "directions": pairs,
            "dict": os.path.join(binary, "dict.en.txt")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="output folder (bin/ and langs.txt are written there)")
    parser.add_argument("--directions", type=int, default=50, help="K, even: en-xx and xx-en per language")
    parser.add_argument("--rows", type=int, default=200, help="training rows of the largest pair")
    parser.add_argument("--min-rows", type=int, default=20, help="training rows of the smallest pair")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    corpus = build(args.out, args.directions, args.rows, args.min_rows, seed=args.seed)
    print(f"{len(corpus['directions'])} directions in {corpus['bin']}; --lang-dict {corpus['lang_dict']}")
    print("--lang-pairs " + ",".join(corpus["directions"]))


if __name__ == "__main__":
    main()
