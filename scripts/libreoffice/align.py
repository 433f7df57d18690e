"""Step 3: rows aligned across languages by their key, deduplicated, with their statistics."""
import collections


def nwords(s):
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
        n = nwords(en)
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
