"""``thresher mean``: the per-pixel mean image of a prepared split, as Caffe's compute_image_mean makes it.

Caffe's Data layer subtracts ``mean.binaryproto``: a BlobProto with num=1, channels, height,
width and the mean as C×H×W floats in the stored channel order (BGR for data prepared the
way Caffe's tools prepare it). ``mean.npy`` holds the same float32 C×H×W array for numpy users,
and ``mean.json`` the per-channel means for frameworks that subtract one value per channel.
Records are read one at a time into a running sum and each shard is closed once read, so
memory is that of one image and one shard's index whatever the size of the split.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thresher.atomic import write_bytes_atomic
from thresher.features.channels import needs_swap, swap_rb
from thresher.features.image import Image
from thresher.lazy import np

BINARYPROTO = "mean.binaryproto"
NPY = "mean.npy"
JSON = "mean.json"


@dataclass(frozen=True)
class MeanImage:
    """The mean of a split's images: float32 (C, H, W) in ``channel_order``, and where it was written."""

    mean: Any
    channel_order: str
    records: int
    files: tuple[Path, ...]

    @property
    def channel_means(self) -> list[float]:
        """One value per channel, in ``channel_order``: the mean over every pixel of every image."""
        return [float(v) for v in self.mean.astype(np.float64).mean(axis=(1, 2))]

    def summary(self) -> str:
        names = self.channel_order if self.channel_order in ("RGB", "BGR") else "?" * len(self.channel_means)
        channels = ", ".join(f"{name} {value:.4f}" for name, value in zip(names, self.channel_means, strict=False))
        c, h, w = self.mean.shape
        where = "\n".join(f"  {path}" for path in self.files)
        return f"mean of {self.records:,} images of {c}x{h}x{w} ({self.channel_order}): {channels}\n{where}"


def compute_mean(path: str | Path, *, output: str | Path | None = None, field: str | None = None) -> MeanImage:
    """Mean image of the prepared split at ``path``; writes mean.binaryproto, mean.npy and mean.json
    into ``output`` (default: the split's directory)."""
    import thresher

    dataset = thresher.open(path)
    name = field or _image_field(dataset.schema, path)
    order = dataset.manifest.channel_order
    total: Any = None
    first: tuple[int, ...] = ()
    count = 0
    for index, record in _each_record(dataset):
        pixels = record[name]
        if total is None:
            first, total = pixels.shape, np.zeros(pixels.shape, dtype=np.float64)
        elif pixels.shape != first:
            raise ValueError(f"{path}: record {index} of split {dataset.split!r} is {_size(pixels.shape)}, but record 0 "
                             f"is {_size(first)}; a mean image needs images of one size (prepare with --resize HxW)")
        total += pixels
        count += 1
    if total is None:
        raise ValueError(f"{path}: split {dataset.split!r} has no records to average")
    if needs_swap(order if order in ("RGB", "BGR") else "RGB", total.shape[2]):
        total = swap_rb(total)
    mean = np.ascontiguousarray((total / count).transpose(2, 0, 1), dtype=np.float32)
    target = Path(output) if output is not None else Path(dataset.manifest.directory) / dataset.split
    target.mkdir(parents=True, exist_ok=True)
    result = MeanImage(mean, order if mean.shape[0] != 1 else "GRAY", count,
                       (target / BINARYPROTO, target / NPY, target / JSON))
    write_bytes_atomic(target / BINARYPROTO, blob_proto(mean))
    buffer = io.BytesIO()
    np.save(buffer, mean)
    write_bytes_atomic(target / NPY, buffer.getvalue())
    facts = {"split": str(path), "records": count, "shape_chw": list(mean.shape), "channel_order": result.channel_order,
             "channel_means": result.channel_means}
    write_bytes_atomic(target / JSON, (json.dumps(facts, indent=2) + "\n").encode())
    return result


def blob_proto(mean: Any) -> bytes:
    """A float (C, H, W) array as the serialized BlobProto compute_image_mean writes (no ``shape`` field)."""
    from thresher.codecs.messages import BlobProto

    channels, height, width = mean.shape
    blob = BlobProto(num=1, channels=channels, height=height, width=width)
    blob.data.extend(np.asarray(mean, dtype=np.float32).ravel().tolist())
    return blob.SerializeToString()


def _each_record(dataset: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    """The split's records in order, each shard closed once read: its index of record offsets goes
    with it, so memory stays that of one shard however many the split has."""
    start = 0
    for shard_no, entry in enumerate(dataset.entries):
        for index in range(start, start + entry.records):
            yield index, dataset[index]
        dataset.shards[shard_no].close()
        start += entry.records


def _image_field(schema: Any, path: str | Path) -> str:
    photos = [f.name for f in schema if type(f) is Image]
    if len(photos) != 1:
        found = ", ".join(photos) or "none"
        raise ValueError(f"{path}: a mean needs one image field, this split has {found}")
    return photos[0]


def _size(shape: tuple[int, ...]) -> str:
    height, width, channels = shape
    return f"{height}x{width} with {channels} channel{'s' if channels != 1 else ''}"
