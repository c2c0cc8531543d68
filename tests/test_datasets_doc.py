"""docs/datasets.md is rendered from the registry; this fails when the file and the recipes disagree."""

from __future__ import annotations

import os
from pathlib import Path

from thresher.catalog import render
from thresher.registry import all_recipes

DOC = Path(__file__).resolve().parents[1] / "docs" / "datasets.md"


def test_datasets_doc_matches_the_registry() -> None:
    text = render()
    if os.environ.get("THRESHER_WRITE_DOCS"):
        DOC.write_text(text)
    assert DOC.exists() and DOC.read_text() == text, (
        "docs/datasets.md is out of date; regenerate it with THRESHER_WRITE_DOCS=1 make test"
    )
    for name, recipe in all_recipes().items():  # the catalog names every recipe and split count
        assert f"| `{name}` |" in text or all(f"| `{name}/{v}` |" in text for v in recipe.variant_names)
        counts = [f"{s.name} (as many as your files hold)" if recipe.parameters else f"{s.name} {s.num_records:,}"
                  for s in recipe.splits]  # a recipe of the user's own files knows no count before it reads them
        assert all(count in text for count in counts)
