"""Oxford 102 Flowers: 8,189 JPEG photos of 102 flower species, labels and splits in two MAT files.

``102flowers.tgz`` is an *uncompressed* tar despite its name (the archive reader sniffs the
magic bytes, so nothing special is needed here). ``imagelabels.mat`` holds ``labels`` (1, 8189)
with values 1..102; ``setid.mat`` holds the 1-based image ids of each split in ``trnid``,
``valid`` and ``tstid``. The JPEGs are stored as published, never re-encoded.

``flowers102/segmented`` also downloads ``102segmentations.tgz``: for each photo a JPEG
``segmim/segmim_NNNNN.jpg`` of the same size whose background is painted blue, turned here into
a 0/1 mask (see :func:`flower_mask`). ``flowers102`` alone never downloads it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from thresher.errors import MalformedDataError
from thresher.features import Image, Integer, Mask, Schema
from thresher.published import Contents, Count
from thresher.recipe import WHERE, BadRecord, Input, Miniature, Recipe, Record, Source, Split, Variant
from thresher.sources.archive import sniff_compression
from thresher.sources.extent import Extent, head
from thresher.sources.members import members_in_order

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image as PILImage

IMAGES = "102flowers.tgz"
LABELS = "imagelabels.mat"
SETID = "setid.mat"
SEGMENTATIONS = "102segmentations.tgz"
SEGMENTED = "segmented"
BASE = "www.robots.ox.ac.uk/~vgg/data/flowers/102/"
PUBLISHED = "md5: torchvision flowers102.py; size+sha256: TFDS url_checksums/oxford_flowers102.txt"
SPLIT_VARIABLE = {"train": "trnid", "validation": "valid", "test": "tstid"}  # TFDS's mapping
NUM_CLASSES = 102
TAR_BYTES = 344862509  # the published size of the (uncompressed) tar: what it unpacks to
NUM_IMAGES = 8189
# The folder and 8,189 JPEGs of at most a few hundred kB each (no per-file size is published).
CONTENTS = Contents(total_size=TAR_BYTES, members=NUM_IMAGES + 1)
# Also the limits of the segmentations' tar, whose size is not published: it holds the same
# 8,189 pictures with their backgrounds painted over, so the photos' sizes bound it.
LIMITS = CONTENTS.limits(max_member_size=64 << 20, max_read_size=64 << 20)
BACKGROUND, FLOWER = 0, 1
# A segmentation pixel is background when each channel is within this of pure blue (0, 0, 255).
BLUE_TOLERANCE = 64


def member_name(image_id: int) -> str:
    """The tar member holding image ``image_id`` (1-based, as in the MAT files)."""
    return f"jpg/image_{image_id:05d}.jpg"


def segmentation_name(image_id: int) -> str:
    """The member of ``102segmentations.tgz`` holding image ``image_id``'s segmentation."""
    return f"segmim/segmim_{image_id:05d}.jpg"


