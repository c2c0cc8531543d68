"""User-visible text and shipped code cite only what a user has: public files and pages, not our notes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PRIVATE = re.compile(r"\b(sources|formats|anchors|style)\.md\b|§")


@pytest.mark.parametrize("folder", ["thresher", "recipes"])
def test_no_shipped_file_cites_the_reference_notes(folder: str) -> None:
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in sorted((REPO / folder).rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if PRIVATE.search(line)
    ]
    assert found == []
