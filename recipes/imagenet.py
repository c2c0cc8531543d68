"""ImageNet ILSVRC2012 classification: 1.28 million training photos of 1,000 classes, by manual download.

The train tar is uncompressed and holds one uncompressed tar per class (``n01440764.tar``, named
by WordNet id). Each class tar is an independent input: its JPEGs are listed once, by walking
its headers where it lies in the outer file, and read by extent, so a worker or a Dask task
reads only its own classes and nothing is extracted to disk. Validation and test are flat tars
of JPEGs, read in sorted file-name order in inputs of :data:`CHUNK` images.

The class index is the position of the WordNet id among the 1,000 leaf synsets of the devkit's
``meta.mat`` in sorted order, the order of Caffe's ``synsets.txt`` and torchvision; the
validation ground truth lists ILSVRC2012_IDs, mapped to WordNet ids through ``meta.mat``.
Images are stored as published: 22 training files are CMYK JPEGs and one is a PNG with a
``.JPEG`` name (:data:`ODD_FILES`); ``--resize`` decodes them to RGB like every other photo.
"""

from __future__ import annotations

import copy
import re
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thresher.errors import MalformedDataError
from thresher.features import ClassLabel, Image, Integer, Schema
from thresher.published import Contents, Count
from thresher.recipe import WHERE, BadRecord, Input, Miniature, Recipe, Record, Source, Split, Variant
from thresher.sources.archive import Limits, Member, iter_tar, iter_tar_at, read_tar_members
from thresher.sources.extent import Extent

TRAIN = "ILSVRC2012_img_train.tar"
VAL = "ILSVRC2012_img_val.tar"
TEST = "ILSVRC2012_img_test_v10102019.tar"
DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
META = "ILSVRC2012_devkit_t12/data/meta.mat"
GROUND_TRUTH = "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt"
BASES = ("https://image-net.org/data/ILSVRC/2012/", "http://www.image-net.org/challenges/LSVRC/2012/nnoupb/")
PUBLISHED = ("md5: torchvision imagenet.py; size+sha256: TFDS url_checksums/imagenet2012.txt; "
             "sha1 {sha1}: gluon-cv scripts/datasets/imagenet.py")
NUM_CLASSES = 1000
NUM_TRAIN, NUM_VAL, NUM_TEST = 1_281_167, 50_000, 100_000
TRAIN_BYTES, VAL_BYTES = 147_897_477_120, 6_744_924_160
CHUNK = 1000  # validation and test images per input
IMAGE_BYTES = 64 << 20  # no per-image size is published: a bound of our own for one photo
# The train tar holds a tar per class; each class tar holds that class's photos.
TRAIN_LIMITS = Contents(TRAIN_BYTES, NUM_CLASSES).limits()
PHOTO_LIMITS = Contents(TRAIN_BYTES, NUM_TRAIN).limits(max_member_size=IMAGE_BYTES, max_read_size=IMAGE_BYTES)
VAL_LIMITS = Contents(VAL_BYTES, NUM_VAL).limits(max_member_size=IMAGE_BYTES, max_read_size=IMAGE_BYTES)
# Neither the test tar's nor the devkit's unpacked size is published: bounds of our own.
TEST_LIMITS = Limits(max_members=2 * NUM_TEST, max_member_size=IMAGE_BYTES, max_read_size=IMAGE_BYTES,
                     max_total_size=4 * VAL_BYTES, basis="our bound: the test tar's size is not published")
DEVKIT_LIMITS = Limits(max_members=1000, max_member_size=64 << 20, max_total_size=256 << 20, max_read_size=64 << 20,
                       basis="our bound: the devkit's unpacked size is not published")
WNID = re.compile(r"n\d{8}")
CMYK_FILES = (
    "n01739381_1309.JPEG", "n02077923_14822.JPEG", "n02447366_23489.JPEG", "n02492035_15739.JPEG",
    "n02747177_10752.JPEG", "n03018349_4028.JPEG", "n03062245_4620.JPEG", "n03347037_9675.JPEG",
    "n03467068_12171.JPEG", "n03529860_11437.JPEG", "n03544143_17228.JPEG", "n03633091_5218.JPEG",
    "n03710637_5125.JPEG", "n03961711_5286.JPEG", "n04033995_2932.JPEG", "n04258138_17003.JPEG",
    "n04264628_27969.JPEG", "n04336792_7448.JPEG", "n04371774_5854.JPEG", "n04596742_4225.JPEG",
    "n07583066_647.JPEG", "n13037406_4650.JPEG",
)
PNG_FILES = ("n02105855_2933.JPEG",)
ODD_FILES = CMYK_FILES + PNG_FILES
_MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG": "PNG"}

