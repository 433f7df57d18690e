"""The off-target rate (fairseq_gradvac.evaluation.off_target) on hypotheses of known languages, in
evaluate's tables and in results_table's, also for runs scored before it existed."""
import json

import pytest

from fairseq_gradvac.evaluation import results_table
from fairseq_gradvac.evaluation.off_target import identify, off_target

SENTENCES = {  # LibreOffice help, the corpus's own kind of text
    "en": "Clicking Cancel closes a dialog without saving any changes made.",
    "fr": "Si vous cliquez sur Annuler, la boîte de dialogue se ferme et les modifications ne sont pas enregistrées.",
    "cs": "Klepnutím na Zrušit zavřete dialog bez uložení provedených změn.",
    "tr": "İptal düğmesine tıklamak, yapılan değişiklikleri kaydetmeden iletişim kutusunu kapatır.",
    "hi": "रद्द करें पर क्लिक करने से किए गए परिवर्तनों को सहेजे बिना संवाद बंद हो जाता है।",
}
LANGS = sorted(SENTENCES)


def test_languages_are_identified_among_those_scored():
    assert identify([SENTENCES[l] for l in LANGS] + [""], LANGS) == LANGS + [""]


def test_the_rate_is_the_share_of_non_empty_hypotheses_in_another_language():
    hyps = [SENTENCES["cs"]] * 3 + [SENTENCES["en"]] * 5 + [SENTENCES["fr"], "  "]
    result = off_target(hyps, "cs", LANGS)
    assert result == {"off_target": round(6 / 9, 4), "languages": {"cs": 3, "en": 5, "fr": 1}, "empty": 1}
    assert off_target(["", ""], "cs", LANGS)["off_target"] is None
    with pytest.raises(ValueError, match="does not know"):
        off_target(["x"], "xx", ["en", "xx"])


def _run(root, name, directions):
    d = root / name
    (d / "bleu.hyp").mkdir(parents=True)
    scores = {}
    for direction, langs in directions.items():
        (d / "bleu.hyp" / f"{direction}.txt").write_text("".join(SENTENCES[l] + "\n" for l in langs))
        scores[direction] = {"bleu": 1.0, "hypotheses": f"bleu.hyp/{direction}.txt"}
    (d / "bleu.json").write_text(json.dumps({"directions": scores}))


def test_results_table_reports_off_target_rates_from_the_kept_hypotheses(tmp_path, capsys):
    # fr-cs zero-shot answered in English half the time (seed 1) and always (seed 2)
    _run(tmp_path, "multilingual_t5_seed1", {"en-fr": ["fr"] * 4, "en-cs": ["cs"] * 4, "fr-cs": ["cs", "en", "cs", "en"]})
    _run(tmp_path, "multilingual_t5_seed2", {"en-fr": ["fr"] * 4, "en-cs": ["cs", "cs", "cs", "fr"], "fr-cs": ["en"] * 4})
    results_table.main([str(tmp_path), "--high", "fr,cs", "--med", "", "--low", "", "--zero-shot", "fr-cs",
                        "--bootstrap", "0"])
    text = capsys.readouterr().out
    table = text.split("## Off-target rate")[1]
    assert "| row | T | fr-cs | zero-shot avg | supervised avg |" in table
    # fr-cs: 50% and 100% -> 75 ±35.36; supervised: (0 + 0) / 2 and (0 + 25) / 2 -> 6.25 ±8.84
    assert "| (2) Multilingual | 5 | 75.00 ±35.36 | 75.00 ±35.36 | 6.25 ±8.84 |" in table