def flower_mask(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W): 0 where a segmentation (H, W, 3) is painted blue, 1 on the flower.

    The background is pure blue before JPEG compression, which moves it by a few levels in flat
    areas and more along the flower's edge; each channel within ``BLUE_TOLERANCE`` of
    (0, 0, 255) absorbs that, while a flower, even a blue one, keeps some red or green.
    """
    import numpy as np

    blue = ((rgb[..., 0] <= BLUE_TOLERANCE) & (rgb[..., 1] <= BLUE_TOLERANCE)
            & (rgb[..., 2] >= 255 - BLUE_TOLERANCE))
    return np.where(blue, BACKGROUND, FLOWER).astype(np.uint8)


def _source(filename: str, size: int, md5: str, sha256: str, contents: Contents | None = None) -> Source:
    return Source.from_bases(filename, (f"https://{BASE}", f"http://{BASE}"), size=size, md5=md5, sha256=sha256,
                             checksum_source=PUBLISHED, contents=contents)


# No size or checksum of the segmentations is published: the first download's sha256 is recorded.
SEGMENTATION_SOURCE = Source.from_bases(SEGMENTATIONS, (f"https://{BASE}", f"http://{BASE}"))


@dataclass(frozen=True)
class _Located:
    """One listed photo: its label and where its JPEG (and segmentation) lie, or their bytes."""

    name: str
    label: int
    image: Extent | bytes
    segmentation: Extent | bytes | None = None


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
    plain_edition = True  # flowers102 alone: photos and labels only, without the segmentations' download
    variants = (
        Variant(SEGMENTED, "adds the published segmentations (102segmentations.tgz) as a flower mask",
                sources=(*sources, SEGMENTATION_SOURCE),
                schema=Schema((*schema, Mask("mask", encoding="png", names=("background", "flower"),
                                             description="segmim_NNNNN.jpg: 0 where painted blue, 1 on the flower, "
                                                         "the photo's size")))),
    )

    @property
    def segmented(self) -> bool:
        return self.variant == SEGMENTED

    def records(self, split: str, files: Mapping[str, Path]) -> Iterator[Record | BadRecord]:
        """The split in ``setid.mat`` order, streamed from one pass over the tar(s).

        Needed as such only when a tar is compressed (one stream, read once); as published the
        pass reads headers only and :meth:`inputs` gives the same records as independent parts.
        """
        for entry in self._walk(split, files):
            yield entry if isinstance(entry, BadRecord) else self._record(entry)

    def inputs(self, split: str, files: Mapping[str, Path]) -> list[Input] | None:
        """One input per listed photo, located by one walk of the uncompressed tar(s).

        A photo the walk cannot give (no label, missing) is an input holding its BadRecord. A
        compressed tar has no extents: the split is then one stream (:meth:`records`).
        """
        tars = (IMAGES, SEGMENTATIONS) if self.segmented else (IMAGES,)
        if any(sniff_compression(files[tar]) != "tar" for tar in tars):
            return None
        return [Input(entry.where if isinstance(entry, BadRecord) else entry.name, 1, entry)
                for entry in self._walk(split, files)]

    def read(self, split: str, files: Mapping[str, Path], part: Input) -> Iterator[Record | BadRecord]:
        """The one record of ``part``: only its own JPEG(s) are read."""
        entry = part.where
        yield entry if isinstance(entry, BadRecord) else self._record(entry)

    def _walk(self, split: str, files: Mapping[str, Path]) -> Iterator[_Located | BadRecord]:
        """Each photo ``setid.mat`` lists for ``split``, in its order, from one walk of each tar.

        The tars are in image-id order, not split order; ``members_in_order`` holds each JPEG
        met before its turn, by where it lies when the tar is uncompressed (an ``Extent``: read
        later by whichever process needs it), else by its bytes.
        """
        from thresher.sources.matlab import load_mat
        variable = SPLIT_VARIABLE[split]
        ids = _vector(load_mat(files[SETID], source=SETID), SETID, variable)
        labels = _vector(load_mat(files[LABELS], source=LABELS), LABELS, "labels")
        plan = [_plan_entry(int(i), labels) for i in _image_ids(ids, variable)]
        wanted = [entry for entry in plan if isinstance(entry, str)]
        photos = members_in_order(files[IMAGES], wanted, limits=LIMITS, allow_missing=True)
        masks = members_in_order(files[SEGMENTATIONS], [segmentation_name(_id_of(n)) for n in wanted],
                                 limits=LIMITS, allow_missing=True) if self.segmented else None
        for entry in plan:
            if isinstance(entry, BadRecord):
                yield entry
                continue
            photo, mask = next(photos), next(masks) if masks is not None else None
            image_id = _id_of(entry)
            if photo is None:
                yield BadRecord(IMAGES, f"{entry} (image id {image_id})",
                                f"image listed in {SETID} {variable} is missing from the archive")
            elif masks is not None and mask is None:
                yield BadRecord(SEGMENTATIONS, f"{segmentation_name(image_id)} (image id {image_id})",
                                "the segmentation of this image is missing from the archive")
            else:
                yield _Located(entry, int(labels[image_id - 1]) - 1, photo.extent or photo.read(),
                               None if mask is None else mask.extent or mask.read())

    def stated_counts(self, split: str, files: Mapping[str, Path]) -> list[Count]:
        """How many image ids setid.mat lists for the split."""
        from thresher.sources.matlab import load_mat
        variable = SPLIT_VARIABLE[split]
        ids = _vector(load_mat(files[SETID], source=SETID), SETID, variable)
        return [Count(SETID, f"variable {variable!r}", "image ids", len(ids))]

    def _record(self, at: _Located) -> Record | BadRecord:
        start = head(at.image, 8)
        if not start.startswith(b"\xff\xd8"):
            return BadRecord(IMAGES, at.name, f"not a JPEG file (starts with {start.hex(' ') or 'nothing'})")
        record: Record = {"image": at.image, "label": at.label, WHERE: f"{IMAGES}:{at.name}"}
        if at.segmentation is None:
            return record
        photo = at.image if isinstance(at.image, bytes) else at.image.read()  # its size is checked
        mask = _mask_png(photo, at.segmentation, _id_of(at.name))
        if isinstance(mask, BadRecord):
            return mask
        return {**record, "image": photo, "mask": mask}

    def locate(self, split: str, index: int) -> str:
        return f"{IMAGES} image number {index} of {SETID} {SPLIT_VARIABLE[split]}"

    def write_miniature(self, directory: Path) -> Miniature:
        """Twelve small real JPEGs (colour, grey, odd sizes) in an uncompressed tar, as published.

        ``flowers102/segmented`` adds their segmentations in a gzipped tar, as the name says (whether
        the published one is compressed is not stated; either is read).
        """
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
        if self.segmented:
            masks = {image_id: _drawn_mask(*Image.open(io.BytesIO(jpeg)).size) for image_id, jpeg in jpegs.items()}
            files[SEGMENTATIONS] = _write_segmentations(directory / SEGMENTATIONS, jpegs, masks)
            for split, variable in SPLIT_VARIABLE.items():
                for record, image_id in zip(records[split], split_ids[variable], strict=True):
                    buffer = io.BytesIO()
                    Image.fromarray(masks[image_id], "L").save(buffer, "PNG")
                    record["mask"] = buffer.getvalue()
        return Miniature(files, records)


def _drawn_mask(width: int, height: int) -> np.ndarray:
    """A miniature's flower: an ellipse filling two thirds of the picture each way (1 inside, else 0)."""
    import numpy as np

    rows, columns = np.mgrid[0:height, 0:width]
    inside = ((rows + 0.5 - height / 2) / (height / 3)) ** 2 + ((columns + 0.5 - width / 2) / (width / 3)) ** 2 <= 1
    return inside.astype(np.uint8)


