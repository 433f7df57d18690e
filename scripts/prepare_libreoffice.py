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
import collections
import gettext
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import time
import unicodedata
from html.parser import HTMLParser
from multiprocessing import Pool
from pathlib import Path

SCRIPT_VERSION = 3  # bump when the output for the same options changes
DEFAULT_LANGS = ("fr", "cs", "tr", "hi")  # the paper's Table 1 languages; English is the pivot
# Debian (bookworm) ships libreoffice-help-<package> for these besides en-us, the English
# pivot. A language's code here (and in fairseq: file names, --lang-pairs, --lang-dict) is
# the package suffix with '-' -> '_' (zh-cn -> zh_cn), because fairseq splits a direction
# such as zh_cn-en on '-'. Not every package carries help of its own: -sk is a link to the
# Czech help (refused below), and dz, km, om are only partly translated.
DEBIAN_HELP_PACKAGES = ("ca", "cs", "da", "de", "dz", "el", "en-gb", "es", "et", "eu", "fi",
                        "fr", "gl", "hi", "hu", "id", "it", "ja", "km", "ko", "nl", "om", "pl",
                        "pt", "pt-br", "ru", "sk", "sl", "sv", "tr", "vi", "zh-cn", "zh-tw")
# canonical order (language-dictionary order, a-b in file names): the default four first,
# as they always were, then the others alphabetically
ALL_LANGS = DEFAULT_LANGS + tuple(sorted(
    set(p.replace("-", "_") for p in DEBIAN_HELP_PACKAGES) - set(DEFAULT_LANGS)))
SPLITS = ("train", "valid", "test")
HELDOUT_PAIRS = ("all", "english")
HELP_SUBDIR = Path("usr/share/libreoffice/help")
L10N_SUBDIR = Path("usr/lib/libreoffice/program/resource")

CAPTURE_TAGS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "td"}
VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link",
             "meta", "param", "source", "track", "wbr"}
NO_TEXT_TAGS = {"script", "style"}

log = logging.getLogger("prepare_libreoffice")


# --------------------------------------------------------------------------------------
# text extraction
# --------------------------------------------------------------------------------------

def normalize(text):
    """NFC, one space between words, no leading/trailing space."""
    return " ".join(unicodedata.normalize("NFC", text).split())


class _HelpParser(HTMLParser):
    """Collects the plain text of p/h1..h6/li/td elements that carry an id.

    - Text goes to the innermost such element; an element that contains another one
      (e.g. a td holding paragraphs) is dropped, so nothing is counted twice.
    - LibreOffice's system/application switches are `hidden` spans, one per variant,
      that a script un-hides; inside a paragraph only the `default...` variant is kept
      (otherwise "Command" and "Ctrl" would both end up in the sentence). A paragraph
      that itself lies inside a hidden block is kept whole.
    """

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack = []  # (tag, frame or None, hides text)
        self.out = []  # (id, text)

    def handle_starttag(self, tag, attrs):
        if tag in VOID_TAGS:
            if tag == "br":
                self._text(" ")
            return
        a = dict(attrs)
        frame = None
        if tag in CAPTURE_TAGS and a.get("id"):
            outer = self._innermost_frame()
            if outer is not None:
                outer["nested"] = True
            frame = {"id": a["id"], "parts": [], "nested": False}
        hides = "hidden" in a and not (a.get("id") or "").startswith("default")
        self.stack.append((tag, frame, hides))

    def handle_startendtag(self, tag, attrs):
        if tag == "br":
            self._text(" ")

    def handle_endtag(self, tag):
        if tag in VOID_TAGS:
            return
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                break
        else:
            return  # stray end tag
        while len(self.stack) > i:
            self._pop()

    def handle_data(self, data):
        self._text(data)

    def close(self):
        super().close()
        while self.stack:
            self._pop()

    def _pop(self):
        _, frame, _ = self.stack.pop()
        if frame is not None and not frame["nested"]:
            self.out.append((frame["id"], "".join(frame["parts"])))

    def _innermost_frame(self):
        for _, frame, _ in reversed(self.stack):
            if frame is not None:
                return frame
        return None

    def _text(self, data):
        for tag, frame, hides in reversed(self.stack):
            if hides or tag in NO_TEXT_TAGS:
                return
            if frame is not None:
                frame["parts"].append(data)
                return


def clean_help_text(text):
    return normalize(text.replace("%PRODUCTNAME", "LibreOffice"))