MANUAL = """\
ImageNet is free for non-commercial research and education, after registration: make an account on
https://image-net.org and accept its terms of access; the ILSVRC2012 files are then downloadable from
the addresses below while you are logged in. Put the four files in the directory below under these
names, as downloaded: not renamed, not unpacked (thresher reads the tars in place)."""


def _source(filename: str, size: int | None = None, md5: str | None = None, sha256: str | None = None,
            published: str = "none published", contents: Contents | None = None) -> Source:
    return Source.from_bases(filename, BASES, size=size, md5=md5, sha256=sha256, checksum_source=published,
                             manual=True, contents=contents)


def _photos(description: str) -> Image:
    return Image("image", encoding="jpeg", description=description)


IMAGE_NOTE = ("the published file's bytes: JPEG, except that train holds 22 CMYK JPEGs ("
              + ", ".join(CMYK_FILES) + ") and a PNG named " + PNG_FILES[0]
              + "; decoding or --resize gives RGB for all")


class ImageNet(Recipe):
    name = "imagenet"
    version = "1.0.0"
    title = "ImageNet Large Scale Visual Recognition Challenge 2012 (ILSVRC2012), classification"
    description = ("1,281,167 training photos of 1,000 object classes (WordNet leaf synsets), 50,000 validation "
                   "photos and 100,000 unlabelled test photos. The label is the position of the class's WordNet "
                   "id among the 1,000 in sorted order (as Caffe's synsets.txt and torchvision number them); a "
                   "class's name is its synset words in the devkit's meta.mat. thresher prepare makes what "
                   "Caffe's create_imagenet.sh makes: LMDB of photos resized to 256x256, BGR; --resize none "
                   "keeps the published JPEGs.")
    homepage = "https://image-net.org/"
    license = "ImageNet terms of access: non-commercial research and education, after registration"
    citation = ("@article{ILSVRC15, author={Russakovsky, Olga and Deng, Jia and Su, Hao and Krause, Jonathan and "
                "Satheesh, Sanjeev and Ma, Sean and Huang, Zhiheng and Karpathy, Andrej and Khosla, Aditya and "
                "Bernstein, Michael and Berg, Alexander C. and Fei-Fei, Li}, title={{ImageNet Large Scale Visual "
                "Recognition Challenge}}, journal={International Journal of Computer Vision (IJCV)}, "
                "volume={115}, number={3}, pages={211--252}, year={2015}, doi={10.1007/s11263-015-0816-y}}")
    sources = (
        _source(TRAIN, TRAIN_BYTES, "1d675b47d978889d74fa0da5fadfb00e",
                "b08200a27a8e34218a0e58fde36b0fe8f73bc377f4acea2d91602057c3ca45bb",
                PUBLISHED.format(sha1="43eda4fe35c1705d6606a6a7a633bc965d194284"),
                Contents(TRAIN_BYTES, NUM_CLASSES)),
        _source(VAL, VAL_BYTES, "29b22e2961454d5413ddabcf34fc5622",
                "c7e06a6c0baccf06d8dbeb6577d71efff84673a5dbdd50633ab44f8ea0456ae0",
                PUBLISHED.format(sha1="5f3f73da3395154b60528b2b2a2caf2374f5f178"), Contents(VAL_BYTES, NUM_VAL)),
        _source(DEVKIT, md5="fa75699e90414af021442c21a62c3abf",
                published="md5: torchvision imagenet.py (size and sha256 not published)"),
        _source(TEST),
    )
    splits = (
        Split("train", NUM_TRAIN, "one input per class tar, classes in the train tar's order; the commonly "
                                  "quoted count"),
        Split("validation", NUM_VAL, "in sorted file-name order, labels from the devkit's ground truth"),
        Split("test", NUM_TEST, "images only, in sorted file-name order",
              schema=Schema((_photos("the published JPEG bytes, sizes vary"),))),
    )
    schema = Schema((
        _photos(IMAGE_NOTE),
        Integer("label", minimum=0, maximum=NUM_CLASSES - 1, dims=(1,),
                description="position of the WordNet id among meta.mat's leaf synsets, sorted (a class "
                            "label named by their synset words once the devkit is there)"),
    ))
    channel_order = "BGR"  # photos, as convert_imageset writes them
    default_resize = (256, 256)  # create_imagenet.sh's RESIZE=true; --resize none keeps the published files
    manual_instructions = MANUAL
    plain_edition = True  # imagenet alone is ILSVRC2012, as before imagenet/21k
    variants = (Variant("21k", "the whole of ImageNet, fall 2011 or winter 2021 release (whichever you place), "
                               "with a seeded per-class hold-out for validation"),)

    def with_variant(self, name: str | None) -> Recipe:
        """ILSVRC2012 for ``imagenet``; ``imagenet/21k`` is a recipe of its own (recipes/_imagenet21k.py)."""
        if name == "21k":
            from thresher.recipes._imagenet21k import RECIPE21K

            return RECIPE21K
        return super().with_variant(name)

    # -- the splits as inputs ------------------------------------------------------------------

    def inputs(self, split: str, files: Mapping[str, Path]) -> Iterable[Input]:
        """Train: one input per class tar, listed lazily. Validation and test: runs of :data:`CHUNK` images."""
        if split == "train":
            return self._class_inputs(files)
        archive = VAL if split == "validation" else TEST
        photos = sorted(_flat_members(files[archive], archive), key=lambda m: m[0].rsplit("/", 1)[-1])
        labels: list[int | str] | None = None
        if split == "validation":
            labels = _validation_labels(_devkit(files), len(photos))
        return [
            Input(f"{archive} images {start + 1}-{start + len(chunk)}", len(chunk),
                  Photos.of(archive, chunk, labels[start:start + len(chunk)] if labels is not None else None, start))
            for start in range(0, len(photos), CHUNK)
            for chunk in [photos[start:start + CHUNK]]
        ]

    def _class_inputs(self, files: Mapping[str, Path]) -> Iterator[Input]:
        """One input per class tar: where it lies and how many photos it holds, not the photos themselves.

        The worker that reads a class walks its headers again (cheap beside decoding), so the
        lister holds a few numbers per class rather than 1.3 million names and extents. The
        outer tar and the devkit are checked now; each class's photos are counted (a walk of
        its headers) as the conversion reaches it, so workers start while the rest are counted.
        """
        index = {wnid: i for i, wnid in enumerate(_devkit(files).classes.wnids)}
        classes = []
        for wnid, member in class_tars(files[TRAIN], TRAIN, TRAIN_LIMITS):
            if wnid not in index:
                raise MalformedDataError(TRAIN, f"member {member.name!r}",
                                         f"{wnid} is not one of the leaf synsets of {META}")
            classes.append((wnid, ClassTar.at(TRAIN, member, index[wnid], "the published train tar is uncompressed")))
        return (Input(wnid, len(where.photos(PHOTO_LIMITS)), where) for wnid, where in classes)

    def read(self, split: str, files: Mapping[str, Path], part: Input) -> Iterator[Record | BadRecord]:
        if isinstance(part.where, ClassTar):
            yield from part.where.records(part.where.photos(PHOTO_LIMITS))
            return
        photos: Photos = part.where
        for i, name in enumerate(photos.names):
            extent = photos.extent(i)
            problem = photo_problem(extent.read(4))
            if problem:
                yield BadRecord(photos.archive, f"member {name!r}", problem)
                continue
            record: Record = {"image": extent, WHERE: f"{photos.archive}:{name}"}
            if photos.labels is not None:
                label = photos.labels[i]
                if isinstance(label, str):
                    yield BadRecord(GROUND_TRUTH, f"line {photos.first + i + 1} ({name})", label)
                    continue
                record["label"] = label
            yield record

    def stated_counts(self, split: str, files: Mapping[str, Path]) -> list[Count]:
        """How many images the validation ground truth labels (train and test count only by walking)."""
        if split != "validation":
            return []
        lines = _devkit(files).ground_truth.splitlines()
        return [Count(f"{DEVKIT}:{GROUND_TRUTH}", "lines", "validation labels", len(lines))]

    def locate(self, split: str, index: int) -> str:
        return f"imagenet {split} image {index} (in {TRAIN} class order)" if split == "train" else \
            f"imagenet {split} image {index} in sorted file-name order"

    refines_schema = True

    def with_files(self, files: Mapping[str, Path]) -> Recipe:
        """The label as a class label named by the devkit's synset words (``meta.mat``)."""
        names = tuple(words for _, words in self.class_names(files))
        label = ClassLabel("label", names=names, dims=(1,),
                           description="position of the WordNet id among meta.mat's leaf synsets, sorted; "
                                       "named by its synset words")
        edition = copy.copy(self)
        edition.schema = Schema((self.schema["image"], label))
        return edition

    def class_names(self, files: Mapping[str, Path]) -> list[tuple[str, str]]:
        """``(WordNet id, synset words)`` of each class index, from the devkit's ``meta.mat``."""
        classes = _devkit(files).classes
        return list(zip(classes.wnids, classes.words, strict=True))

    def write_miniature(self, directory: Path) -> Miniature:
        from thresher.recipes._imagenet_miniature import write

        return write(directory)


