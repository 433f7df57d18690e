#!/usr/bin/env python3
"""Prepare a real multi-way parallel corpus for fairseq: LibreOffice's offline help
(and optionally its interface strings), English <-> fr, cs, tr, hi by default, or any of
the ~30 languages Debian ships LibreOffice's help in (--langs; see DEBIAN_HELP_PACKAGES).

Two commands:

  prepare_libreoffice.py [libreoffice] [options]
      Fetch the Debian packages libreoffice-help-{en-us,--langs; default fr,cs,tr,hi}
      and, for extra TRAINING rows, libreoffice-l10n-{--l10n languages; default hi} with
      `apt-get download`, unpack them with `dpkg-deb -x` (nothing is installed; cached in
      --cache-dir), align paragraphs across languages by (html path, element id), clean
      and deduplicate, hold out multi-way valid/test rows FIRST (from rows translated in
      every language), remove every training row that shares a text with a held-out row
      in any language, write the raw text, then run the `encode` step below.
      Language codes are the package suffixes with '_' for '-' (zh-cn -> zh_cn), since
      fairseq splits directions on '-'.
      `--packages-dir DIR` uses an already extracted tree instead
      (DIR/usr/share/libreoffice/help/<lang>/..., DIR/usr/lib/libreoffice/program/
      resource/<lang>/LC_MESSAGES/*.mo); its content is not part of the cache stamp
      (use --force after changing it).

  prepare_libreoffice.py encode --out OUT [--langs fr,cs,tr,hi] [--vocab-size 8000]
      Generic second half, for any corpus laid out as OUT/raw/{split}.{a}-{b}.{lang}
      (used by scripts/prepare_wmt.sh): train ONE joint sentencepiece model on the
      training text of all languages, encode everything, build ONE fairseq dictionary
      and binarize every pair with fairseq-preprocess (fairseq_cli.preprocess.main,
      --srcdict/--tgtdict = that dictionary).

Output layout (read by fairseq's translation_multi_simple_epoch task):

  OUT/raw/{split}.{a}-{b}.{lang}   plain (detokenized) text, one pair of files per
                                   unordered pair; a-b in the order en fr cs tr hi (then
                                   the other languages alphabetically: ALL_LANGS).
                                   train: en-{fr,cs,tr,hi}; valid/test: those plus the
                                   zero-shot pairs fr-cs fr-tr fr-hi cs-tr cs-hi tr-hi
                                   (only the en-xx ones with --heldout-pairs english).
  OUT/tok/{split}.{a}-{b}.{lang}   the same, as sentencepiece pieces
  OUT/bin/{split}.{a}-{b}.{lang}.{bin,idx}, OUT/bin/dict.{lang}.txt (identical for all)
  OUT/spm.model, OUT/spm.vocab     the joint sentencepiece model
  OUT/langs.txt                    the --lang-dict file: en fr cs tr hi, one per line
  OUT/sizes.json                   rows per split and pair (+ tokens, filter statistics)
  OUT/stamp.json                   options of the finished run; same options -> no-op

Train with e.g.
  fairseq-train OUT/bin --task translation_multi_simple_epoch --lang-dict OUT/langs.txt \
    --lang-pairs en-fr,fr-en,en-cs,cs-en,en-tr,tr-en,en-hi,hi-en --encoder-langtok src \
    --decoder-langtok ...
and score with sacrebleu against OUT/raw/test.{a}-{b}.{tgt} after
`spm_decode --model OUT/spm.model`.
"""

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the steps: scripts/libreoffice/

from scripts.libreoffice.align import build_rows  # noqa: E402
from scripts.libreoffice.download import fetch_packages  # noqa: E402
from scripts.libreoffice.encode import encode, sizes_table  # noqa: E402
from scripts.libreoffice.extract import read_help, read_l10n  # noqa: E402
from scripts.libreoffice.holdout import select_heldout, training_pairs, write_raw  # noqa: E402
from scripts.libreoffice.languages import (  # noqa: E402
    ALL_LANGS, DEBIAN_HELP_PACKAGES, DEFAULT_LANGS, HELDOUT_PAIRS, HELP_SUBDIR, L10N_SUBDIR, SCRIPT_VERSION,
)

log = logging.getLogger("prepare_libreoffice")


def parse_langs(s):
    """Comma list -> language codes; a Debian package suffix (zh-cn) is accepted for its
    code (zh_cn)."""
    langs = [l.strip().lower().replace("-", "_") for l in s.split(",") if l.strip()]
    return langs


def check_langs(ap, option, langs):
    """Unknown languages -> a usage error naming the available ones."""
    bad = [l for l in langs if l not in ALL_LANGS]
    if bad:
        ap.error("%s: unknown language%s %s; available (Debian's libreoffice-help-* "
                 "packages, as codes): %s" % (option, "s" if len(bad) > 1 else "",
                                               ",".join(bad), ",".join(ALL_LANGS)))


