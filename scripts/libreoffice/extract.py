"""Step 2: the text of the help pages (paragraphs keyed by html path and element id) and of
the interface strings (.mo files), cleaned."""
import collections
import gettext
import logging
import os
import re
import unicodedata
from html.parser import HTMLParser
from multiprocessing import Pool
from pathlib import Path

from .languages import lang_dir

log = logging.getLogger("prepare_libreoffice")

CAPTURE_TAGS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "td"}
VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link",
             "meta", "param", "source", "track", "wbr"}
NO_TEXT_TAGS = {"script", "style"}


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
