"""PASCAL VOC 2012 and 2007: photos with boxed objects of 20 classes, and class/object segmentations.

The trainval tar (and 2007's test tar) is uncompressed and holds
``VOCdevkit/VOC<year>/{JPEGImages,Annotations,SegmentationClass,SegmentationObject,ImageSets}``.
A split is the image ids of one ``ImageSets`` list file. :meth:`Voc.inputs` walks the tar's
headers once and gives one input per image: where its JPEG, XML or PNGs lie in the tar, so
each worker reads its own images. Detection splits (``ImageSets/Main``) hold the photo and
its objects from the XML annotation; segmentation splits (``ImageSets/Segmentation``) hold
the photo and its two label maps, palette PNGs kept as published.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from thresher.errors import MalformedDataError
from thresher.features import BoundingBoxes, Image, Mask, Schema
from thresher.published import Contents, Count
from thresher.recipe import WHERE, BadRecord, Input, Miniature, Recipe, Record, Source, Split, Variant
from thresher.sources.extent import Extent, head

CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
           "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
FLAGS = ("difficult", "truncated")
BOUNDARY = 255  # the void/boundary index of the segmentation PNGs
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CORNERS = ("xmin", "ymin", "xmax", "ymax")

TRAINVAL_2012 = "VOCtrainval_11-May-2012.tar"
TRAINVAL_2007 = "VOCtrainval_06-Nov-2007.tar"
TEST_2007 = "VOCtest_06-Nov-2007.tar"
PUBLISHED_2012 = ("md5: torchvision voc.py and PaddleDetection; size and sha256: TFDS url_checksums/voc.txt "
                  "(pjreddie copy); sha1 4e443f8a2eca6b1dac8a6c57641b67dd40621a49: gluon-cv pascal_voc.py")
PUBLISHED_2007 = "md5: torchvision voc.py; size and sha256: TFDS url_checksums/voc.txt (pjreddie copy)"
PUBLISHED_2007_TEST = "size and sha256: TFDS url_checksums/voc.txt (pjreddie copy)"
MIRROR = "http://pjreddie.com/media/files/"


def _contents(size: int, images: int) -> Contents:
    # No member count is published: an upper bound of a JPEG and an XML per image, two PNGs per
    # image at most, and a few thousand list files and folders.
    return Contents(total_size=size, members=4 * images + 5000)


def _tar(filename: str, year: str, size: int, images: int, **checksums: Any) -> Source:
    official = f"http://host.robots.ox.ac.uk/pascal/VOC/voc{year}/{filename}"
    return Source(filename, (official, MIRROR + filename), size=size, contents=_contents(size, images), **checksums)


DETECTION = Schema((
    Image("image", encoding="jpeg", description="the published JPEG bytes (JPEGImages), sizes vary"),
    BoundingBoxes("objects", names=CLASSES, flags=FLAGS,
                  description="the XML annotation's objects in file order: bndbox as published (1-based pixel "
                              "coordinates, max inclusive), class name, difficult and truncated"),
))
SEGMENTATION = Schema((
    Image("image", encoding="jpeg", description="the published JPEG bytes (JPEGImages), sizes vary"),
    Mask("segmentation_class", encoding="png", names=("background", *CLASSES),
         description="SegmentationClass PNG: palette index 0 background, 1..20 the classes, 255 boundary/void"),
    Mask("segmentation_object", encoding="png",
         description="SegmentationObject PNG: palette index 0 background, n the n-th object of the XML, 255 "
                     "boundary/void"),
))


def _splits(main: tuple[int, int, int], segmentation: tuple[int, int], test: tuple[int, int] | None = None
            ) -> tuple[Split, ...]:
    splits = [
        Split("train", main[0], "ImageSets/Main/train.txt: photos and their objects"),
        Split("val", main[1], "ImageSets/Main/val.txt"),
        Split("trainval", main[2], "ImageSets/Main/trainval.txt: train and val together, as final models are trained"),
    ]
    if test is not None:
        splits.append(Split("test", test[0], "ImageSets/Main/test.txt (the test tar)"))
    splits += [
        Split("segmentation_train", segmentation[0], "ImageSets/Segmentation/train.txt: photos and their "
              "class and object label maps", schema=SEGMENTATION),
        Split("segmentation_val", segmentation[1], "ImageSets/Segmentation/val.txt", schema=SEGMENTATION),
    ]
    if test is not None:
        splits.append(Split("segmentation_test", test[1], "ImageSets/Segmentation/test.txt (the test tar)",
                            schema=SEGMENTATION))
    return tuple(splits)


SOURCES_2012 = (
    _tar(TRAINVAL_2012, "2012", 1999639040, 17125, md5="6cd6e144f989b92b3379bac3b3de84fd",
         sha256="e14f763270cf193d0b5f74b169f44157a4b0c6efa708f4dd0ff78ee691763bcb", checksum_source=PUBLISHED_2012),
)
SOURCES_2007 = (
    _tar(TRAINVAL_2007, "2007", 460032000, 5011, md5="c52e279531787c972589f7e41ab4ae64",
         sha256="7d8cd951101b0957ddfd7a530bdc8a94f06121cfc1e511bb5937e973020c7508", checksum_source=PUBLISHED_2007),
    _tar(TEST_2007, "2007", 451020800, 4952,
         sha256="6836888e2e01dca84577a849d339fa4f73e1e4f135d312430c4856b5609b4892", checksum_source=PUBLISHED_2007_TEST),
)
SPLITS_2012 = _splits((5717, 5823, 11540), (1464, 1449))
SPLITS_2007 = _splits((2501, 2510, 5011), (209, 213), test=(4952, 210))
# The splits whose record count is published, checked against the list file before converting
# (Voc.stated_counts). For 2012 the publisher gives totals that no list file states (11,530
# images with 27,450 boxed objects and 6,929 segmentations, as the Caffe2 datasets page repeats
# them); the one count published per list is segmentation train's 1,464 (the DEXTR README).
# None is published for 2007. The other counts above are the lists' lengths as commonly quoted:
# shown in progress, not enforced.
PUBLISHED_COUNTS = {"2012": frozenset({"segmentation_train"}), "2007": frozenset()}


class Voc(Recipe):
    name = "voc"
    version = "1.0.0"
    title = "PASCAL Visual Object Classes (VOC)"
    description = ("Photographs from Flickr with every object of 20 classes boxed and named (with difficult and "
                   "truncated flags), and for a subset pixel-wise class and object segmentations. Detection "
                   "splits follow ImageSets/Main, segmentation splits ImageSets/Segmentation; records follow "
                   "the list file's order. The 2012 test images need an evaluation-server login and are not "
                   "included; VOC 2007's test set was published with its annotations and is.")
    homepage = "http://host.robots.ox.ac.uk/pascal/VOC/"
    license = "images from Flickr under Flickr's terms of use; annotations for research use"
    citation = ("@article{everingham2010pascal, title={The Pascal Visual Object Classes (VOC) Challenge}, "
                "author={Everingham, Mark and Van Gool, Luc and Williams, Christopher K. I. and Winn, John and "
                "Zisserman, Andrew}, journal={International Journal of Computer Vision}, volume={88}, number={2}, "
                "pages={303--338}, year={2010}, doi={10.1007/s11263-009-0275-4}}")
    sources = SOURCES_2012
    splits = SPLITS_2012
    schema = DETECTION
    channel_order = "BGR"  # photos, as convert_imageset writes them
    variants = (
        Variant("2012", "VOC 2012 trainval (11,540 detection and 2,913 segmentation images)",
                sources=SOURCES_2012, splits=SPLITS_2012),
        Variant("2007", "VOC 2007 trainval and test (test annotations published)",
                sources=SOURCES_2007, splits=SPLITS_2007),
    )

    @property
    def year(self) -> str:
        return self.variant or self.variants[0].name

    def archive(self, split: str) -> str:
        """The tar holding ``split``."""
        if split.endswith("test"):
            return TEST_2007
        return TRAINVAL_2007 if self.year == "2007" else TRAINVAL_2012

    def inputs(self, split: str, files: Mapping[str, Path]) -> list[Input]:
        """One input per listed image: where its JPEG and its XML (or PNGs) lie in the tar, from one walk."""
        ids, found = self._walk(split, files)
        return [Input(image_id, 1, tuple(found.get(name) for name in member_names(split, image_id)))
                for image_id in ids]

    def stated_counts(self, split: str, files: Mapping[str, Path]) -> list[Count]:
        """How many image ids the split's list file holds, for a split whose count is published.

        Within a prepare the tar's headers are walked once for this and :meth:`inputs`.
        """
        if split not in PUBLISHED_COUNTS[self.year]:
            return []
        ids, _ = self._walk(split, files)
        listing = f"VOCdevkit/VOC{self.year}/{list_file(split)}"
        return [Count(self.archive(split), f"member {listing!r}", "image ids", len(ids))]

    def _walk(self, split: str, files: Mapping[str, Path]) -> tuple[list[str], dict[str, Extent]]:
        """The split's image ids, and where each member of the split's kind lies, from one walk of the tar."""
        from thresher.sources.members import iter_archive

        self.split(split)
        tar = self.archive(split)
        root = f"VOCdevkit/VOC{self.year}/"
        listing = root + list_file(split)
        wanted = _wanted_suffixes(split)
        found: dict[str, Extent] = {}
        text: bytes | None = None
        source = self.source(tar)
        limits = source.contents.limits(max_member_size=64 << 20, max_read_size=64 << 20)  # type: ignore[union-attr]
        for member in iter_archive(files[tar], limits=limits, label=tar):
            if member.name == listing:
                text = member.read()
            elif member.name.startswith(root) and member.name.endswith(wanted) and member.extent is not None:
                found[member.name[len(root):]] = member.extent
        if text is None:
            raise MalformedDataError(tar, f"member {listing!r}", "is missing: it lists the images of split " + split)
        return image_ids(text, f"{tar}:{listing}"), found

    def read(self, split: str, files: Mapping[str, Path], part: Input) -> Iterator[Record | BadRecord]:
        yield self._record(split, part.name, part.where)

    def _record(self, split: str, image_id: str, extents: tuple[Extent | None, ...]) -> Record | BadRecord:
        tar = self.archive(split)
        names = member_names(split, image_id)
        root = f"VOCdevkit/VOC{self.year}/"
        for name, extent in zip(names, extents, strict=True):
            if extent is None:
                return BadRecord(tar, root + name, f"image {image_id} of {list_file(split)} is missing from the archive")
        jpeg, *rest = extents
        start = head(jpeg, 3)  # type: ignore[arg-type]
        if not start.startswith(b"\xff\xd8"):
            return BadRecord(tar, root + names[0], f"not a JPEG file (starts with {start.hex(' ') or 'nothing'})")
        record: Record = {"image": jpeg, WHERE: f"{tar}:{root}{names[0]}"}
        if split.startswith("segmentation"):
            for field, name, extent in zip(("segmentation_class", "segmentation_object"), names[1:], rest, strict=True):
                if head(extent, 8) != PNG_SIGNATURE:  # type: ignore[arg-type]
                    return BadRecord(tar, root + name, "not a PNG file")
                record[field] = extent
            return record
        objects = parse_annotation(rest[0].read(), f"{tar}:{root}{names[1]}")  # type: ignore[union-attr]
        if isinstance(objects, str):
            return BadRecord(tar, root + names[1], objects)
        record["objects"] = objects
        return record

    def locate(self, split: str, index: int) -> str:
        return f"{self.archive(split)} image number {index} of {list_file(split)}"

    def write_miniature(self, directory: Path) -> Miniature:
        """Eight photos in the devkit layout: XML from a text template, palette PNGs and JPEGs by PIL, tar by tarfile.

        The annotations carry what real ones do: a person with ``part`` boxes (not objects),
        a box written with decimals, an object without ``difficult``, several objects per photo.
        """
        from thresher.miniature import write_tar

        ids = [f"{2007 if self.year == '2007' else 2008}_{n:06d}" for n in (8, 23, 27, 33, 42, 61, 73, 88)]
        photos = {image_id: _mini_photo(i, image_id) for i, image_id in enumerate(ids)}
        lists = {"train": ids[:3], "val": ids[3:6], "segmentation_train": [ids[2], ids[0]],
                 "segmentation_val": [ids[4]]}
        lists["trainval"] = sorted(lists["train"] + lists["val"])
        test_ids = [ids[7], ids[6]] if self.year == "2007" else []
        if test_ids:
            lists["test"], lists["segmentation_test"] = test_ids, [ids[6]]
        tars: dict[str, dict[str, bytes | None]] = {}
        root = f"VOCdevkit/VOC{self.year}/"
        for split, members in lists.items():
            tar = tars.setdefault(self.archive(split), {"VOCdevkit": None, root[:-1]: None})
            tar[root + list_file(split)] = "".join(f"{i}\n" for i in members).encode()
            for image_id in members:
                photo = photos[image_id]
                tar[f"{root}JPEGImages/{image_id}.jpg"] = photo.jpeg
                tar[f"{root}Annotations/{image_id}.xml"] = photo.xml(self.year)
                if split.startswith("segmentation_"):
                    tar[f"{root}SegmentationClass/{image_id}.png"] = photo.png("class")
                    tar[f"{root}SegmentationObject/{image_id}.png"] = photo.png("object")
        files = {}
        for tar, members in tars.items():  # members in name order, as the published tars list them
            files[tar] = write_tar(directory / tar, dict(sorted(members.items())))
        records = {split: [photos[i].record(split) for i in members] for split, members in lists.items()}
        return Miniature(files, records)


def list_file(split: str) -> str:
    """The ImageSets list of ``split``."""
    if split.startswith("segmentation_"):
        return f"ImageSets/Segmentation/{split[len('segmentation_'):]}.txt"
    return f"ImageSets/Main/{split}.txt"


def member_names(split: str, image_id: str) -> tuple[str, ...]:
    """The members a record of ``split`` is made of, under ``VOCdevkit/VOC<year>/``."""
    if split.startswith("segmentation_"):
        return (f"JPEGImages/{image_id}.jpg", f"SegmentationClass/{image_id}.png", f"SegmentationObject/{image_id}.png")
    return f"JPEGImages/{image_id}.jpg", f"Annotations/{image_id}.xml"


def _wanted_suffixes(split: str) -> tuple[str, ...]:
    return (".jpg", ".png") if split.startswith("segmentation_") else (".jpg", ".xml")


def image_ids(text: bytes, where: str) -> list[str]:
    """The ids of a list file, one a line (``2007_000027``); a line of anything else is malformed."""
    try:
        lines = text.decode("ascii").splitlines()
    except UnicodeDecodeError as exc:
        raise MalformedDataError(where, f"byte {exc.start}", "is not ASCII text (a list of image ids)") from None
    ids = []
    for number, line in enumerate(lines, 1):
        image_id = line.strip()
        if not image_id:
            continue
        if not image_id.replace("_", "").isalnum() or len(image_id.split()) != 1:
            raise MalformedDataError(where, f"line {number}", f"{line[:40]!r} is not an image id")
        ids.append(image_id)
    return ids


def parse_annotation(xml: bytes, where: str) -> dict[str, Any] | str:
    """The objects of one VOC XML annotation, or what is wrong with it.

    Boxes keep the published numbers (1-based, max inclusive; a few files write them with a
    decimal point). A missing ``difficult`` or ``truncated`` is 0, as the devkit reads it.
    """
    import xml.etree.ElementTree as ElementTree

    import numpy as np

    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as exc:
        return f"not well-formed XML: {exc}"
    boxes, labels, flags = [], [], {flag: [] for flag in FLAGS}  # type: ignore[var-annotated]
    for number, obj in enumerate(root.findall("object"), 1):
        name = (obj.findtext("name") or "").strip()
        if name not in CLASSES:
            return f"object {number}: class {name!r} is not one of the 20 VOC classes"
        box = obj.find("bndbox")
        if box is None:
            return f"object {number} ({name}) has no bndbox"
        corners = []
        for corner in CORNERS:
            text = (box.findtext(corner) or "").strip()
            try:
                corners.append(float(text))
            except ValueError:
                return f"object {number} ({name}): bndbox/{corner} {text!r} is not a number"
        if not all(np.isfinite(corners)) or corners[2] < corners[0] or corners[3] < corners[1]:
            return f"object {number} ({name}): bndbox {corners} has a max below its min"
        for flag in FLAGS:
            text = (obj.findtext(flag) or "0").strip()
            if text not in ("0", "1"):
                return f"object {number} ({name}): {flag} is {text!r}, not 0 or 1"
            flags[flag].append(text == "1")
        boxes.append(corners)
        labels.append(CLASSES.index(name))
    return {"boxes": np.array(boxes, np.float32).reshape(-1, 4), "labels": np.array(labels, np.int64),
            **{flag: np.array(values, bool) for flag, values in flags.items()}}


_XML = """<annotation>
\t<folder>VOC{year}</folder>
\t<filename>{image_id}.jpg</filename>
\t<source>
\t\t<database>The VOC{year} Database</database>
\t\t<annotation>PASCAL VOC{year}</annotation>
\t\t<image>flickr</image>
\t</source>
\t<size>
\t\t<width>{width}</width>
\t\t<height>{height}</height>
\t\t<depth>3</depth>
\t</size>
\t<segmented>{segmented}</segmented>
{objects}</annotation>
"""
_OBJECT = """\t<object>
\t\t<name>{name}</name>
\t\t<pose>Unspecified</pose>
\t\t<truncated>{truncated}</truncated>
{difficult}\t\t<bndbox>
\t\t\t<xmin>{xmin}</xmin>
\t\t\t<ymin>{ymin}</ymin>
\t\t\t<xmax>{xmax}</xmax>
\t\t\t<ymax>{ymax}</ymax>
\t\t</bndbox>
{parts}\t</object>
"""
_PART = """\t\t<part>
\t\t\t<name>head</name>
\t\t\t<bndbox>
\t\t\t\t<xmin>2</xmin>
\t\t\t\t<ymin>2</ymin>
\t\t\t\t<xmax>5</xmax>
\t\t\t\t<ymax>5</ymax>
\t\t\t</bndbox>
\t\t</part>
"""


class _MiniPhoto:
    """One miniature photo: its JPEG, objects, and label maps drawn from the same boxes."""

    def __init__(self, jpeg: bytes, size: tuple[int, int], image_id: str, objects: list[tuple[Any, ...]]) -> None:
        self.jpeg, self.size, self.image_id, self.objects = jpeg, size, image_id, objects

    def xml(self, year: str) -> bytes:
        parts = []
        for n, (label, box, difficult, truncated) in enumerate(self.objects):
            text = [f"{v:.1f}" if n == 1 else str(int(v)) for v in box]  # the second object in decimals
            parts.append(_OBJECT.format(
                name=CLASSES[label], truncated=int(truncated), xmin=text[0], ymin=text[1], xmax=text[2], ymax=text[3],
                difficult="" if n == 2 else f"\t\t<difficult>{int(difficult)}</difficult>\n",  # one without
                parts=_PART if CLASSES[label] == "person" else ""))
        width, height = self.size
        return _XML.format(year=year, image_id=self.image_id, width=width, height=height, segmented=1,
                           objects="".join(parts)).encode()

    def png(self, kind: str) -> bytes:
        import numpy as np
        from PIL import Image as PILImage

        width, height = self.size
        indexes = np.zeros((height, width), np.uint8)
        for n, (label, box, _, _) in enumerate(self.objects, 1):
            x0, y0, x1, y1 = (int(v) - 1 for v in box)
            indexes[y0:y1 + 1, x0:x1 + 1] = BOUNDARY
            indexes[y0 + 1:y1, x0 + 1:x1] = label + 1 if kind == "class" else n
        image = PILImage.fromarray(indexes, "P")
        image.putpalette(_voc_palette())
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        return buffer.getvalue()

    def record(self, split: str) -> Record:
        import numpy as np

        if split.startswith("segmentation_"):
            return {"image": self.jpeg, "segmentation_class": self.png("class"),
                    "segmentation_object": self.png("object")}
        return {"image": self.jpeg, "objects": {
            "boxes": np.array([box for _, box, _, _ in self.objects], np.float32).reshape(-1, 4),
            "labels": np.array([label for label, _, _, _ in self.objects], np.int64),
            "difficult": np.array([d and n != 2 for n, (_, _, d, _) in enumerate(self.objects)], bool),
            "truncated": np.array([t for _, _, _, t in self.objects], bool)}}


def _mini_photo(number: int, image_id: str) -> _MiniPhoto:
    import numpy as np
    from PIL import Image as PILImage

    from thresher.miniature import drawn_image

    rng = np.random.default_rng(2012 + number)
    width, height = int(rng.integers(24, 48)), int(rng.integers(20, 40))
    objects = []
    for n in range(1 + number % 3):
        label = int(rng.integers(0, len(CLASSES))) if n else (14 if number == 1 else number % len(CLASSES))
        x0, y0 = int(rng.integers(1, width // 2)), int(rng.integers(1, height // 2))
        x1, y1 = int(rng.integers(x0 + 3, width + 1)), int(rng.integers(y0 + 3, height + 1))
        objects.append((label, (x0, y0, x1, y1), bool(rng.integers(0, 2)), bool(rng.integers(0, 2))))
    pixels = drawn_image(image_id[-2:], (height, width), background=(30 * number % 256, 90, 160), noise=15,
                         seed=number)
    buffer = io.BytesIO()
    PILImage.fromarray(pixels, "RGB").save(buffer, "JPEG", quality=80)
    return _MiniPhoto(buffer.getvalue(), (width, height), image_id, objects)


def _voc_palette() -> list[int]:
    """The devkit's colour map: class i's colour from i's bits, spread over R, G and B."""
    palette = []
    for index in range(256):
        r = g = b = 0
        value = index
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        palette += [r, g, b]
    return palette


RECIPE = Voc()
