"""A module imported on first use, so that declaring a schema (as every recipe module does)
does not import numpy: ``thresher list`` and ``thresher info`` stay fast.

Each attribute is looked up once and then kept on the proxy, so later uses cost a plain
attribute read.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    def __init__(self, name: str) -> None:
        self.__name = name
        self.__module: ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        if self.__module is None:
            self.__module = importlib.import_module(self.__name)
        value = getattr(self.__module, attribute)
        setattr(self, attribute, value)
        return value


np: Any = LazyModule("numpy")
