"""docs/datasets.md: the catalog of recipes, rendered from the registry so that it cannot drift from it."""

from __future__ import annotations

from thresher.atomic import human_bytes
from thresher.recipe import Recipe
from thresher.registry import all_recipes


def render() -> str:
    lines = ["# Datasets", "",
             "Generated from the recipes (`THRESHER_WRITE_DOCS=1 make test` rewrites it; a test fails when it "
             "disagrees with them). `thresher info NAME` tells more: homepage, citation, sources and checksums.",
             "", "| name | variants | splits | download | manual download | license |", "|---|---|---|---|---|---|"]
    recipes = sorted(all_recipes().values(), key=lambda r: r.name)
    for recipe in recipes:
        for edition in recipe.editions():
            lines.append(f"| `{edition.key}` | {_variants(recipe)} | {_splits(edition)} | "
                         f"{human_bytes(edition.download_size)} | {'yes' if edition.needs_manual_download else 'no'} "
                         f"| {recipe.license} |")
    for recipe in recipes:
        lines += ["", f"## {recipe.name}: {recipe.title}", "", recipe.description, ""]
        if recipe.requires:
            lines += [f"Needs {', '.join(recipe.requires)}"
                      + (f" (`pip install 'thresher[{recipe.extra}]'`)." if recipe.extra else "."), ""]
        for edition in recipe.editions():
            lines += [f"Fields of `{edition.key}`:", "", *(f"* {line}" for line in edition.schema.describe()), ""]
            for split, schema in edition.own_split_schemas.items():
                lines += [f"Fields of `{edition.key}` split `{split}`:", "",
                          *(f"* {line}" for line in schema.describe()), ""]
    return "\n".join(lines).rstrip() + "\n"


def _variants(recipe: Recipe) -> str:
    """``a (default), b``; a plain edition shows as ``none``."""
    if not recipe.variants:
        return "—"
    return ", ".join(f"{v or 'none'}{' (default)' if v == recipe.default_variant else ''}"
                     for v in recipe.edition_names)


def _splits(recipe: Recipe) -> str:
    return ", ".join(f"{s.name} {s.num_records:,}" for s in recipe.splits)
