"""Step 5: one joint sentencepiece model on the training text of every language."""
import collections
import logging
import random
import re
from pathlib import Path

from .languages import SPLITS

log = logging.getLogger("prepare_libreoffice")


_RAW_RE = re.compile(r"^(train|valid|test)\.([a-z_]+)-([a-z_]+)\.([a-z_]+)$")


def discover_pairs(raw_dir):
    """{(a, b): [splits]} from raw/{split}.{a}-{b}.{lang}; checks both sides exist and
    have the same number of lines."""
    found = collections.defaultdict(set)
    for p in Path(raw_dir).iterdir():
        m = _RAW_RE.match(p.name)
        if m and m.group(4) in (m.group(2), m.group(3)):
            found[(m.group(2), m.group(3))].add(m.group(1))
    out = {}
    for (a, b), splits in sorted(found.items()):
        for s in splits:
            na = count_lines(Path(raw_dir) / ("%s.%s-%s.%s" % (s, a, b, a)))
            nb = count_lines(Path(raw_dir) / ("%s.%s-%s.%s" % (s, a, b, b)))
            if na != nb:
                raise SystemExit("%s.%s-%s: %d vs %d lines" % (s, a, b, na, nb))
        out[(a, b)] = [s for s in SPLITS if s in splits]
    return out


def count_lines(path):
    if not Path(path).exists():
        return -1
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def iter_chunks(path, size=100000):
    """Lines of a text file in lists of `size` (WMT-sized files do not fit in memory)."""
    chunk = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            chunk.append(line.rstrip("\n"))
            if len(chunk) == size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def train_spm(out_dir, raw_dir, pairs, vocab_size, max_lines_per_lang, character_coverage,
              seed, workers):
    """One joint unigram model on the training text of every language: per language a
    seeded reservoir sample of at most max_lines_per_lang lines over all its training
    files (English appears in every pair), deduplicated, so that the big languages do
    not crowd out the small ones. Streams, so it works for WMT-sized files."""
    import sentencepiece as spm

    files = collections.defaultdict(list)
    for (a, b), splits in pairs.items():
        if "train" in splits:
            for l in (a, b):
                files[l].append(raw_dir / ("train.%s-%s.%s" % (a, b, l)))
    if not files:
        raise SystemExit("no training text under %s" % raw_dir)
    spm_input = out_dir / "spm.train.txt"
    n_lines = {}
    with open(spm_input, "w", encoding="utf-8") as f:
        for l in sorted(files):
            rng = random.Random("%s-spm-%s" % (seed, l))
            sample, seen = [], 0
            for path in files[l]:
                with open(path, encoding="utf-8") as g:
                    for line in g:
                        seen += 1
                        if not max_lines_per_lang or len(sample) < max_lines_per_lang:
                            sample.append(line)
                        else:
                            j = rng.randrange(seen)
                            if j < max_lines_per_lang:
                                sample[j] = line
            lines = list(dict.fromkeys(x.rstrip("\n") for x in sample))
            n_lines[l] = len(lines)
            for line in lines:
                f.write(line + "\n")
    log.info("sentencepiece: vocab %d, training lines per language %s", vocab_size, n_lines)
    spm.SentencePieceTrainer.train(
        input=str(spm_input),
        model_prefix=str(out_dir / "spm"),
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=character_coverage,
        hard_vocab_limit=False,  # tiny corpora (tests) get a smaller vocabulary, no error
        num_threads=max(1, workers),
        input_sentence_size=2_000_000,
        shuffle_input_sentence=True,
        seed_sentencepiece_size=1_000_000,
        minloglevel=2,
    )
    spm_input.unlink()
    return n_lines
