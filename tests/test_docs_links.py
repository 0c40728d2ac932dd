"""Every relative link in README.md, ARCHITECTURE.md and docs/**/*.md resolves: the file exists, and an
anchor names a heading of the target (slugged as GitHub does)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = sorted([REPO / "README.md", REPO / "ARCHITECTURE.md", *(REPO / "docs").rglob("*.md")])

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.DOTALL | re.MULTILINE)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
# [text](target) and ![alt](target); the target ends at whitespace (an optional "title") or ")".
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def _prose(text: str) -> str:
    """The text without fenced code blocks and code spans, where brackets are not links."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def links(text: str) -> list[str]:
    return _LINK.findall(_prose(text))


def slug(heading: str) -> str:
    """GitHub's heading anchor: markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in _HEADING.findall(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def dangling(page: Path) -> list[str]:
    problems = []
    for target in links(page.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            continue  # http:, https:, mailto:, ...: not a relative link
        file_part, _, anchor = target.partition("#")
        resolved = (page.parent / file_part).resolve() if file_part else page
        if not resolved.exists():
            shown = resolved.relative_to(REPO) if REPO in resolved.parents else resolved
            problems.append(f"{target}: no such file {shown}")
            continue
        if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{target}: no heading with anchor #{anchor} in {resolved.name}")
    return problems


def test_the_pages_are_there():
    names = {page.relative_to(REPO).as_posix() for page in PAGES}
    for required in ("README.md", "ARCHITECTURE.md", "docs/index.md", "docs/configuration.md", "docs/methods.md"):
        assert required in names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(REPO).as_posix())
def test_relative_links_resolve(page):
    assert dangling(page) == []


def test_index_links_every_docs_page():
    linked = {target.partition("#")[0] for target in links((REPO / "docs" / "index.md").read_text(encoding="utf-8"))}
    pages = {page.name for page in (REPO / "docs").glob("*.md")} - {"index.md"}
    assert pages <= linked, f"docs/index.md does not link {sorted(pages - linked)}"


def test_the_checker_finds_dangling_links(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    (tmp_path / "other.md").write_text("# A heading, here\n\n## Twice\n\n## Twice\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md) [ok](other.md#a-heading-here) [ok](other.md#twice-1) [ok](#local) [web](https://x.y/z)\n"
        "`[not a link](missing.md)`\n\n```\n[not a link](missing.md)\n```\n\n# Local\n"
        "[bad](missing.md) [bad](other.md#nowhere) ![bad](img/none.png)\n",
        encoding="utf-8",
    )
    problems = dangling(page)
    assert len(problems) == 3, problems
    assert problems[0].startswith("missing.md") and "#nowhere" in problems[1] and "none.png" in problems[2]
