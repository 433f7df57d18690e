"""Steps 5 and 6 for any corpus laid out as OUT/raw/{split}.{a}-{b}.{lang} (also
scripts/prepare_wmt.sh's): sentencepiece, encoding, dictionary, binarization, sizes."""
import collections
import json
import logging
import shutil
import time
from pathlib import Path

from .binarize import binarize, build_dictionary, verify_bin
from .holdout import write_lines
from .languages import SPLITS
from .spm import discover_pairs, iter_chunks, train_spm

log = logging.getLogger("prepare_libreoffice")


def encode(out_dir, langs, vocab_size=8000, workers=2, seed=1, spm_max_lines_per_lang=100000,
           character_coverage=0.9999, extra_sizes=None):
    """raw/ -> spm.model, tok/, bin/, langs.txt, sizes.json. Returns the sizes dict."""
    out_dir = Path(out_dir)
    raw_dir, tok_dir, bin_dir = out_dir / "raw", out_dir / "tok", out_dir / "bin"
    for d in (tok_dir, bin_dir):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    pairs = discover_pairs(raw_dir)
    order = ["en"] + [l for l in langs if l != "en"]
    for (a, b) in pairs:
        for l in (a, b):
            if l not in order:
                raise SystemExit("raw/ has language %r that is not in --langs %s" % (l, order))
    t0 = time.time()
    spm_lines = train_spm(out_dir, raw_dir, pairs, vocab_size, spm_max_lines_per_lang,
                          character_coverage, seed, workers)
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(out_dir / "spm.model"))
    log.info("sentencepiece trained in %.1fs (%d pieces)", time.time() - t0, sp.get_piece_size())

    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    sizes = {s: {} for s in SPLITS}
    tokens = {s: {} for s in SPLITS}
    unk = collections.Counter()
    for (a, b), splits in pairs.items():
        for s in splits:
            name = "%s-%s" % (a, b)
            for l in (a, b):
                n_lines = n_tokens = 0
                with open(tok_dir / ("%s.%s.%s" % (s, name, l)), "w", encoding="utf-8") as f:
                    for lines in iter_chunks(raw_dir / ("%s.%s.%s" % (s, name, l))):
                        enc = sp.encode(lines, out_type=int, num_threads=max(1, workers))
                        unk[l] += sum(x.count(sp.unk_id()) for x in enc)
                        n_lines += len(enc)
                        n_tokens += sum(len(x) for x in enc)
                        for x in enc:
                            f.write(" ".join(pieces[i] for i in x) + "\n")
                tokens[s].setdefault(name, {})[l] = n_tokens
                sizes[s][name] = n_lines
    dict_path = out_dir / "dict.txt"
    n_dict = build_dictionary(sp, tok_dir, pairs, dict_path)
    t1 = time.time()
    binarize(bin_dir, tok_dir, pairs, dict_path, workers)
    for l in order:
        shutil.copyfile(dict_path, bin_dir / ("dict.%s.txt" % l))
    dict_path.unlink()
    verify_bin(bin_dir, pairs, order, sizes)
    log.info("binarized in %.1fs", time.time() - t1)
    write_lines(out_dir / "langs.txt", order)
    result = {
        "langs": order,
        "rows": {s: sizes[s] for s in SPLITS if sizes[s]},
        "tokens": {s: tokens[s] for s in SPLITS if tokens[s]},
        "spm": {"vocab_size_requested": vocab_size, "pieces": sp.get_piece_size(),
                "dictionary_entries": n_dict, "training_lines_per_lang": spm_lines,
                "unk_pieces_per_lang": dict(unk)},
    }
    if extra_sizes:
        result.update(extra_sizes)
    with open(out_dir / "sizes.json", "w") as f:
        json.dump(result, f, indent=1, ensure_ascii=False)
    return result


def sizes_table(sizes):
    rows = sizes["rows"]
    names = sorted({n for s in rows.values() for n in s},
                   key=lambda n: (not n.startswith("en-"), [sizes["langs"].index(x) for x in n.split("-")]))
    splits = [s for s in SPLITS if s in rows]
    lines = ["%-8s" % "pair" + "".join("%10s" % s for s in splits)]
    for n in names:
        lines.append("%-8s" % n + "".join("%10s" % rows[s].get(n, "-") for s in splits))
    return "\n".join(lines)