def _stamp_matches(out_dir, stamp):
    p = out_dir / "stamp.json"
    try:
        return json.loads(p.read_text()) == stamp and (out_dir / "sizes.json").exists()
    except (OSError, ValueError):
        return False


def _write_stamp(out_dir, stamp):
    tmp = out_dir / "stamp.json.tmp"
    tmp.write_text(json.dumps(stamp, indent=1, sort_keys=True))
    os.replace(tmp, out_dir / "stamp.json")


def _print_done(out_dir, t0, cached):
    sizes = json.loads((out_dir / "sizes.json").read_text())
    print(sizes_table(sizes))
    if cached:
        print("%s is up to date (same options; --force to redo)" % out_dir)
    else:
        print("wrote %s in %.0fs" % (out_dir, time.time() - t0))


def add_encode_args(ap):
    ap.add_argument("--vocab-size", type=int, default=8000, help="joint sentencepiece vocabulary")
    ap.add_argument("--spm-max-lines-per-lang", type=int, default=100000,
                    help="cap on each language's lines in the sentencepiece training text")
    ap.add_argument("--character-coverage", type=float, default=0.9999)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--force", action="store_true", help="redo even if the stamp matches")


def main_libreoffice(argv):
    ap = argparse.ArgumentParser(
        prog="prepare_libreoffice.py",
        description="LibreOffice help (+ UI strings) -> multi-way fairseq data (see module doc)")
    ap.add_argument("--out", default="data/libreoffice", help="output directory")
    ap.add_argument("--langs", default=",".join(DEFAULT_LANGS),
                    help="non-English languages (default %%(default)s): any of Debian's "
                         "libreoffice-help-* packages, %s. A package with a region "
                         "is named by its code with '_' for '-' (zh-cn -> zh_cn: fairseq "
                         "splits directions on '-'); either spelling is accepted here, "
                         "files and langs.txt use the code. Written in the order %s. "
                         "valid/test rows are drawn from rows translated in ALL of them "
                         "(the more languages, the fewer such rows)" % (
                             ",".join(DEBIAN_HELP_PACKAGES), ",".join(ALL_LANGS)))
    ap.add_argument("--heldout-pairs", choices=HELDOUT_PAIRS, default="all",
                    help="which pairs get valid/test files: 'all' (default: en-xx and every "
                         "xx-yy, for zero-shot directions) or 'english' (only en-xx: with n "
                         "languages 'all' writes and binarizes n(n+1)/2 pairs). The rows "
                         "are the same multi-way rows either way")
    ap.add_argument("--cache-dir", default="data/cache/libreoffice",
                    help="where the .deb files are downloaded and unpacked")
    ap.add_argument("--packages-dir", default=None,
                    help="use this already-extracted tree (DIR/usr/share/libreoffice/help/"
                         "<lang>, DIR/usr/lib/libreoffice/program/resource/<lang>) instead "
                         "of downloading")
    ap.add_argument("--l10n", default="hi", metavar="LANGS",
                    help="also use the UI strings (libreoffice-l10n-*) of these languages as "
                         "extra TRAINING rows (never valid/test): comma list, 'all', or 'none'"
                         " (default: hi, the low-resource one; languages not in --langs "
                         "are ignored)")
    ap.add_argument("--valid-size", type=int, default=500)
    ap.add_argument("--test-size", type=int, default=1000)
    ap.add_argument("--min-words", type=int, default=3, help="drop rows whose English is shorter")
    ap.add_argument("--max-words", type=int, default=0,
                    help="drop TRAINING pairs with a side longer than this many words (0: no "
                         "limit); valid/test do not depend on it, nor on --max-train-per-pair, "
                         "--vocab-size or --l10n")
    ap.add_argument("--max-train-per-pair", type=int, default=0,
                    help="cap the training rows of each en-xx pair (seeded sample; 0: all)")
    add_encode_args(ap)
    args = ap.parse_args(argv)

    langs = parse_langs(args.langs)
    if not langs:
        ap.error("--langs: no language given")
    check_langs(ap, "--langs", langs)
    langs = [l for l in ALL_LANGS if l in langs]
    l10n_arg = args.l10n.strip()
    l10n = langs if l10n_arg == "all" else [] if l10n_arg in ("", "none") else parse_langs(l10n_arg)
    check_langs(ap, "--l10n", l10n)
    l10n = [l for l in langs if l in l10n]

    out_dir = Path(args.out)
    stamp = {"script_version": SCRIPT_VERSION, "command": "libreoffice", "langs": langs,
             "l10n": l10n,
             "packages_dir": str(Path(args.packages_dir).resolve()) if args.packages_dir else None}
    for k in ("valid_size", "test_size", "min_words", "max_words", "max_train_per_pair",
              "vocab_size", "spm_max_lines_per_lang", "character_coverage", "seed"):
        stamp[k] = getattr(args, k)
    if args.heldout_pairs != "all":  # absent by default: stamps of earlier runs stay valid
        stamp["heldout_pairs"] = args.heldout_pairs
    t0 = time.time()
    if not args.force and _stamp_matches(out_dir, stamp):
        _print_done(out_dir, t0, cached=True)
        return 0

    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("stamp.json", "sizes.json", "langs.txt", "spm.model", "spm.vocab"):
        if (out_dir / name).exists():
            (out_dir / name).unlink()
    for d in ("raw", "tok", "bin"):
        if (out_dir / d).exists():
            shutil.rmtree(out_dir / d)

    if args.packages_dir:
        root, packages = Path(args.packages_dir), None
    else:
        root, packages = fetch_packages(args.cache_dir, langs, l10n)
    help_texts = read_help(root / HELP_SUBDIR, langs, args.workers)
    stats = {}
    rows = build_rows(help_texts, langs, args.min_words, stats, "help")
    valid, test, heldout, n_pool = select_heldout(rows, langs, args.valid_size, args.test_size,
                                                  args.seed)
    stats["help"]["rows in all languages (held-out pool)"] = n_pool
    train_rows = list(rows)
    if l10n:
        ui_rows = build_rows(read_l10n(root / L10N_SUBDIR, l10n), l10n, args.min_words,
                             stats, "l10n")
        train_rows += ui_rows
    train = training_pairs(train_rows, langs, heldout, args.max_words, args.max_train_per_pair,
                           args.seed, stats.setdefault("train", {}))
    write_raw(out_dir / "raw", langs, train, valid, test, args.heldout_pairs)
    log.info("raw text written after %.1fs", time.time() - t0)

    stats = {src: dict(c) for src, c in stats.items()}
    extra = {"filtering": stats, "packages": packages,
             "source": "LibreOffice help%s (MPL-2.0)" % (" + UI strings" if l10n else "")}
    encode(out_dir, ["en"] + langs, args.vocab_size, args.workers, args.seed,
           args.spm_max_lines_per_lang, args.character_coverage, extra)
    _write_stamp(out_dir, stamp)
    _print_done(out_dir, t0, cached=False)
    return 0


