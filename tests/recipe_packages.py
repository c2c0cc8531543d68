"""Test recipes from tests/recipe_fixtures made importable here and in every process started meanwhile."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from thresher import registry

FIXTURES = Path(__file__).parent / "recipe_fixtures"


@contextlib.contextmanager
def recipe_package(root: Path, package: str, *modules: str) -> Iterator[Path]:
    """``package`` under ``root`` holding copies of ``modules``, found by the registry (workers included)."""
    (root / package).mkdir()
    (root / package / "__init__.py").write_text("")
    for module in modules:
        shutil.copy(FIXTURES / f"{module}.py", root / package / f"{module}.py")
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", registry.PACKAGES_VARIABLE)}
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), saved["PYTHONPATH"]]))
    os.environ[registry.PACKAGES_VARIABLE] = package
    sys.path.insert(0, str(root))
    registry.reset()
    try:
        yield root
    finally:
        sys.path.remove(str(root))
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        registry.reset()
