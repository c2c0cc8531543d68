"""MNIST handwritten digits: four gzip'd IDX files, 60,000 train and 10,000 test 28×28 images."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from thresher import idx
from thresher.archive import open_gzip
from thresher.errors import MalformedDataError
from thresher.miniature import drawn_image
from thresher.recipe import Miniature, Recipe, Record, RecordBatch, Source, Split
from thresher.schema import Field, Schema

OFFICIAL = "http://yann.lecun.com/exdb/mnist/"  # answers 403 since 2020 (sources.md); mirrors follow
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/")
PUBLISHED = "md5: torchvision mnist.py; size+sha256: TFDS url_checksums/mnist.txt = HF datasets/mnist/dataset_infos.json"

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
        Field("image", "image", shape=(28, 28, 1), description="grey pixels, 0 = background"),
        Field("label", "int", dims=(), minimum=0, maximum=9, description="the digit"),
    ))
    channel_order = "GRAY"

    def records(self, split: str, files: Mapping[str, Path]) -> Iterator[RecordBatch]:
        images_name, labels_name = FILES[split]
        labels = _read_labels(files[labels_name], labels_name)
        # Declared 47 MB uncompressed for train; 16x the compressed size bounds a gzip bomb.
        limit = 64 * files[images_name].stat().st_size + 4096
        with open_gzip(files[images_name], limit=limit) as stream:
            count, rows, cols = idx.read_header(stream, images_name, ndim=3)
            if count != len(labels):
                raise MalformedDataError(images_name, "byte 4",
                                         f"{count} images but {labels_name} has {len(labels)} labels")
            index = 0
            for block in idx.iter_blocks(stream, images_name, (count, rows, cols)):
                yield RecordBatch({"image": block[:, :, :, None], "label": labels[index:index + len(block)]})
                index += len(block)

    def locate(self, split: str, index: int) -> str:
        return f"{FILES[split][0]} image {index}"

    def write_miniature(self, directory: Path) -> Miniature:
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


def _read_labels(path: Path, name: str) -> np.ndarray:
    with open_gzip(path, limit=64 * path.stat().st_size + 4096) as stream:
        (count,) = idx.read_header(stream, name, ndim=1)
        return np.concatenate(list(idx.iter_blocks(stream, name, (count,), block=1 << 20)) or [np.zeros(0, np.uint8)])


RECIPE = Mnist()
