"""Tests for scripts/prepare_libreoffice.py on a synthetic stand-in for the unpacked
LibreOffice packages (same directory layout, same kind of html and .mo files)."""

import array
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import prepare_libreoffice as P  # the command line
from scripts.libreoffice import extract, holdout, languages  # its steps
from tests.helpers import ROOT

REPO = Path(ROOT)
SCRIPT = REPO / "scripts" / "prepare_libreoffice.py"
LANGS = ["fr", "cs", "tr", "hi"]
ORDER = ["en"] + LANGS
MARK = {"fr": "é", "cs": "ř", "tr": "ş", "hi": "क", "da": "ø", "zh_cn": "中"}
WORDS = ("open the file menu and choose save copy close insert table chart cell row column "
         "page style format text frame image slide sheet formula field list").split()

N_PAGES = 3
N_PAR = 20  # 5-way paragraphs per page -> 60 multi-way rows
VALID, TEST = 5, 10


def english(page, i):
    w = [WORDS[(page * 7 + i * 3 + k) % len(WORDS)] for k in range(4 + (i % 5))]
    return "The %s number %d on page %d." % (" ".join(w), i, page)


def tr(text, lang):
    """Deterministic fake translation, different from the English."""
    return " ".join(w + MARK[lang] for w in text.split())


def twin_english(page, i):
    return "Another wording of sentence %d on page %d here." % (i, page)


def page_elements(page, lang):
    """[(id, inner html)] of one page in one language."""
    els = []
    for i in range(N_PAR):
        en = english(page, i)
        els.append(("par_id%d_%d" % (page, i), en if lang == "en" else tr(en, lang)))
        # a twin row: different English, the SAME French text as paragraph i, nothing
        # else translated. If paragraph i is held out, the twin must leave training.
        tw = twin_english(page, i)
        if lang == "en":
            els.append(("twin_id%d_%d" % (page, i), tw))
        elif lang == "fr":
            els.append(("twin_id%d_%d" % (page, i), tr(en, "fr")))
        else:
            els.append(("twin_id%d_%d" % (page, i), tw))  # untranslated
    # untranslated in fr only (fr text == English), translated elsewhere
    un = "This sentence stays untranslated in French."
    els.append(("par_untrans%d" % page, un if lang in ("en", "fr") else tr(un, lang)))
    # too short (English < 3 words)
    els.append(("hd_short%d" % page, "Two words" if lang == "en" else tr("Two words", lang)))
    # the same heading on every page (duplicate rows)
    dup = DUP
    els.append(("hd_dup%d" % page, dup if lang == "en" else tr(dup, lang)))
    dup2 = DUP2  # not translated into Hindi: never held out
    els.append(("hd_dupb%d" % page, dup2 if lang in ("en", "hi") else tr(dup2, lang)))
    # inline markup, entity, and a system switch: only the default variant is text
    sw_en = ("Press <span class=\"switchinline\"><span hidden=\"true\" id=\"MACx\" class=\"MAC\">"
             "Command</span><span hidden=\"true\" id=\"defaultx\">Ctrl</span></span> plus "
             "<span class=\"keycode\">S</span> &amp; save page %d now." % page)
    sw_plain = "Press Ctrl plus S & save page %d now." % page
    els.append(("par_switch%d" % page, sw_en if lang == "en" else tr(sw_plain, lang)))
    if lang == "hi":
        # Hindi lacks many translations in the real data: drop a few rows entirely
        els = [e for e in els if e[0] not in ("par_id%d_%d" % (page, N_PAR - 1),)]
    if lang == "fr":
        els = els[::-1]  # alignment must go by id, not by position
    return els


