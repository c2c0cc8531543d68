"""Record schemas; the feature classes in :mod:`thresher.features` define the fields."""

from __future__ import annotations

from thresher.features import Feature, Field, Schema, classic_pair

__all__ = ["Feature", "Field", "Schema", "classic_pair"]
