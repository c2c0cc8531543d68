"""thresher: public datasets into training-ready LMDB, Caffe2 minidb and HDF5 shards.

    import thresher
    manifest = thresher.prepare("mnist", format="lmdb")
    print(manifest.summary())
    ds = thresher.open("datasets/mnist/lmdb/train")
    ds[0]["image"].shape, ds[0]["label"]
"""

from __future__ import annotations

__version__ = "0.1.0"

from thresher.errors import ThresherError  # noqa: E402
from thresher.manifest import Manifest  # noqa: E402
from thresher.prepare import prepare  # noqa: E402
from thresher.reader import Dataset, open  # noqa: E402,A004
from thresher.transforms import ConvertOptions  # noqa: E402

__all__ = ["ConvertOptions", "Dataset", "Manifest", "ThresherError", "__version__", "open", "prepare"]
