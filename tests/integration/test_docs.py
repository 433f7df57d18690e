"""The user docs: the README stays a front page, every relative link resolves, and no page
cites the project's internal issue numbers (a user cannot look them up)."""
import glob
import os
import re

import pytest

from tests.helpers import ROOT
PAGES = ["README.md"] + sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True)
    if os.sep + "data" + os.sep not in p
)


def test_the_readme_is_a_front_page():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    assert len(text.splitlines()) <= 160
    for command in ("bash scripts/demo.sh", "bash scripts/test.sh", "--user-dir fairseq_gradvac"):
        assert command in text
    assert "(docs/methods/README.md)" in text


@pytest.mark.parametrize("page", PAGES)
def test_links_resolve_and_no_internal_issue_numbers(page):
    with open(os.path.join(ROOT, page)) as f:
        text = f.read()
    missing = [target for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
               if not target.startswith(("http://", "https://"))
               and not os.path.exists(os.path.join(ROOT, os.path.dirname(page), target))]
    assert not missing, f"{page} links to missing files: {missing}"
    assert not re.search(r"\bissues? #?\d+", text, re.IGNORECASE), f"{page} cites an internal issue number"
