"""Feature types: one class per kind of field, owning everything that depends on its kind.

A schema is a tuple of features; codecs, HDF5, transforms, the reader and ``show`` ask the
feature instead of switching on a kind name, so a new kind is one new class.
"""

from __future__ import annotations

from thresher.features.audio import Audio
from thresher.features.base import KINDS, Feature, TensorData, feature_from_json
from thresher.features.boxes import BoundingBoxes
from thresher.features.image import Image
from thresher.features.integer import Integer
from thresher.features.label import ClassLabel
from thresher.features.mask import Mask
from thresher.features.raw_bytes import Bytes
from thresher.features.schema import Field, Schema, classic_pair
from thresher.features.sequence import Sequence
from thresher.features.tensor import Tensor
from thresher.features.text import Text

__all__ = ["KINDS", "Audio", "BoundingBoxes", "Bytes", "ClassLabel", "Feature", "Field", "Image", "Integer", "Mask",
           "Schema", "Sequence", "Tensor", "TensorData", "Text", "classic_pair", "feature_from_json"]
