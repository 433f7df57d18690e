"""Step 4: the multi-way valid/test rows held out FIRST, every training row sharing a text
with them removed, the training pairs, the raw text files."""
import logging
import random

from .align import nwords

log = logging.getLogger("prepare_libreoffice")


def heldout_key(text):
    """What counts as 'the same text' for the leakage check (case and spacing ignored)."""
    return " ".join(text.casefold().split())


def select_heldout(rows, langs, n_valid, n_test, seed):
    """Test then valid rows, drawn from rows translated in ALL languages; no two
    held-out rows share a text in any language (so valid and test are disjoint too)."""
    all_langs = ["en"] + langs
    pool = [r for r in rows if all(l in r for l in all_langs)]
    rng = random.Random(seed)
    rng.shuffle(pool)
    used = {l: set() for l in all_langs}
    test, valid = [], []
    for r in pool:
        if len(test) < n_test:
            target = test
        elif len(valid) < n_valid:
            target = valid
        else:
            break
        keys = {l: heldout_key(r[l]) for l in all_langs}
        if any(keys[l] in used[l] for l in all_langs):
            continue
        target.append(r)
        for l in all_langs:
            used[l].add(keys[l])
    if len(test) < n_test or len(valid) < n_valid:
        log.warning("only %d multi-way rows: test %d/%d, valid %d/%d", len(pool),
                    len(test), n_test, len(valid), n_valid)
    return valid, test, used, len(pool)


def training_pairs(rows, langs, heldout, max_words, max_per_pair, seed, stats):
    """{lang: [(en, x)]}: rows sharing ANY text with a held-out row (in that language)
    are removed whole; pairs with a side over max_words words dropped; pairs
    deduplicated; optionally capped (seeded sample)."""
    kept = []
    removed = 0
    for r in rows:
        if any(heldout_key(t) in heldout[l] for l, t in r.items()):
            removed += 1
            continue
        kept.append(r)
    stats["rows removed (share a text with valid/test)"] = removed
    pairs = {}
    for l in langs:
        seen, out = set(), []
        for r in kept:
            if l in r:
                if max_words and max(nwords(r["en"]), nwords(r[l])) > max_words:
                    stats["en-%s: pairs > %d words" % (l, max_words)] = \
                        stats.get("en-%s: pairs > %d words" % (l, max_words), 0) + 1
                    continue
                p = (r["en"], r[l])
                if p not in seen:
                    seen.add(p)
                    out.append(p)
        if max_per_pair and len(out) > max_per_pair:
            idx = sorted(random.Random("%s-%s" % (seed, l)).sample(range(len(out)), max_per_pair))
            out = [out[i] for i in idx]
        pairs[l] = out
    return pairs


def write_lines(path, lines):
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            assert "\n" not in line
            f.write(line + "\n")


def heldout_pair_names(langs, heldout_pairs="all"):
    """The (a, b) pairs that get valid/test files: every pair of 'en' + langs (in that
    order), or with 'english' only the en-xx ones. The rows are the same multi-way rows
    either way."""
    order = ["en"] + langs
    if heldout_pairs == "english":
        return [("en", l) for l in langs]
    return [(a, b) for i, a in enumerate(order) for b in order[i + 1:]]


def write_raw(raw_dir, langs, train, valid, test, heldout_pairs="all"):
    raw_dir.mkdir(parents=True, exist_ok=True)
    for l, prs in train.items():
        write_lines(raw_dir / ("train.en-%s.en" % l), [p[0] for p in prs])
        write_lines(raw_dir / ("train.en-%s.%s" % (l, l)), [p[1] for p in prs])
    for split, rows in (("valid", valid), ("test", test)):
        for a, b in heldout_pair_names(langs, heldout_pairs):
            for l in (a, b):
                write_lines(raw_dir / ("%s.%s-%s.%s" % (split, a, b, l)), [r[l] for r in rows])
