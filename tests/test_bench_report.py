"""A benchmark run rewrites docs/performance.md but keeps the engineers' hand-written section."""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path

from benchmarks import report

REPO = Path(__file__).resolve().parents[1]


def _hand_written(text: str) -> str:
    return text.split(report.HAND_START, 1)[1].split(report.HAND_END, 1)[0]


def test_regenerating_keeps_the_hand_written_section(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    shutil.copy(REPO / "docs" / "performance.md", doc)
    before = _hand_written(doc.read_text())
    assert "Figures the code's comments used to quote" in before
    report.write([], started=datetime.datetime(2024, 1, 1), seconds=60.0, path=doc)
    after = doc.read_text()
    assert _hand_written(after).strip() == before.strip()
    assert after.count(report.HAND_START) == 1 and [p.name for p in tmp_path.iterdir()] == ["performance.md"]
