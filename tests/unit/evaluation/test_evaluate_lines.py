"""Hypotheses and references are split on newlines only: a hypothesis may hold characters
that str.splitlines (and Python's universal newlines) also split on."""
import gzip

import pytest

from fairseq_gradvac.evaluation.evaluate import parse_generate_output, read_lines

ODD = ["a\x0bb", "c\x0cd", "e\x1cf\x1dg\x1eh", "i\x85j", "k\u2028l\u2029m", "n\ro"]


def test_generate_output_keeps_hypotheses_with_line_separators_whole():
    text = "".join(f"S-{i}\tsrc\nT-{i}\tref {i}\nH-{i}\t-0.5\tx\nD-{i}\t-0.5\t{h}\n" for i, h in enumerate(ODD))
    hyps, refs = parse_generate_output(text)
    assert [hyps[i] for i in range(len(ODD))] == ODD
    assert refs[3] == "ref 3"
    with pytest.raises(RuntimeError, match="D-0 twice"):
        parse_generate_output(text + "D-0\t-1\tagain\n")


@pytest.mark.parametrize("suffix", ["txt", "txt.gz"])
def test_read_lines_splits_on_newlines_only(tmp_path, suffix):
    path = tmp_path / f"hyp.{suffix}"
    data = "".join(h + "\n" for h in ODD).encode("utf-8")
    path.write_bytes(gzip.compress(data) if suffix.endswith("gz") else data)
    assert read_lines(str(path)) == ODD
