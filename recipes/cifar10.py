"""CIFAR-10 from its **binary** archive: fixed 3,073-byte records, never the pickled one.

The python archive would need unpickling downloaded data, which runs code from the
network; the binary one holds the same pixels as plain bytes.

Each split is one input: the archive is one gzip stream, which cannot be entered in the
middle, so a Dask shard task reads it from the start up to its shard (fine at 163 MB).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

from thresher.errors import MalformedDataError
from thresher.features import ClassLabel, Image, Schema
from thresher.published import Contents
from thresher.recipe import Miniature, Recipe, Record, RecordBatch, Source, Split
from thresher.sources.members import members_in_order

ARCHIVE = "cifar-10-binary.tar.gz"
FOLDER = "cifar-10-batches-bin"
RECORD_BYTES = 1 + 3 * 32 * 32
BATCH_RECORDS = 10000
BATCH_BYTES = 30_730_000  # "each of which is 30730000 bytes long" (cifar.html)
# Six batches, batches.meta.txt, readme.html and the folder.
CONTENTS = Contents(total_size=6 * BATCH_BYTES, members=9, largest_member=BATCH_BYTES)
LIMITS = CONTENTS.limits()
READ_RECORDS = 1000  # records per read while streaming a batch: memory stays at ~3 MB per read
SPLIT_MEMBERS = {
    "train": tuple(f"{FOLDER}/data_batch_{i}.bin" for i in range(1, 6)),
    "test": (f"{FOLDER}/test_batch.bin",),
}
# Class colours for the miniature: pure red for airplane shows at once if R and B get swapped.
MINIATURE_COLOURS = ((200, 30, 30), (30, 160, 30), (30, 30, 200), (200, 200, 30), (150, 90, 40),
                     (200, 30, 200), (30, 200, 200), (120, 120, 120), (20, 60, 110), (240, 140, 0))
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class Cifar10(Recipe):
    name = "cifar10"
    version = "1.1.0"  # 1.1: the label is a class label with names
    title = "CIFAR-10"
    description = ("60,000 32×32 colour images in 10 classes (airplane, automobile, bird, cat, deer, dog, frog, "
                   "horse, ship, truck), 6,000 per class: 50,000 train in five batches and 10,000 test "
                   "(exactly 1,000 per class). Labelled subset of the 80 million tiny images.")
    homepage = "https://www.cs.toronto.edu/~kriz/cifar.html"
    license = "not stated on the publisher's page (cite the tech report below)"
    citation = ("@techreport{krizhevsky2009learning, title={Learning Multiple Layers of Features from Tiny Images}, "
                "author={Krizhevsky, Alex}, institution={University of Toronto}, year={2009}}")
    sources = (
        Source(
            ARCHIVE,
            ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
             "http://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"),
            size=170052171, md5="c32a1d4ab5d03f1284b67883e8d87530",
            sha256="c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
            checksum_source="md5: cifar.html; size+sha256: TFDS url_checksums/cifar10.txt",
            contents=CONTENTS,
        ),
    )
    splits = (Split("train", 50000, "data_batch_1..5"), Split("test", 10000, "test_batch, 1,000 per class"))
    schema = Schema((
        Image("image", shape=(32, 32, 3), description="RGB"),
        ClassLabel("label", names=CLASSES, description="the object class"),
    ))
    channel_order = "RGB"  # convert_cifar_data copies the R, G, B planes as they are

    def records(self, split: str, files: Mapping[str, Path]) -> Iterator[RecordBatch]:
        """Batches in batch order, from one pass over the gzip'd tar.

        Both splits sit in one gzip stream. Within one ``prepare``, the train pass keeps the
        test batch (30 MB) when it passes it, and the test split is served from it without
        inflating the archive again; nothing outlives the prepare. The batch due is streamed
        in reads of ``READ_RECORDS``; one met early is held. A batch is refused if it is not
        whole records (the archive's limits refuse oversized members from their headers).
        """
        later = SPLIT_MEMBERS["test"] if split == "train" else ()
        for member in members_in_order(files[ARCHIVE], SPLIT_MEMBERS[split], limits=LIMITS, label=ARCHIVE,
                                       keep_for_later=later):
            assert member is not None  # missing members raise
            source = f"{ARCHIVE}:{member.name}"
            _check_size(member.size, source)
            with member.open() as stream:
                yield from _batch_records(stream, member.size, source)

    def locate(self, split: str, index: int) -> str:
        member = SPLIT_MEMBERS[split][index // BATCH_RECORDS]
        offset = (index % BATCH_RECORDS) * RECORD_BYTES
        return f"{ARCHIVE}:{member} byte {offset}"

    def write_miniature(self, directory: Path) -> Miniature:
        import numpy as np

        from thresher.miniature import drawn_image, write_tar
        rng = np.random.default_rng(10)
        records: dict[str, list[Record]] = {"train": [], "test": []}
        members = {f"{FOLDER}/batches.meta.txt": "".join(f"{c}\n" for c in CLASSES).encode()}
        for split, names in SPLIT_MEMBERS.items():
            for member in names:
                count = 3 if split == "train" else 4
                labels = rng.integers(0, 10, size=count, dtype=np.uint8)
                planes = np.stack([
                    drawn_image(CLASSES[label][:2], (32, 32), background=MINIATURE_COLOURS[label], noise=12,
                                seed=int(rng.integers(1 << 30))).transpose(2, 0, 1)
                    for label in labels])
                members[member] = b"".join(bytes([lab]) + img.tobytes() for lab, img in zip(labels, planes, strict=True))
                records[split] += [{"image": np.ascontiguousarray(img.transpose(1, 2, 0)), "label": int(lab)}
                                   for lab, img in zip(labels, planes, strict=True)]
        members[f"{FOLDER}/readme.html"] = b"<html>CIFAR-10 miniature</html>\n"
        path = write_tar(directory / ARCHIVE, members, compression="gz")
        return Miniature({ARCHIVE: path}, records)


def _check_size(size: int, source: str) -> None:
    """A batch must be whole records; known from the tar header, before reading."""
    if size % RECORD_BYTES:
        whole = size // RECORD_BYTES
        raise MalformedDataError(source, f"byte {whole * RECORD_BYTES}",
                                 f"{size} bytes is not a whole number of {RECORD_BYTES}-byte records "
                                 f"(record {whole} is truncated)")


def _batch_records(stream: BinaryIO, size: int, source: str) -> Iterator[RecordBatch]:
    """The records of one batch of ``size`` bytes, read ``READ_RECORDS`` at a time."""
    import numpy as np
    for start in range(0, size, READ_RECORDS * RECORD_BYTES):
        want = min(READ_RECORDS * RECORD_BYTES, size - start)
        data = stream.read(want)
        if len(data) != want:
            raise MalformedDataError(source, f"byte {start + len(data)}", f"ends before its {size} bytes")
        rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD_BYTES)
        images = rows[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # planar RGB to HWC
        yield RecordBatch({"image": images, "label": rows[:, 0]})


RECIPE = Cifar10()