def write_page(path, lang, page):
    body = []
    for el_id, inner in page_elements(page, lang):
        tag = "h2" if el_id.startswith("hd_") else "p"
        body.append('<%s id="%s" class="paragraph" dir="auto">%s</%s>' % (tag, el_id, inner, tag))
    # a table cell holding a paragraph: the cell must not duplicate the paragraph text
    body.append('<table><tr><td id="cell%d"><p id="incell%d">%s</p></td></tr></table>' % (
        page, page, "Text inside a table cell %d" % page if lang == "en"
        else tr("Text inside a table cell %d" % page, lang)))
    html = ("<!DOCTYPE html><html><head><title>t</title><script>var x = 'not text';</script>"
            "</head><body><div id=\"DisplayArea\">\n%s\n<img src=\"x.svg\" alt=\"an image\">"
            "</div></body></html>" % "\n".join(body))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")


def write_mo(path, messages):
    """Minimal GNU .mo writer (what msgfmt does)."""
    messages = dict(messages)
    messages[""] = "Content-Type: text/plain; charset=UTF-8\n"
    keys = sorted(messages)
    ids = strs = b""
    offsets = []
    for k in keys:
        kb, vb = k.encode(), messages[k].encode()
        offsets.append((len(ids), len(kb), len(strs), len(vb)))
        ids += kb + b"\0"
        strs += vb + b"\0"
    keystart = 7 * 4 + 16 * len(keys)
    valuestart = keystart + len(ids)
    koffsets, voffsets = [], []
    for o1, l1, o2, l2 in offsets:
        koffsets += [l1, o1 + keystart]
        voffsets += [l2, o2 + valuestart]
    out = struct.pack("Iiiiiii", 0x950412DE, 0, len(keys), 7 * 4, 7 * 4 + len(keys) * 8, 0, 0)
    out += array.array("i", koffsets + voffsets).tobytes() + ids + strs
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out)


UI_EN = "Insert a new chart here"
DUP = "Working with the document navigator"  # the same heading on every page
DUP2 = "Printing a document on paper"


DIRS = {"en": "en-US", "zh_cn": "zh-CN"}  # as in Debian's packages


def make_packages(root, langs=LANGS):
    help_root = root / "usr/share/libreoffice/help"
    for lang in ["en"] + list(langs):
        d = help_root / DIRS.get(lang, lang)
        for page in range(N_PAGES):
            write_page(d / "text" / "shared" / ("page%d.html" % page), lang, page)
    # one page that exists only in English: no rows from it
    (help_root / "en-US/text/shared/only_en.html").write_text(
        '<html><body><p id="par_lonely">This page was never translated anywhere.</p></body></html>')
    res = root / "usr/lib/libreoffice/program/resource"
    for lang in langs:
        write_mo(res / DIRS.get(lang, lang) / "LC_MESSAGES" / "sw.mo", {
            "ctx|label\x04" + "_" + UI_EN: "(_I) " + tr(UI_EN, lang),
            "ctx2\x04Delete $(ARG1) from the list": "$(ARG1) " + tr("Delete", lang),
            "ctx3\x04Ok": tr("Ok", lang),
        })


def read(path):
    return Path(path).read_text(encoding="utf-8").splitlines()


