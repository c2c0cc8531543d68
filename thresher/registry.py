"""Finds recipes: every module of ``thresher.recipes`` (and of ``$THRESHER_RECIPE_PACKAGES``) defining ``RECIPE``.

Recipe modules keep their heavy imports inside functions, so importing all of them for
``thresher list`` stays cheap. A module that fails to import is listed as broken with its
reason instead of hiding every other recipe; a recipe whose optional modules are missing
lists normally and says what to install only when it is used.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from dataclasses import dataclass
from functools import cache

from thresher.errors import ThresherError
from thresher.formats import FORMATS
from thresher.recipe import Recipe

PACKAGES_VARIABLE = "THRESHER_RECIPE_PACKAGES"


class MissingDependencyError(ThresherError):
    """A recipe needs an optional module that is not installed."""


@dataclass(frozen=True)
class Broken:
    """A recipe module that could not be loaded, and why."""

    module: str
    reason: str

    @property
    def name(self) -> str:
        return self.module.rsplit(".", 1)[-1]


@dataclass
class _Found:
    recipes: dict[str, Recipe]
    broken: dict[str, Broken]


def packages() -> list[str]:
    """The packages searched for recipe modules: the built-in one, then any the user names."""
    extra = [p.strip() for p in os.environ.get(PACKAGES_VARIABLE, "").split(",") if p.strip()]
    return ["thresher.recipes", *extra]


@cache
def _found() -> _Found:
    found = _Found({}, {})
    for package_name in packages():
        try:
            package = importlib.import_module(package_name)
        except Exception as exc:  # a package named in the variable that is not there
            found.broken[package_name] = Broken(package_name, _reason(exc))
            continue
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            if not info.name.startswith("_"):
                _load(f"{package_name}.{info.name}", found)
    return found


def _load(module_name: str, found: _Found) -> None:
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any failure of one recipe module must not hide the others
        found.broken[module_name] = Broken(module_name, _reason(exc))
        return
    recipe = getattr(module, "RECIPE", None)
    if not isinstance(recipe, Recipe):
        return
    problem = _naming_problem(recipe, found)
    if problem:
        found.broken[module_name] = Broken(module_name, f"recipe {recipe.name!r} {problem}")
        return
    found.recipes[recipe.name] = recipe


def _naming_problem(recipe: Recipe, found: _Found) -> str:
    """Why ``recipe``'s name or variant names cannot be directories under the data root, or ""."""
    if "/" in recipe.name:
        return "has a '/' in its name"
    if recipe.name in found.recipes:
        return "is already defined by another module"
    # ROOT/NAME/downloads is shared by every edition; with a plain edition, ROOT/NAME/<format> is its output.
    taken = ("downloads", *(FORMATS if recipe.plain_edition else ()))
    clash = next((v for v in recipe.variant_names if v in taken or "/" in v or not v), None)
    if clash is not None:
        return f"has a variant named {clash!r}, which cannot be a directory beside {', '.join(taken)}"
    return ""


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def all_recipes() -> dict[str, Recipe]:
    """Every recipe that loaded, by name (one entry per recipe, whatever its variants)."""
    return _found().recipes


def broken_recipes() -> list[Broken]:
    """The recipe modules that failed to import, each with its reason."""
    return sorted(_found().broken.values(), key=lambda b: b.module)


def editions() -> list[Recipe]:
    """Every recipe, once per variant, in name order: what ``list`` and the catalog show."""
    return [edition for _, recipe in sorted(all_recipes().items()) for edition in recipe.editions()]


def get_recipe(spec: str) -> Recipe:
    """The recipe for ``NAME`` or ``NAME/VARIANT`` (``NAME`` alone: its default variant, or its plain edition)."""
    name, _, variant = spec.partition("/")
    searched = _found.cache_info().currsize > 0  # then it is the truth (tests may have added recipes)
    # The usual case, without importing every other recipe module:
    recipe = all_recipes().get(name) if searched else _named_module(name)
    if recipe is None:
        recipes = all_recipes()
        recipe = recipes.get(name)
    if recipe is None:
        broken = [b for b in broken_recipes() if b.name == name]
        if broken:
            raise KeyError(f"recipe {name!r} cannot be loaded ({broken[0].module}): {broken[0].reason}")
        raise KeyError(f"no recipe named {name!r}; known recipes: {', '.join(sorted(recipes))}")
    if variant == "" and "/" in spec:
        raise KeyError(f"{spec!r}: give a variant after the '/' or leave it out")
    return recipe.with_variant(variant or None)


def usable_recipe(spec: str) -> Recipe:
    """:func:`get_recipe`, refusing at once when the recipe's optional modules are missing."""
    recipe = get_recipe(spec)
    hint = recipe.install_hint()
    if hint:
        raise MissingDependencyError(hint)
    return recipe


@cache
def _named_module(name: str) -> Recipe | None:
    """The recipe of the module named after it (``thresher.recipes.NAME``), or None to search them all.

    Only a module that imports cleanly and defines a well-named recipe of that name counts; any
    doubt (another module defines it, the module fails) is left to the full search, which
    reports it.
    """
    if not name.isidentifier():
        return None
    for package_name in packages():
        try:
            module = importlib.import_module(f"{package_name}.{name}")
        except Exception:  # noqa: BLE001 - not there, or broken: the full search says which
            continue
        recipe = getattr(module, "RECIPE", None)
        if isinstance(recipe, Recipe) and recipe.name == name and not _naming_problem(recipe, _Found({}, {})):
            return recipe
    return None


def reset() -> None:
    """Forget what was found (after changing ``$THRESHER_RECIPE_PACKAGES``)."""
    _found.cache_clear()
    _named_module.cache_clear()