def main_encode(argv):
    ap = argparse.ArgumentParser(
        prog="prepare_libreoffice.py encode",
        description="OUT/raw/{split}.{a}-{b}.{lang} -> joint sentencepiece, one shared "
                    "dictionary, fairseq binaries in OUT/bin, OUT/langs.txt, OUT/sizes.json")
    ap.add_argument("--out", required=True, help="directory holding raw/")
    ap.add_argument("--langs", default=",".join(DEFAULT_LANGS),
                    help="non-English languages in lang-dict order (en comes first)")
    add_encode_args(ap)
    args = ap.parse_args(argv)
    out_dir = Path(args.out)
    raw_dir = out_dir / "raw"
    if not raw_dir.is_dir():
        ap.error("%s does not exist" % raw_dir)
    langs = ["en"] + [l for l in parse_langs(args.langs) if l != "en"]
    inputs = sorted([p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in raw_dir.iterdir())
    stamp = {"script_version": SCRIPT_VERSION, "command": "encode", "langs": langs,
             "inputs": inputs}
    for k in ("vocab_size", "spm_max_lines_per_lang", "character_coverage", "seed"):
        stamp[k] = getattr(args, k)
    t0 = time.time()
    if not args.force and _stamp_matches(out_dir, stamp):
        _print_done(out_dir, t0, cached=True)
        return 0
    if (out_dir / "stamp.json").exists():
        (out_dir / "stamp.json").unlink()
    encode(out_dir, langs, args.vocab_size, args.workers, args.seed,
           args.spm_max_lines_per_lang, args.character_coverage)
    _write_stamp(out_dir, stamp)
    _print_done(out_dir, t0, cached=False)
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(name)s | %(message)s",
                        datefmt="%H:%M:%S")
    if not os.environ.get("PREPARE_VERBOSE"):  # fairseq logs every file it writes/reads
        for name in ("fairseq_cli.preprocess", "fairseq.data.data_utils", "fairseq.tasks"):
            logging.getLogger(name).setLevel(logging.WARNING)
    if argv[:1] == ["encode"]:
        return main_encode(argv[1:])
    if argv[:1] == ["libreoffice"]:
        argv = argv[1:]
    return main_libreoffice(argv)


if __name__ == "__main__":
    sys.exit(main())
