"""Record codecs: how one record becomes one DB value that Caffe, Caffe2 or DALI can read.

``datum`` writes Caffe ``Datum`` messages (one image + one int label); ``tensorprotos`` writes Caffe2
``TensorProtos`` (one tensor per schema field). Both guarantee ``decode(encode(r)) == r``.
"""

from __future__ import annotations

from thresher.codecs.base import CHANNEL_ORDERS, Codec
from thresher.codecs.datum import DatumCodec
from thresher.codecs.tensorprotos import TensorProtosCodec

CODECS: tuple[str, ...] = ("datum", "tensorprotos")

_INSTANCES: dict[str, Codec] = {"datum": DatumCodec(), "tensorprotos": TensorProtosCodec()}


def get_codec(name: str) -> Codec:
    """The codec called ``name``; ValueError listing the valid names otherwise."""
    try:
        return _INSTANCES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown codec {name!r}; choose one of: {', '.join(CODECS)}") from None


__all__ = ["CHANNEL_ORDERS", "CODECS", "Codec", "DatumCodec", "TensorProtosCodec", "get_codec"]
