"""Oxford 102 Flowers: 8,189 JPEG photos of 102 flower species, labels and splits in two MAT files.

``102flowers.tgz`` is an *uncompressed* tar despite its name (the archive reader sniffs the
magic bytes, so nothing special is needed here). ``imagelabels.mat`` holds ``labels`` (1, 8189)
with values 1..102; ``setid.mat`` holds the 1-based image ids of each split in ``trnid``,
``valid`` and ``tstid``. The JPEGs are stored as published, never re-encoded.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from thresher.errors import MalformedDataError
from thresher.features import Image, Integer, Schema
from thresher.published import Contents, Count
from thresher.recipe import WHERE, BadRecord, Miniature, Recipe, Record, Source, Split
from thresher.sources.extent import Extent, head
from thresher.sources.members import members_in_order

if TYPE_CHECKING:
    import numpy as np

IMAGES = "102flowers.tgz"
LABELS = "imagelabels.mat"
SETID = "setid.mat"
BASE = "www.robots.ox.ac.uk/~vgg/data/flowers/102/"
PUBLISHED = "md5: torchvision flowers102.py; size+sha256: TFDS url_checksums/oxford_flowers102.txt"
SPLIT_VARIABLE = {"train": "trnid", "validation": "valid", "test": "tstid"}  # TFDS's mapping
NUM_CLASSES = 102
TAR_BYTES = 344862509  # the published size of the (uncompressed) tar: what it unpacks to
NUM_IMAGES = 8189
# The folder and 8,189 JPEGs of at most a few hundred kB each (no per-file size is published).
CONTENTS = Contents(total_size=TAR_BYTES, members=NUM_IMAGES + 1)
LIMITS = CONTENTS.limits(max_member_size=64 << 20, max_read_size=64 << 20)


def member_name(image_id: int) -> str:
    """The tar member holding image ``image_id`` (1-based, as in the MAT files)."""
    return f"jpg/image_{image_id:05d}.jpg"


def _source(filename: str, size: int, md5: str, sha256: str, contents: Contents | None = None) -> Source:
    return Source.from_bases(filename, (f"https://{BASE}", f"http://{BASE}"), size=size, md5=md5, sha256=sha256,
                             checksum_source=PUBLISHED, contents=contents)


class Flowers102(Recipe):
    name = "flowers102"
    version = "1.0.0"
    title = "Oxford 102 Category Flower Dataset"
    description = ("8,189 photographs of flowers common in the United Kingdom, in 102 categories of 40 to 258 "
                   "images each, with large variations in scale, pose and light. Train and validation hold "
                   "10 images per class; test holds the remaining 6,149 (at least 20 per class). Images are "
                   "the published JPEGs of varying size; the label is the category number minus one.")
    homepage = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
    license = "not stated by the publisher"
    citation = ("@inproceedings{nilsback2008automated, title={Automated Flower Classification over a Large "
                "Number of Classes}, author={Nilsback, Maria-Elena and Zisserman, Andrew}, booktitle={Sixth "
                "Indian Conference on Computer Vision, Graphics \\& Image Processing (ICVGIP 2008)}, "
                "pages={722--729}, year={2008}, publisher={IEEE}, doi={10.1109/ICVGIP.2008.47}}")
    sources = (
        _source(IMAGES, TAR_BYTES, "52808999861908f626f3c1f4e79d11fa",
                "2d01ecc807db462958cfe3d92f57a8c252b4abd240eb955770201e45f783b246", contents=CONTENTS),
        _source(LABELS, 502, "e0620be6f572b9609742df49c70aed4d",
                "4903e94206bac23bf772aadf06451916df56b58fc483a62db32a97b82656651d"),
        _source(SETID, 14989, "a5357ecc9cb78c4bef273ce3793fc85c",
                "46b8678f91fd95d3c8f4feab80d271a6c834a1dd896fe29fd3e6ad9ce5c8dccd"),
    )
    splits = (
        Split("train", 1020, "setid.mat trnid: 10 images per class"),
        Split("validation", 1020, "setid.mat valid: 10 images per class"),
        Split("test", 6149, "setid.mat tstid: the remaining images, at least 20 per class"),
    )
    schema = Schema((
        Image("image", encoding="jpeg", description="the published JPEG bytes, sizes vary"),
        Integer("label", minimum=0, maximum=NUM_CLASSES - 1, dims=(1,),
              description="imagelabels.mat label minus one"),
    ))
    channel_order = "BGR"  # photos, as convert_imageset writes them

    def records(self, split: str, files: Mapping[str, Path]) -> Iterator[Record | BadRecord]:
        """Yield the split in ``setid.mat`` order from one pass over the tar.

        The tar is in image-id order, not split order; ``members_in_order`` holds each JPEG met
        before its turn. The published tar is uncompressed, so what is held and yielded is
        where each JPEG lies (an ``Extent``): the encoder reads it, in its own process with
        ``--workers``.
        """
        from thresher.sources.matlab import load_mat
        variable = SPLIT_VARIABLE[split]
        ids = _vector(load_mat(files[SETID], source=SETID), SETID, variable)
        labels = _vector(load_mat(files[LABELS], source=LABELS), LABELS, "labels")
        plan = [_plan_entry(int(i), labels) for i in _image_ids(ids, variable)]
        wanted = [entry for entry in plan if isinstance(entry, str)]
        found = members_in_order(files[IMAGES], wanted, limits=LIMITS, allow_missing=True)
        for entry in plan:
            if isinstance(entry, BadRecord):
                yield entry
                continue
            member = next(found)
            if member is None:
                yield BadRecord(IMAGES, f"{entry} (image id {_id_of(entry)})",
                                f"image listed in {SETID} {variable} is missing from the archive")
            else:
                yield self._record(entry, member.extent or member.read(), labels)

    def stated_counts(self, split: str, files: Mapping[str, Path]) -> list[Count]:
        """How many image ids setid.mat lists for the split."""
        from thresher.sources.matlab import load_mat
        variable = SPLIT_VARIABLE[split]
        ids = _vector(load_mat(files[SETID], source=SETID), SETID, variable)
        return [Count(SETID, f"variable {variable!r}", "image ids", len(ids))]

    def _record(self, name: str, data: bytes | Extent, labels: np.ndarray) -> Record | BadRecord:
        start = head(data, 8)
        if not start.startswith(b"\xff\xd8"):
            return BadRecord(IMAGES, name, f"not a JPEG file (starts with {start.hex(' ') or 'nothing'})")
        label = int(labels[_id_of(name) - 1]) - 1
        return {"image": data, "label": label, WHERE: f"{IMAGES}:{name}"}

    def locate(self, split: str, index: int) -> str:
        return f"{IMAGES} image number {index} of {SETID} {SPLIT_VARIABLE[split]}"

    def write_miniature(self, directory: Path) -> Miniature:
        """Twelve small real JPEGs (colour, grey, odd sizes) in an uncompressed tar, as published."""
        import numpy as np
        from PIL import Image

        from thresher.miniature import drawn_image, write_tar
        from thresher.sources.matlab import save_mat

        rng = np.random.default_rng(102)
        sizes = [(50, 37), (37, 50), (48, 36), (41, 29), (17, 64), (64, 48),
                 (33, 33), (1, 9), (45, 34), (29, 41), (50, 38), (12, 5)]
        grey = {4, 8}
        count = len(sizes)
        labels = rng.integers(1, NUM_CLASSES + 1, size=count)
        labels[0], labels[-1] = 1, NUM_CLASSES  # both ends of the range
        jpegs: dict[int, bytes] = {}
        for image_id, (width, height) in enumerate(sizes, 1):
            label = int(labels[image_id - 1])
            petals = (200 - label, 40 + label, 90 + (label * 37) % 160)  # a colour per class: a swap shows
            pixels = drawn_image(str(label - 1), (height, width), background=petals, noise=20, seed=image_id)
            image = Image.fromarray(pixels, "RGB")
            if image_id in grey:
                image = image.convert("L")
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=70 + image_id)
            jpegs[image_id] = buffer.getvalue()

        split_ids = {"trnid": [7, 2, 11], "valid": [12, 5, 1], "tstid": [9, 3, 10, 4, 6, 8]}  # not tar order

        members: dict[str, bytes | None] = {"jpg": None}
        members.update({member_name(image_id): data for image_id, data in jpegs.items()})
        tar_path = write_tar(directory / IMAGES, members)  # uncompressed, like the real .tgz
        save_mat(directory / LABELS, {"labels": labels.astype(np.float64).reshape(1, -1)})
        save_mat(directory / SETID, {k: np.array(v, dtype=np.float64).reshape(1, -1) for k, v in split_ids.items()})

        records = {
            split: [{"image": jpegs[i], "label": int(labels[i - 1]) - 1} for i in split_ids[variable]]
            for split, variable in SPLIT_VARIABLE.items()
        }
        files = {IMAGES: tar_path, LABELS: directory / LABELS, SETID: directory / SETID}
        return Miniature(files, records)


def _vector(variables: dict[str, np.ndarray], source: str, variable: str) -> np.ndarray:
    """A MAT variable that must be a numeric row or column vector, flattened."""
    if variable not in variables:
        found = ", ".join(sorted(variables)) or "none"
        raise MalformedDataError(source, f"variable {variable!r}", f"is missing (variables found: {found})")
    array = variables[variable]
    if array.ndim != 2 or min(array.shape) > 1 or array.dtype.kind not in "iuf":
        raise MalformedDataError(source, f"variable {variable!r}",
                                 f"expected a numeric vector, found shape {array.shape} of {array.dtype}")
    return array.reshape(-1)


def _image_ids(ids: np.ndarray, variable: str) -> np.ndarray:
    """Split ids as ints; a non-integer or non-positive id means setid.mat itself is wrong."""
    import numpy as np
    bad = ~np.isfinite(ids) | (ids < 1) | (ids != np.trunc(ids)) if ids.dtype.kind == "f" else ids < 1
    if bad.any():
        at = int(np.flatnonzero(bad)[0])
        raise MalformedDataError(SETID, f"variable {variable!r} entry {at}",
                                 f"{ids[at]!r} is not a 1-based image id")
    return ids.astype(np.int64)


def _plan_entry(image_id: int, labels: np.ndarray) -> str | BadRecord:
    """The member to read for ``image_id``, or a BadRecord when its label is unusable."""
    import numpy as np
    name = member_name(image_id)
    if image_id > len(labels):
        return BadRecord(LABELS, f"labels, image id {image_id} ({name})",
                         f"no label: {LABELS} has only {len(labels)} labels")
    value = labels[image_id - 1]
    if not (np.isfinite(value) and value == int(value) and 1 <= value <= NUM_CLASSES):
        return BadRecord(LABELS, f"labels entry {image_id - 1} (image id {image_id}, {name})",
                         f"label {value!r} is not an integer in 1..{NUM_CLASSES}")
    return name


def _id_of(name: str) -> int:
    return int(name[len("jpg/image_"):-len(".jpg")])


RECIPE = Flowers102()
