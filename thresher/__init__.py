"""thresher: public datasets into training-ready LMDB, Caffe2 minidb and HDF5 shards.

    import thresher
    manifest = thresher.prepare("mnist", format="lmdb")
    print(manifest.summary())
    ds = thresher.open("datasets/mnist/lmdb/train")
    ds[0]["image"].shape, ds[0]["label"]
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from thresher.conversion.upfront import prepare
    from thresher.errors import ThresherError
    from thresher.manifest import Manifest
    from thresher.mean import compute_mean
    from thresher.options import ConvertOptions
    from thresher.reader import Dataset, open  # noqa: A004

_PUBLIC = {
    "ConvertOptions": "thresher.options",
    "Dataset": "thresher.reader",
    "Manifest": "thresher.manifest",
    "compute_mean": "thresher.mean",
    "ThresherError": "thresher.errors",
    "open": "thresher.reader",
    "prepare": "thresher.conversion.upfront",  # decides a no-op before importing the converter
}
__all__ = ["ConvertOptions", "Dataset", "Manifest", "ThresherError", "__version__", "compute_mean", "open", "prepare"]


def __getattr__(name: str) -> Any:
    """The public API, imported on first use.

    A conversion worker imports ``thresher.conversion.convert`` and with it this package; importing the
    downloader (requests, urllib3) and the rest here made every fresh worker pay for modules
    it never uses.
    """
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'thresher' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
