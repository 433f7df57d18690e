"""The off-target rate of a translation direction: the share of hypotheses written in another
language than the target, what the zero-shot literature reports next to BLEU (a zero-shot
fr-cs model often answers in English, which BLEU alone hides).

Languages are identified by ``langid`` (Lui & Baldwin, 2012; its model ships with the
package), restricted to the languages of the evaluation (the sources and targets scored),
as is usual when the candidates are known. Empty hypotheses have no language: they are left
out of the rate, and counted.

    python -m fairseq_gradvac.evaluation.off_target HYPOTHESES.txt --target cs --languages en,fr,cs
"""
import argparse
import functools
from collections import Counter
from typing import Dict, Iterable, List, Sequence


@functools.lru_cache(maxsize=1)
def _model():
    """(langid's identifier, every language it knows): its model takes seconds to load, so
    it is loaded once and restricted per call."""
    try:
        from langid.langid import LanguageIdentifier, model
    except ImportError as e:  # setup.sh installs it
        raise SystemExit("the off-target rate needs the package langid: pip install langid") from e
    identifier = LanguageIdentifier.from_modelstring(model, norm_probs=False)
    return identifier, frozenset(identifier.nb_classes)


def _identifier(languages: Sequence[str]):
    """langid's identifier restricted to ``languages``."""
    identifier, known = _model()
    unknown = sorted(set(languages) - known)
    if unknown:
        raise ValueError(f"langid does not know the language(s) {unknown}")
    identifier.set_languages(sorted(set(languages)))
    return identifier


def known(languages: Iterable[str]) -> bool:
    """Whether langid knows every one of ``languages`` (ISO 639-1 codes; a synthetic corpus's
    made-up languages it does not)."""
    return set(languages) <= _model()[1]


def identify(lines: Iterable[str], languages: Sequence[str]) -> List[str]:
    """The language of each line among ``languages`` ("" for an empty line)."""
    identifier = _identifier(languages)
    return [identifier.classify(line)[0] if line.strip() else "" for line in lines]


def off_target(lines: Iterable[str], target: str, languages: Sequence[str]) -> Dict[str, object]:
    """{"off_target": share of the non-empty hypotheses not in ``target`` (None if all are
    empty), "languages": {language: hypotheses}, "empty": empty hypotheses}."""
    found = identify(lines, sorted(set(languages) | {target}))
    counts = Counter(found)
    empty = counts.pop("", 0)
    total = sum(counts.values())
    rate = None if total == 0 else round((total - counts.get(target, 0)) / total, 4)
    return {"off_target": rate, "languages": dict(sorted(counts.items())), "empty": empty}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("hypotheses", help="one hypothesis per line (.gz read too)")
    p.add_argument("--target", required=True, help="the language the hypotheses should be in")
    p.add_argument("--languages", required=True, help="the candidate languages, e.g. en,fr,cs")
    a = p.parse_args(argv)
    from .evaluate import read_lines

    result = off_target(read_lines(a.hypotheses), a.target, [x for x in a.languages.split(",") if x])
    rate = "-" if result["off_target"] is None else f"{100 * result['off_target']:.1f}%"
    print(f"off-target: {rate}; languages: {result['languages']}; empty: {result['empty']}")


if __name__ == "__main__":
    main()
