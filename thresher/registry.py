"""Finds recipes: every module in ``thresher.recipes`` that defines ``RECIPE``."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from thresher.recipe import Recipe


@cache
def all_recipes() -> dict[str, Recipe]:
    import thresher.recipes as package

    found: dict[str, Recipe] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        recipe = getattr(module, "RECIPE", None)
        if isinstance(recipe, Recipe):
            found[recipe.name] = recipe
    return found


def get_recipe(name: str) -> Recipe:
    recipes = all_recipes()
    try:
        return recipes[name]
    except KeyError:
        raise KeyError(f"no recipe named {name!r}; known recipes: {', '.join(sorted(recipes))}") from None