def run(args, timeout=600, rc=0):
    r = subprocess.run([sys.executable, str(SCRIPT)] + args, cwd=REPO, capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == rc, r.stdout + r.stderr
    return r.stdout + r.stderr


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    base = tmp_path_factory.mktemp("lo")
    make_packages(base / "pkgs")
    out = base / "out"
    common = ["--packages-dir", str(base / "pkgs"), "--out", str(out), "--vocab-size", "150",
              "--valid-size", str(VALID), "--test-size", str(TEST), "--workers", "2",
              "--l10n", "all"]
    log1 = run(common)
    return {"base": base, "out": out, "common": common, "log": log1}


# ------------------------------------------------------------------------------------------


def test_parser_keeps_default_switch_and_skips_nested_and_hidden():
    p = extract._HelpParser()
    p.feed('<p id="a">Use <span class="switchinline"><span hidden="true" id="MAC1">Command'
           '</span><span hidden="true" id="default1"><b>Ctrl</b></span></span>+F<br/>now'
           ' &amp; later</p><td id="c"><p id="d">inner text</p></td>'
           '<p id="e">x<script>var y;</script>y</p><p>no id</p>')
    p.close()
    got = dict(p.out)
    assert extract.normalize(got["a"]) == "Use Ctrl+F now & later"
    assert got["d"] == "inner text"
    assert "c" not in got  # the cell only contains another captured paragraph
    assert got["e"] == "xy"
    assert len(got) == 3


def test_clean_ui_text():
    assert extract.clean_ui_text("_Insert a ~chart") == "Insert a chart"
    assert extract.clean_ui_text("प्रकार (_T)") == "प्रकार"
    assert extract.clean_ui_text("Delete $(ARG1) now") is None
    assert extract.clean_ui_text("About %PRODUCTNAME today") == "About LibreOffice today"


def test_layout_and_sizes(prepared):
    out = prepared["out"]
    assert read(out / "langs.txt") == ORDER
    assert (out / "spm.model").exists()
    sizes = json.loads((out / "sizes.json").read_text())
    train_pairs = ["en-%s" % l for l in LANGS]
    zero_shot = ["fr-cs", "fr-tr", "fr-hi", "cs-tr", "cs-hi", "tr-hi"]
    assert sorted(sizes["rows"]["train"]) == sorted(train_pairs)
    for split, n in (("valid", VALID), ("test", TEST)):
        assert sorted(sizes["rows"][split]) == sorted(train_pairs + zero_shot)
        assert set(sizes["rows"][split].values()) == {n}
    for split in ("train", "valid", "test"):
        for pair, n in sizes["rows"][split].items():
            a, b = pair.split("-")
            for l in (a, b):
                assert len(read(out / "raw" / ("%s.%s.%s" % (split, pair, l)))) == n
                assert (out / "bin" / ("%s.%s.%s.bin" % (split, pair, l))).exists()
                assert (out / "bin" / ("%s.%s.%s.idx" % (split, pair, l))).exists()
    dicts = {l: (out / "bin" / ("dict.%s.txt" % l)).read_text() for l in ORDER}
    assert len(set(dicts.values())) == 1  # one shared dictionary
    # the sizes table is printed
    assert "en-fr" in prepared["log"] and "tr-hi" in prepared["log"]


def test_alignment_and_filtering(prepared):
    raw = prepared["out"] / "raw"
    held = {l: set() for l in ORDER}
    for split in ("valid", "test"):
        en = read(raw / ("%s.en-fr.en" % split))
        for l in LANGS:
            assert read(raw / ("%s.en-%s.en" % (split, l))) == en  # multi-way
            xs = read(raw / ("%s.en-%s.%s" % (split, l, l)))
            assert xs == [tr(e, l) for e in en]  # aligned by id (fr pages are reversed)
            held[l].update(xs)
        held["en"].update(en)

    expected = {l: set() for l in LANGS}  # every (en, x) pair the data can yield
    for page in range(N_PAGES):
        for i in range(N_PAR):
            for l in LANGS:
                if not (l == "hi" and i == N_PAR - 1):
                    expected[l].add((english(page, i), tr(english(page, i), l)))
            expected["fr"].add((twin_english(page, i), tr(english(page, i), "fr")))
        sw = "Press Ctrl plus S & save page %d now." % page
        cell = "Text inside a table cell %d" % page
        un = "This sentence stays untranslated in French."
        for l in LANGS:
            expected[l].update({(sw, tr(sw, l)), (cell, tr(cell, l))})
            if l != "fr":
                expected[l].add((un, tr(un, l)))
            expected[l].add((DUP, tr(DUP, l)))
            if l != "hi":
                expected[l].add((DUP2, tr(DUP2, l)))
            expected[l].add((UI_EN, tr(UI_EN, l)))  # from the .mo files

    for l in LANGS:
        en = read(raw / ("train.en-%s.en" % l))
        xs = read(raw / ("train.en-%s.%s" % (l, l)))
        pairs = list(zip(en, xs))
        assert len(pairs) == len(set(pairs)), "duplicates left in training"
        assert set(pairs) <= expected[l], set(pairs) - expected[l]
        # nothing dropped except rows touching held-out text
        leftover = {p for p in expected[l] - set(pairs)
                    if p[0] not in held["en"] and p[1] not in held[l]}
        if l == "fr":  # twins whose French is held out are correctly gone
            leftover = {p for p in leftover if p[1] not in held["fr"]}
        assert not leftover, leftover
        assert "Two words" not in en and tr("Two words", l) not in xs
        assert all(e != x for e, x in pairs)
        assert en.count(DUP) == (0 if DUP in held["en"] else 1)
        assert en.count(DUP2) == (0 if l == "hi" else 1)
        assert "Command" not in " ".join(en)
        assert "This page was never translated anywhere." not in en
        assert not any("ARG1" in x or "Delete" in x for x in en + xs)
    # the French-untranslated sentence is still trained for the other languages
    assert "This sentence stays untranslated in French." in read(raw / "train.en-cs.en")
    assert "This sentence stays untranslated in French." not in read(raw / "train.en-fr.en")
    # twins of held-out rows are removed, the other twins stay
    fr_train = set(read(raw / "train.en-fr.en"))
    twins = [(twin_english(p, i), tr(english(p, i), "fr")) for p in range(N_PAGES) for i in range(N_PAR)]
    kept = [t for t in twins if t[0] in fr_train]
    assert len(kept) == len([t for t in twins if t[1] not in held["fr"]])
    assert len(kept) < len(twins)


def test_no_heldout_text_in_training_in_any_language(prepared):
    raw = prepared["out"] / "raw"
    held = {l: set() for l in ORDER}
    for f in raw.iterdir():
        split, _, lang = f.name.split(".")
        if split in ("valid", "test"):
            held[lang].update(holdout.heldout_key(x) for x in read(f))
    assert all(len(h) == VALID + TEST for h in held.values())
    for f in raw.glob("train.*"):
        lang = f.name.split(".")[-1]
        train = {holdout.heldout_key(x) for x in read(f)}
        assert not train & held[lang], (f.name, train & held[lang])


def test_zero_shot_files(prepared):
    raw = prepared["out"] / "raw"
    for i, a in enumerate(LANGS):
        for b in LANGS[i + 1:]:
            for split, n in (("valid", VALID), ("test", TEST)):
                xa = read(raw / ("%s.%s-%s.%s" % (split, a, b, a)))
                xb = read(raw / ("%s.%s-%s.%s" % (split, a, b, b)))
                assert xa == read(raw / ("%s.en-%s.%s" % (split, a, a)))
                assert xb == read(raw / ("%s.en-%s.%s" % (split, b, b)))
                assert len(xa) == n
            assert not (raw / ("train.%s-%s.%s" % (a, b, a))).exists()


def test_binarized_readable_with_fairseq(prepared):
    import sentencepiece as spm
    from fairseq.data import Dictionary, data_utils

    out = prepared["out"]
    d = Dictionary.load(str(out / "bin" / "dict.en.txt"))
    sp = spm.SentencePieceProcessor(model_file=str(out / "spm.model"))
    for split, pair, lang in (("train", "en-hi", "hi"), ("test", "fr-cs", "cs"),
                              ("valid", "en-fr", "en")):
        ds = data_utils.load_indexed_dataset(str(out / "bin" / ("%s.%s.%s" % (split, pair, lang))), d)
        raw = read(out / "raw" / ("%s.%s.%s" % (split, pair, lang)))
        assert len(ds) == len(raw)
        for k in (0, len(ds) - 1):
            ids = ds[k].tolist()
            assert ids[-1] == d.eos()
            assert d.unk() not in ids
            assert sp.decode([d[i] for i in ids[:-1]]) == raw[k]


def test_default_stamp_unchanged(prepared):
    """The stamp of a default run has exactly the keys it had before --heldout-pairs and
    the other languages existed, so prepared default corpora stay up to date."""
    stamp = json.loads((prepared["out"] / "stamp.json").read_text())
    assert sorted(stamp) == sorted([
        "script_version", "command", "langs", "l10n", "packages_dir", "valid_size",
        "test_size", "min_words", "max_words", "max_train_per_pair", "vocab_size",
        "spm_max_lines_per_lang", "character_coverage", "seed"])
    assert stamp["script_version"] == 3 and stamp["langs"] == LANGS


def test_language_codes():
    assert languages.ALL_LANGS[:4] == ("fr", "cs", "tr", "hi")
    assert len(set(languages.ALL_LANGS)) == len(languages.ALL_LANGS) == len(languages.DEBIAN_HELP_PACKAGES)
    assert all("-" not in l for l in languages.ALL_LANGS)  # fairseq splits directions on '-'
    assert {"zh_cn", "zh_tw", "pt_br", "en_gb", "ja", "de"} <= set(languages.ALL_LANGS)
    assert P.parse_langs("zh-CN, fr,pt_br") == ["zh_cn", "fr", "pt_br"]
    assert [languages.lang_dir(l) for l in ("en", "fr", "zh_cn", "pt_br")] == ["en-US", "fr", "zh-CN", "pt-BR"]
    assert [languages.package_name(l) for l in ("en", "zh_cn", "de")] == ["en-us", "zh-cn", "de"]


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """A tree with more languages: Danish and Simplified Chinese (package zh-cn,
    directory zh-CN), and sk -> cs as in Debian's libreoffice-help-sk."""
    base = tmp_path_factory.mktemp("wide")
    make_packages(base / "pkgs", LANGS + ["da", "zh_cn"])
    (base / "pkgs/usr/share/libreoffice/help/sk").symlink_to("cs")
    common = ["--packages-dir", str(base / "pkgs"), "--vocab-size", "200",
              "--valid-size", str(VALID), "--test-size", str(TEST), "--workers", "1"]
    return {"base": base, "common": common}


def test_hyphenated_language_and_english_heldout_pairs(wide):
    base, common = wide["base"], wide["common"]
    eng, full = base / "eng", base / "full"
    log = run(common + ["--out", str(eng), "--langs", "zh-cn,da,fr", "--l10n", "zh_cn",
                        "--heldout-pairs", "english"])
    assert "en-zh_cn" in log
    langs = ["fr", "da", "zh_cn"]  # canonical order: the default four first, then a-z
    assert read(eng / "langs.txt") == ["en"] + langs
    sizes = json.loads((eng / "sizes.json").read_text())
    en_pairs = ["en-fr", "en-da", "en-zh_cn"]
    assert sorted(sizes["rows"]["train"]) == sorted(en_pairs)
    for split, n in (("valid", VALID), ("test", TEST)):
        assert sorted(sizes["rows"][split]) == sorted(en_pairs)  # no fr-da, fr-zh_cn, ...
        assert set(sizes["rows"][split].values()) == {n}
    raw = eng / "raw"
    assert sorted(f.name for f in raw.iterdir() if not f.name.startswith("train.")) == sorted(
        "%s.%s.%s" % (s, p, l) for s in ("valid", "test") for p in en_pairs for l in p.split("-"))
    assert not list((eng / "bin").glob("*.fr-da.*"))
    for split in ("valid", "test"):  # still multi-way: the same rows in every language
        en = read(raw / ("%s.en-fr.en" % split))
        for l in langs:
            assert read(raw / ("%s.en-%s.en" % (split, l))) == en
            assert read(raw / ("%s.en-%s.%s" % (split, l, l))) == [tr(e, l) for e in en]
    # the zh-CN help and l10n trees were read: aligned text, UI string as extra training
    pairs = set(zip(read(raw / "train.en-zh_cn.en"), read(raw / "train.en-zh_cn.zh_cn")))
    assert (UI_EN, tr(UI_EN, "zh_cn")) in pairs
    assert len(pairs) > 2 * N_PAR and all(x == tr(e, "zh_cn") for e, x in pairs)
    assert not any(UI_EN in x for x in read(raw / "train.en-da.en"))  # l10n only for zh_cn
    stamp = json.loads((eng / "stamp.json").read_text())
    assert stamp["langs"] == langs and stamp["heldout_pairs"] == "english"

    # the default, every pair: the same held-out rows, plus the pairs without English
    run(common + ["--out", str(full), "--langs", "fr,da,zh_cn", "--l10n", "zh-cn"])
    fsizes = json.loads((full / "sizes.json").read_text())
    for split in ("valid", "test"):
        assert sorted(fsizes["rows"][split]) == sorted(en_pairs + ["fr-da", "fr-zh_cn", "da-zh_cn"])
        for p in en_pairs:
            for l in p.split("-"):
                name = "%s.%s.%s" % (split, p, l)
                assert read(full / "raw" / name) == read(raw / name)
        assert read(full / "raw" / ("%s.da-zh_cn.zh_cn" % split)) == read(
            raw / ("%s.en-zh_cn.zh_cn" % split))
    assert (full / "bin" / "test.da-zh_cn.zh_cn.bin").exists()
    assert fsizes["rows"]["train"] == sizes["rows"]["train"]
    assert "heldout_pairs" not in json.loads((full / "stamp.json").read_text())
    # a changed --heldout-pairs is not taken for the prepared corpus
    assert "up to date" not in run(common + ["--out", str(full), "--langs", "fr,da,zh_cn",
                                             "--l10n", "zh_cn", "--heldout-pairs", "english"])
    assert not (full / "raw" / "test.fr-da.fr").exists()


def test_unknown_language_and_linked_help_tree(wide):
    base, common = wide["base"], wide["common"]
    out = base / "bad"
    err = run(common + ["--out", str(out), "--langs", "fr,xx"], rc=2)
    assert "unknown language xx" in err
    assert "zh_cn" in err and "pt_br" in err and "fr,cs,tr,hi" in err  # the available ones
    err = run(common + ["--out", str(out), "--langs", "fr", "--l10n", "fr,klingon"], rc=2)
    assert "--l10n" in err and "unknown language klingon" in err
    err = run(common + ["--out", str(out), "--langs", "fr", "--heldout-pairs", "some"], rc=2)
    assert "--heldout-pairs" in err
    # Debian's libreoffice-help-sk only links sk -> cs: Czech text labelled Slovak
    err = run(common + ["--out", str(out), "--langs", "fr,sk"], rc=1)
    assert "sk is a link to cs" in err
    assert not (out / "raw").exists()


def test_second_run_is_noop(prepared):
    out = prepared["out"]
    files = sorted(p for p in out.rglob("*") if p.is_file())
    before = {p: p.stat().st_mtime_ns for p in files}
    log2 = run(prepared["common"])
    assert "up to date" in log2
    assert "sentencepiece" not in log2  # nothing retrained
    assert {p: p.stat().st_mtime_ns for p in files} == before
    assert sorted(p for p in out.rglob("*") if p.is_file()) == files


def test_shrink_options_and_encode_subcommand(prepared):
    base = prepared["base"]
    out = base / "small"
    run(["--packages-dir", str(base / "pkgs"), "--out", str(out), "--vocab-size", "120",
         "--valid-size", "3", "--test-size", "4", "--langs", "hi,fr", "--l10n", "none",
         "--max-words", "10", "--max-train-per-pair", "7", "--workers", "1"])
    sizes = json.loads((out / "sizes.json").read_text())
    assert read(out / "langs.txt") == ["en", "fr", "hi"]
    assert sizes["rows"]["train"] == {"en-fr": 7, "en-hi": 7}
    assert sizes["rows"]["test"] == {"en-fr": 4, "en-hi": 4, "fr-hi": 4}
    for f in (out / "raw").glob("train.*"):
        assert all(len(x.split()) <= 10 for x in read(f))
    # held-out rows do not depend on --max-words / --max-train-per-pair / --vocab-size
    same = base / "same"
    run(["--packages-dir", str(base / "pkgs"), "--out", str(same), "--vocab-size", "110",
         "--valid-size", "3", "--test-size", "4", "--langs", "hi,fr", "--l10n", "none",
         "--workers", "1"])
    heldout_files = list((out / "raw").glob("[vt][ae]*"))  # valid.*, test.*
    assert len(heldout_files) == 2 * 3 * 2
    for f in heldout_files:
        assert read(f) == read(same / "raw" / f.name)
    assert any(len(x.split()) > 10 for f in heldout_files for x in read(f))
    assert any(len(x.split()) > 10 for x in read(same / "raw" / "train.en-fr.fr"))
    assert not any(UI_EN in x for x in read(out / "raw" / "train.en-hi.en"))

    # `encode` on plain text files (what prepare_wmt.sh uses)
    enc = base / "enc"
    (enc / "raw").mkdir(parents=True)
    for f in (out / "raw").iterdir():
        (enc / "raw" / f.name).write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
    run(["encode", "--out", str(enc), "--langs", "fr,hi", "--vocab-size", "120", "--workers", "1"])
    assert json.loads((enc / "sizes.json").read_text())["rows"] == sizes["rows"]
    assert (enc / "bin" / "test.fr-hi.hi.bin").exists()
    assert "up to date" in run(["encode", "--out", str(enc), "--langs", "fr,hi",
                                "--vocab-size", "120", "--workers", "1"])


FAKE_SACREBLEU = """#!/usr/bin/env python3
# stands in for `sacrebleu -t SET -l PAIR --echo src|ref` (no internet in tests)
import sys
a = sys.argv
s, pair, side = a[a.index("-t") + 1], a[a.index("-l") + 1], a[a.index("--echo") + 1]
lang = pair.split("-")[0 if side == "src" else 1]
for i in range(6):
    w = "sentence %d of %s in %s" % (i, s.replace("wmt", "news"), lang)
    print(w if lang == "en" else " ".join(x + lang for x in w.split()))
"""


def test_prepare_wmt_script(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "sacrebleu").write_text(FAKE_SACREBLEU)
    (bindir / "sacrebleu").chmod(0o755)
    train = tmp_path / "train"
    train.mkdir()
    for l in ("fr", "cs", "hi"):  # no tr: that pair is skipped
        en = ["the %s training sentence number %d" % (l, i) for i in range(40)]
        en[3] = ""  # empty side: dropped
        (train / ("train.en-%s.en" % l)).write_text("\n".join(en) + "\n")
        (train / ("train.en-%s.%s" % (l, l))).write_text(
            "\n".join(" ".join(w + l for w in e.split()) for e in en) + "\n")
    out = tmp_path / "wmt"
    env = dict(os.environ, PATH="%s:%s" % (bindir, os.environ["PATH"]), VOCAB="100",
               HI_DEV="5", WORKERS="1", PYTHON=sys.executable)
    r = subprocess.run(["bash", str(REPO / "scripts" / "prepare_wmt.sh"), str(train), str(out)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "skip en-tr" in r.stderr
    sizes = json.loads((out / "sizes.json").read_text())
    assert sizes["langs"] == ["en", "fr", "cs", "hi"]
    assert read(out / "langs.txt") == ["en", "fr", "cs", "hi"]
    assert sizes["rows"]["train"] == {"en-fr": 39, "en-cs": 39, "en-hi": 34}
    assert sizes["rows"]["test"] == {"en-fr": 6, "en-cs": 6, "en-hi": 6, "fr-cs": 6}
    assert sizes["rows"]["valid"] == {"en-fr": 6, "en-cs": 6, "en-hi": 5, "fr-cs": 6}
    assert read(out / "raw" / "test.en-fr.en")[0] == "sentence 0 of news14 in en"
    assert read(out / "raw" / "test.fr-cs.cs")[0] == "sentencecs 0cs ofcs news13cs incs cscs"
    assert read(out / "raw" / "valid.en-hi.en")[-1] == "the hi training sentence number 39"
    assert "the hi training sentence number 39" not in read(out / "raw" / "train.en-hi.en")
    for f in ("train.en-hi.hi", "valid.fr-cs.fr", "test.fr-cs.cs"):
        assert (out / "bin" / (f + ".bin")).exists()
    # second run: raw files unchanged -> encode is a no-op
    r = subprocess.run(["bash", str(REPO / "scripts" / "prepare_wmt.sh"), str(train), str(out)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "up to date" in r.stdout, r.stdout + r.stderr