def parse_help_file(path):
    """[(key, text)] for one html page; key = element id, '#k' added to the k-th
    repetition of an id within the page (pages embed shared sections)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        content = f.read()
    p = _HelpParser()
    p.feed(content)
    p.close()
    seen = collections.Counter()
    out = []
    for el_id, text in p.out:
        k = seen[el_id]
        seen[el_id] += 1
        out.append((el_id if k == 0 else "%s#%d" % (el_id, k), clean_help_text(text)))
    return out


def _parse_job(job):
    lang, root, rel = job
    path = os.path.join(root, rel)
    if not os.path.exists(path):
        return lang, rel, []
    return lang, rel, parse_help_file(path)


def package_name(code):
    """Debian package suffix of a language code: zh_cn -> zh-cn, en -> en-us."""
    return "en-us" if code == "en" else code.replace("_", "-")


def lang_dir(code):
    """The language's directory name inside the packages (help and l10n resources):
    en -> en-US, zh_cn -> zh-CN, pt_br -> pt-BR, fr -> fr."""
    if code == "en":
        return "en-US"
    base, _, region = code.partition("_")
    return base + ("-" + region.upper() if region else "")


def read_help(help_root, langs, workers):
    """{lang: {(relpath, key): text}} for 'en' + langs; pages listed from the English tree."""
    help_root = Path(help_root)
    dirs = {l: help_root / lang_dir(l) for l in ["en"] + langs}
    for l, d in dirs.items():
        if d.is_symlink():  # Debian's libreoffice-help-sk: sk -> cs
            raise SystemExit("the help tree for %s is a link to %s (%s): the package carries "
                             "no help of its own in that language; leave %s out" % (
                                 l, os.readlink(d), d, l))
        if not d.is_dir():
            raise SystemExit("no help tree for %s: %s" % (l, d))
    rels = sorted(str(p.relative_to(dirs["en"])) for p in dirs["en"].rglob("*.html"))
    jobs = [(l, str(d), r) for l, d in dirs.items() for r in rels]
    pages = {}
    if workers > 1:
        with Pool(workers) as pool:
            for lang, rel, items in pool.imap_unordered(_parse_job, jobs, chunksize=32):
                pages[(lang, rel)] = items
    else:
        for job in jobs:
            lang, rel, items = _parse_job(job)
            pages[(lang, rel)] = items
    texts = {l: {} for l in dirs}  # in page order, then document order
    for l in dirs:
        for rel in rels:
            for key, text in pages[(l, rel)]:
                texts[l][(rel, key)] = text
    log.info("help pages: %d; elements with text: %s", len(rels),
             ", ".join("%s %d" % (l, len(t)) for l, t in texts.items()))
    return texts


_MNEMONIC_PAREN = re.compile(r"\s*\(\s*[~_&]\w\s*\)")
_MNEMONIC = re.compile(r"[~_&](?=\w)")
_PLACEHOLDER = re.compile(r"\$\(|\$\w+\$|%\w|\{\w*\}|#\d|<\w+|\\[nt]|\t")


def clean_ui_text(s):
    """A gettext UI string as plain text, or None if it holds placeholders."""
    s = s.replace("%PRODUCTNAME", "LibreOffice")
    s = _MNEMONIC_PAREN.sub("", s)
    s = _MNEMONIC.sub("", s).replace("~", "")
    if _PLACEHOLDER.search(s):
        return None
    return normalize(s)


def read_l10n(resource_root, langs):
    """{lang: {(catalog, msgctxt+msgid): text}}, 'en' taken from the msgids."""
    resource_root = Path(resource_root)
    texts = {l: {} for l in ["en"] + langs}
    for lang in langs:
        d = resource_root / lang_dir(lang) / "LC_MESSAGES"
        if not d.is_dir():
            raise SystemExit("no l10n catalogues for %s: %s" % (lang, d))
        for mo in sorted(d.glob("*.mo")):
            with open(mo, "rb") as f:
                catalog = gettext.GNUTranslations(f)._catalog
            for msgkey, msgstr in catalog.items():
                if not isinstance(msgkey, str) or not msgkey:  # plural forms, header
                    continue
                key = (mo.name, msgkey)
                msgid = msgkey.rpartition("\x04")[2]
                if key not in texts["en"]:
                    en = clean_ui_text(msgid)
                    texts["en"][key] = en or ""
                t = clean_ui_text(msgstr)
                if t:
                    texts[lang][key] = t
    log.info("l10n strings: %s", ", ".join("%s %d" % (l, len(t)) for l, t in texts.items()))
    return texts


# --------------------------------------------------------------------------------------
# rows, held-out sets, training pairs
# --------------------------------------------------------------------------------------

def _nwords(s):
    """Words = whitespace-separated tokens holding at least one letter ("/" is no word)."""
    return sum(1 for w in s.split() if any(c.isalpha() for c in w))


def build_rows(texts, langs, min_words, stats, source):
    """Multi-way rows {lang: text} aligned by key; drops short rows and untranslated
    texts; rows deduplicated (identical in every language)."""
    rows, seen = [], set()
    st = stats.setdefault(source, collections.Counter())
    for key, en in texts["en"].items():
        if not en:
            continue
        st["english texts"] += 1
        n = _nwords(en)
        if n < min_words:
            st["dropped: english < %d words" % min_words] += 1
            continue
        row = {"en": en}
        for l in langs:
            t = texts[l].get(key)
            if not t:
                st["%s: missing" % l] += 1
                continue
            if t.casefold() == en.casefold():
                st["%s: untranslated (= english)" % l] += 1
                continue
            row[l] = t
        if len(row) == 1:
            continue
        sig = tuple(row.get(l) for l in ["en"] + langs)
        if sig in seen:
            st["duplicate rows"] += 1
            continue
        seen.add(sig)
        rows.append(row)
    st["rows kept"] = len(rows)
    return rows


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
                if max_words and max(_nwords(r["en"]), _nwords(r[l])) > max_words:
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


# --------------------------------------------------------------------------------------
# fetching packages
# --------------------------------------------------------------------------------------

def fetch_packages(cache_dir, langs, l10n_langs):
    """apt-get download + dpkg-deb -x into cache_dir/root (cached); returns the root."""
    cache_dir = Path(cache_dir).resolve()
    deb_dir = cache_dir / "debs"
    root = cache_dir / "root"
    deb_dir.mkdir(parents=True, exist_ok=True)
    wanted = ["libreoffice-help-%s" % package_name(l) for l in ["en"] + langs]
    wanted += ["libreoffice-l10n-%s" % package_name(l) for l in l10n_langs]
    debs = []
    for pkg in wanted:
        found = sorted(deb_dir.glob(pkg + "_*.deb"))
        if not found:
            log.info("apt-get download %s", pkg)
            cmd = ["apt-get", "download", pkg]
            r = subprocess.run(cmd, cwd=deb_dir, capture_output=True, text=True)
            if r.returncode != 0 and os.geteuid() == 0:
                log.info("apt-get download failed (%s); running apt-get update", r.stderr.strip())
                subprocess.run(["apt-get", "update"], check=True, capture_output=True)
                r = subprocess.run(cmd, cwd=deb_dir, capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit("apt-get download %s failed:\n%s\n(run `apt-get update`, or "
                                 "use --packages-dir)" % (pkg, r.stderr))
            found = sorted(deb_dir.glob(pkg + "_*.deb"))
        debs.append(found[-1])
    for deb in debs:
        stamp = root / ".extracted" / deb.name
        if not stamp.exists():
            log.info("dpkg-deb -x %s", deb.name)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.touch()
    return root, [d.name for d in debs]


# --------------------------------------------------------------------------------------
# encode: sentencepiece + one dictionary + fairseq-preprocess (shared with prepare_wmt.sh)
# --------------------------------------------------------------------------------------

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


def build_dictionary(sp, tok_dir, pairs, dict_path):
    """fairseq dictionary = every sentencepiece piece (no <unk>/<s>/</s>), ordered by
    frequency in the encoded training text."""
    counts = collections.Counter()
    for (a, b), splits in pairs.items():
        if "train" in splits:
            for l in (a, b):
                with open(tok_dir / ("train.%s-%s.%s" % (a, b, l)), encoding="utf-8") as f:
                    for line in f:
                        counts.update(line.split())
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())
              if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i))]
    rank = {p: i for i, p in enumerate(pieces)}
    pieces.sort(key=lambda p: (-counts[p], rank[p]))
    with open(dict_path, "w", encoding="utf-8") as f:
        for p in pieces:
            assert " " not in p
            f.write("%s %d\n" % (p, counts[p]))
    return len(pieces)


def binarize(bin_dir, tok_dir, pairs, dict_path, workers):
    """fairseq-preprocess (in this process: one fairseq import) for every pair, always
    with the one shared dictionary."""
    from fairseq import options
    from fairseq_cli import preprocess

    parser = options.get_preprocessing_parser()
    for (a, b), splits in pairs.items():
        argv = ["--source-lang", a, "--target-lang", b, "--srcdict", str(dict_path),
                "--tgtdict", str(dict_path), "--destdir", str(bin_dir),
                "--workers", str(max(1, workers))]
        for s in splits:
            argv += ["--%spref" % s, str(tok_dir / ("%s.%s-%s" % (s, a, b)))]
        args = parser.parse_args(argv)
        before = list(preprocess.logger.handlers)
        try:
            preprocess.main(args)
        finally:
            for h in preprocess.logger.handlers:
                if h not in before:
                    preprocess.logger.removeHandler(h)
                    h.close()


def verify_bin(bin_dir, pairs, langs, expected):
    """Every binarized file loads with fairseq and has as many rows as its raw file."""
    from fairseq.data import Dictionary, data_utils

    d = Dictionary.load(str(bin_dir / ("dict.%s.txt" % langs[0])))
    for (a, b), splits in pairs.items():
        for s in splits:
            for l in (a, b):
                prefix = str(bin_dir / ("%s.%s-%s.%s" % (s, a, b, l)))
                ds = data_utils.load_indexed_dataset(prefix, d)
                if ds is None or len(ds) != expected[s]["%s-%s" % (a, b)]:
                    raise SystemExit("binarized %s: %s rows, expected %d" % (
                        prefix, None if ds is None else len(ds), expected[s]["%s-%s" % (a, b)]))


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


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------

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