# -- the devkit --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Classes:
    """The leaf synsets of ``meta.mat``: WordNet ids sorted (the class index order) and their words."""

    wnids: tuple[str, ...]
    words: tuple[str, ...]
    by_id: Mapping[int, str]  # ILSVRC2012_ID -> WordNet id, for the validation ground truth


@dataclass(frozen=True)
class Devkit:
    classes: Classes
    ground_truth: str


def _devkit(files: Mapping[str, Path]) -> Devkit:
    found = read_tar_members(files[DEVKIT], [META, GROUND_TRUTH], limits=DEVKIT_LIMITS)
    try:
        text = found[GROUND_TRUTH].decode("ascii")
    except UnicodeDecodeError as exc:
        raise MalformedDataError(f"{DEVKIT}:{GROUND_TRUTH}", f"byte {exc.start}", "is not ASCII text") from None
    return Devkit(parse_meta(found[META]), text)


def parse_meta(data: bytes) -> Classes:
    """The leaf classes of ``meta.mat``'s ``synsets`` struct array (num_children == 0)."""
    import numpy as np

    from thresher.sources.matlab import load_mat

    source = f"{DEVKIT}:{META}"
    variables = load_mat(data, source=source)
    synsets = variables.get("synsets")
    if synsets is None:
        raise MalformedDataError(source, "variable 'synsets'",
                                 f"is missing (variables found: {', '.join(sorted(variables)) or 'none'})")
    entries = [synsets] if isinstance(synsets, dict) else list(np.asarray(synsets, dtype=object).reshape(-1))
    leaves: dict[str, str] = {}
    by_id: dict[int, str] = {}
    for number, entry in enumerate(entries, 1):
        where = f"synsets({number})"
        if not isinstance(entry, dict):
            raise MalformedDataError(source, where, f"expected a struct, found {type(entry).__name__}")
        missing = [f for f in ("ILSVRC2012_ID", "WNID", "words", "num_children") if f not in entry]
        if missing:
            raise MalformedDataError(source, where, f"has no field {', '.join(missing)}")
        ident = _whole_number(entry["ILSVRC2012_ID"], source, f"{where}.ILSVRC2012_ID")
        children = _whole_number(entry["num_children"], source, f"{where}.num_children")
        wnid, words = entry["WNID"], entry["words"]
        if not (isinstance(wnid, str) and WNID.fullmatch(wnid)):
            raise MalformedDataError(source, f"{where}.WNID", f"{wnid!r} is not a WordNet id like 'n01440764'")
        if not isinstance(words, str):
            raise MalformedDataError(source, f"{where}.words", f"expected text, found {type(words).__name__}")
        if ident in by_id:
            raise MalformedDataError(source, f"{where}.ILSVRC2012_ID", f"{ident} is also {by_id[ident]}'s id")
        by_id[ident] = wnid
        if children == 0:
            if wnid in leaves:
                raise MalformedDataError(source, f"{where}.WNID", f"{wnid} is listed twice")
            leaves[wnid] = words
    if not leaves:
        raise MalformedDataError(source, "variable 'synsets'", "has no leaf synset (num_children == 0)")
    wnids = tuple(sorted(leaves))
    leaf_ids = {ident: wnid for ident, wnid in by_id.items() if wnid in leaves}
    return Classes(wnids, tuple(leaves[w] for w in wnids), leaf_ids)