def _write_segmentations(path: Path, jpegs: Mapping[int, bytes], masks: Mapping[int, np.ndarray]) -> Path:
    """Each photo with the pixels outside its mask painted pure blue, as JPEGs in a gzipped tar.

    Quality 95 without chroma subsampling keeps every pixel on its side of the blue rule, so the
    drawn masks are what a correct reading yields; the real files are ordinary JPEGs.
    """
    import numpy as np
    from PIL import Image

    from thresher.miniature import write_tar

    members: dict[str, bytes | None] = {"segmim": None}
    for image_id, jpeg in jpegs.items():
        photo = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
        painted = np.where(masks[image_id][..., None] == 1, photo, np.array([0, 0, 255], np.uint8))
        buffer = io.BytesIO()
        Image.fromarray(painted.astype(np.uint8), "RGB").save(buffer, "JPEG", quality=95, subsampling=0)
        members[segmentation_name(image_id)] = buffer.getvalue()
    return write_tar(path, members, compression="gz")


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


def _mask_png(photo: bytes, segmentation: bytes | Extent, image_id: int) -> bytes | BadRecord:
    """The flower mask of ``segmentation`` as a greyscale PNG, or why the segmentation is unusable."""
    import numpy as np
    from PIL import Image as PILImage

    name = segmentation_name(image_id)
    data = segmentation.read() if isinstance(segmentation, Extent) else segmentation
    picture = _decoded(data, SEGMENTATIONS, name, pixels=True)
    if isinstance(picture, BadRecord):
        return picture
    original = _decoded(photo, IMAGES, member_name(image_id), pixels=False)
    if isinstance(original, BadRecord):
        return original
    if picture.size != original.size:
        return BadRecord(SEGMENTATIONS, name, f"is {picture.size[0]}x{picture.size[1]} pixels but its photo "
                                              f"{member_name(image_id)} is {original.size[0]}x{original.size[1]}")
    buffer = io.BytesIO()
    PILImage.fromarray(flower_mask(np.asarray(picture.convert("RGB"))), "L").save(buffer, "PNG")
    return buffer.getvalue()


def _decoded(data: bytes, source: str, name: str, *, pixels: bool) -> PILImage.Image | BadRecord:
    """The JPEG ``data`` opened: its header read, and its pixels decoded with ``pixels``."""
    from PIL import Image as PILImage

    if not data.startswith(b"\xff\xd8"):
        return BadRecord(source, name, f"not a JPEG file (starts with {data[:8].hex(' ') or 'nothing'})")
    try:
        picture = PILImage.open(io.BytesIO(data))
        if pixels:
            picture.load()
    except (OSError, SyntaxError, ValueError) as exc:
        return BadRecord(source, name, f"cannot be decoded as a JPEG: {exc}")
    return picture


def _id_of(name: str) -> int:
    return int(name[len("jpg/image_"):-len(".jpg")])


RECIPE = Flowers102()
