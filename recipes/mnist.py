"""MNIST handwritten digits: four gzip'd IDX files, 60,000 train and 10,000 test 28×28 images.

Each split is one input: its records come from gzip streams, which cannot be entered in the
middle, so workers encode batches this process reads (the decompression is the cheap part).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from thresher.errors import MalformedDataError
from thresher.features import Image, Integer, Schema
from thresher.published import Count, check_claim, limit
from thresher.recipe import Miniature, Recipe, Record, RecordBatch, Source, Split
from thresher.sources.archive import gzip_head, open_gzip

if TYPE_CHECKING:
    import numpy as np

OFFICIAL = "http://yann.lecun.com/exdb/mnist/"  # answers 403 Forbidden; torchvision's mirrors follow
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/")
PUBLISHED = "md5: torchvision mnist.py; size+sha256: TFDS url_checksums/mnist.txt = HF datasets/mnist/dataset_infos.json"

SIDE = 28
COUNTED = {3: "images", 1: "labels"}  # what an IDX file of that many dimensions counts
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _source(filename: str, size: int, md5: str, sha256: str) -> Source:
    return Source.from_bases(filename, (OFFICIAL, *MIRRORS), size=size, md5=md5, sha256=sha256,
                             checksum_source=PUBLISHED)


class Mnist(Recipe):
    name = "mnist"
    version = "1.0.0"
    title = "MNIST handwritten digits"
    description = ("70,000 greyscale 28×28 images of handwritten digits 0–9 (60,000 train, 10,000 test), "
                   "from NIST Special Databases 1 and 3, size-normalised and centred.")
    homepage = "http://yann.lecun.com/exdb/mnist/"
    license = "not stated on the original page (the Hugging Face card says MIT, a third-party assertion)"
    citation = ("@article{lecun1998gradient, title={Gradient-based learning applied to document recognition}, "
                "author={LeCun, Yann and Bottou, L{\\'e}on and Bengio, Yoshua and Haffner, Patrick}, "
                "journal={Proceedings of the IEEE}, volume={86}, number={11}, pages={2278--2324}, year={1998}}")
    sources = (
        _source("train-images-idx3-ubyte.gz", 9912422, "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        _source("train-labels-idx1-ubyte.gz", 28881, "d53e105ee54ea40749a09fcbcd1e9432",
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        _source("t10k-images-idx3-ubyte.gz", 1648877, "9fb629c4189551a2d022fa330f9573f3",
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        _source("t10k-labels-idx1-ubyte.gz", 4542, "ec29112dd5afa0611ce80d1b7f02629c",
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    )
    splits = (Split("train", 60000), Split("test", 10000))
    schema = Schema((
        Image("image", shape=(SIDE, SIDE, 1), description="grey pixels, 0 = background"),
        Integer("label", dims=(), minimum=0, maximum=9, description="the digit"),
    ))
    channel_order = "GRAY"

    def records(self, split: str, files: Mapping[str, Path]) -> Iterator[RecordBatch]:
        from thresher.sources import idx
        images_name, labels_name = FILES[split]
        published = self.split(split).num_records
        labels = _read_labels(files[labels_name], labels_name, published)
        with _open(files[images_name], 3, published) as stream:
            count, rows, cols = _header(stream, images_name, 3, published)
            if count != len(labels):
                raise MalformedDataError(images_name, "byte 4",
                                         f"{count} images but {labels_name} has {len(labels)} labels")
            index = 0
            for block in idx.iter_blocks(stream, images_name, (count, rows, cols)):
                yield RecordBatch({"image": block[:, :, :, None], "label": labels[index:index + len(block)]})
                index += len(block)

    def stated_counts(self, split: str, files: Mapping[str, Path]) -> list[Count]:
        """The image and label counts of the split's two IDX headers."""
        published = self.split(split).num_records
        counts = []
        for name, ndim in zip(FILES[split], (3, 1), strict=True):
            head = io.BytesIO(gzip_head(files[name], 4 + 4 * ndim))
            counts.append(Count(name, "byte 4", COUNTED[ndim], _header(head, name, ndim, published)[0]))
        return counts

    def locate(self, split: str, index: int) -> str:
        return f"{FILES[split][0]} image {index}"

    def write_miniature(self, directory: Path) -> Miniature:
        import numpy as np

        from thresher.miniature import drawn_image
        from thresher.sources import idx
        rng = np.random.default_rng(2051)
        files: dict[str, Path] = {}
        records: dict[str, list[Record]] = {}
        for split, count in (("train", 7), ("test", 4)):
            labels = rng.integers(0, 10, size=count, dtype=np.uint8)
            images = np.stack([drawn_image(str(label), (28, 28), noise=8, seed=i)[:, :, 0]
                               for i, label in enumerate(labels)])
            images_name, labels_name = FILES[split]
            idx.write_idx(directory / images_name, images)
            idx.write_idx(directory / labels_name, labels)
            files[images_name] = directory / images_name
            files[labels_name] = directory / labels_name
            records[split] = [{"image": img[:, :, None], "label": int(lab)} for img, lab in zip(images, labels, strict=True)]
        return Miniature(files, records)


def _open(path: Path, ndim: int, published: int) -> BinaryIO:
    """The decompressed IDX file, bounded by what the published count allows (a gzip bomb stops there).

    The slack covers the reader's buffer, so trailing data is reported as such, not as a bomb.
    """
    item = SIDE * SIDE if ndim == 3 else 1
    return open_gzip(path, limit=4 + 4 * ndim + limit(published) * item + (1 << 20))


def _header(stream: BinaryIO, name: str, ndim: int, published: int) -> tuple[int, ...]:
    """An IDX header's dimensions, refused before any data is read if they claim more than MNIST holds."""
    from thresher.sources import idx
    dims = idx.read_header(stream, name, ndim=ndim)
    check_claim(Count(name, "byte 4", COUNTED[ndim], dims[0]), published)
    if dims[1:] not in ((), (SIDE, SIDE)):
        raise MalformedDataError(name, "byte 8", f"images are {dims[1]}×{dims[2]} pixels, MNIST's are {SIDE}×{SIDE}")
    return dims


def _read_labels(path: Path, name: str, published: int) -> np.ndarray:
    import numpy as np

    from thresher.sources import idx
    with _open(path, 1, published) as stream:
        (count,) = _header(stream, name, 1, published)
        return np.concatenate(list(idx.iter_blocks(stream, name, (count,), block=1 << 20)) or [np.zeros(0, np.uint8)])


RECIPE = Mnist()