def _whole_number(value: Any, source: str, where: str) -> int:
    import numpy as np

    array = np.asarray(value)
    if array.size != 1 or array.dtype.kind not in "iuf" or array.reshape(-1)[0] != int(array.reshape(-1)[0]):
        raise MalformedDataError(source, where, f"expected one whole number, found {value!r:.60}")
    return int(array.reshape(-1)[0])


def _validation_labels(devkit: Devkit, count: int) -> list[int | str]:
    """Each validation image's class index (or why its ground-truth line is unusable), in file-name order."""
    source = f"{DEVKIT}:{GROUND_TRUTH}"
    lines = devkit.ground_truth.splitlines()
    if len(lines) != count:
        raise MalformedDataError(source, f"line {min(len(lines), count) + 1}",
                                 f"{len(lines)} labels for the {count} images of {VAL}: every image needs one line")
    index = {wnid: i for i, wnid in enumerate(devkit.classes.wnids)}
    labels: list[int | str] = []
    for line in lines:
        text = line.strip()
        if not text.isdigit():
            labels.append(f"{text[:40]!r} is not an ILSVRC2012_ID")
        elif int(text) not in devkit.classes.by_id:
            labels.append(f"ILSVRC2012_ID {int(text)} is not a leaf synset of {META}")
        else:
            labels.append(index[devkit.classes.by_id[int(text)]])
    return labels


# -- where the photos lie ----------------------------------------------------------------------------


def class_tars(path: Path, archive: str, limits: Limits) -> Iterator[tuple[str, Member]]:
    """The members of a tar of per-synset tars with their WordNet ids; any other member is refused."""
    for member in iter_tar(path, limits=limits):
        wnid = member.name[:-len(".tar")]
        if not (member.name.endswith(".tar") and WNID.fullmatch(wnid)):
            raise MalformedDataError(archive, f"member {member.name!r}",
                                     "expected only class tars named <WordNet id>.tar, e.g. n01440764.tar")
        yield wnid, member


@dataclass(frozen=True)
class ClassTar:
    """An input that is one class tar: where it lies in the outer tar and its class index (small, picklable)."""

    label: str  # e.g. "ILSVRC2012_img_train.tar:n01440764.tar", for errors and record places
    extent: Extent
    index: int

    @classmethod
    def at(cls, archive: str, member: Member, index: int, why: str) -> ClassTar:
        """The class tar ``member`` of ``archive``; ``why`` says why the outer tar must be uncompressed."""
        if member.extent is None:
            raise MalformedDataError(archive, f"member {member.name!r}", f"is not readable in place: {why}")
        return cls(f"{archive}:{member.name}", member.extent, index)

    def photos(self, limits: Limits) -> list[tuple[str, Extent]]:
        """``(name, extent)`` of each member, from a walk of the class tar's headers where it lies."""
        return [(m.name, m.extent) for m in iter_tar_at(self.extent, limits=limits, label=self.label)]  # type: ignore[misc]

    def records(self, photos: Sequence[tuple[str, Extent]]) -> Iterator[Record | BadRecord]:
        """``photos`` of this class as records, read where they lie; a member that is no photo is named."""
        for name, extent in photos:
            problem = photo_problem(extent.read(4))
            if problem:
                yield BadRecord(self.label, f"member {name!r}", problem)
            else:
                yield {"image": extent, WHERE: f"{self.label}:{name}", "label": self.index}


def photo_problem(start: bytes) -> str:
    """Why a member starting with ``start`` (its first 4 bytes) is not a photo, or "" for a JPEG or PNG."""
    if any(start.startswith(magic) for magic in _MAGIC):
        return ""
    return f"not a JPEG or PNG file (starts with {start.hex(' ') or 'nothing'})"


def _flat_members(path: Path, archive: str) -> list[tuple[str, Extent]]:
    limits = VAL_LIMITS if archive == VAL else TEST_LIMITS
    found = []
    for member in iter_tar(path, limits=limits):
        if member.extent is None:
            raise MalformedDataError(archive, f"member {member.name!r}",
                                     "is not readable in place: the published tar is uncompressed")
        found.append((member.name, member.extent))
    return found


@dataclass(frozen=True)
class Photos:
    """Where one input's photos lie in a tar on disk, kept compact: names, offsets, sizes, labels.

    A whole class's extents travel to the worker or Dask task that reads it; arrays of numbers
    keep 1.3 million of them small in the process that lists them.
    """

    archive: str  # for record places, e.g. "ILSVRC2012_img_train.tar:n01440764.tar"
    path: str
    inode: int
    mtime_ns: int
    names: tuple[str, ...]
    offsets: array
    sizes: array
    labels: tuple[int | str, ...] | None  # a class index, or why the ground truth gives none
    first: int = 0  # the position of the first photo in the split (its ground-truth line)

    @classmethod
    def of(cls, archive: str, photos: Sequence[tuple[str, Extent]], labels: Sequence[int | str] | None,
           first: int = 0) -> Photos:
        probe = photos[0][1] if photos else None
        return cls(archive, probe.path if probe else "", probe.inode if probe else 0, probe.mtime_ns if probe else 0,
                   tuple(name for name, _ in photos), array("q", (e.offset for _, e in photos)),
                   array("q", (e.size for _, e in photos)), tuple(labels) if labels is not None else None, first)

    def extent(self, i: int) -> Extent:
        return Extent(self.path, self.offsets[i], self.sizes[i], self.names[i], self.inode, self.mtime_ns)


RECIPE = ImageNet()
