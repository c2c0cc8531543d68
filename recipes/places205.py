"""Places205: about 2.5 million 256x256 JPEG scene photos in 205 categories, images by manual download.

The images come in one tar behind a form on the publisher's site; members lie under
``data/vision/torralba/deeplearning/images256/<letter>/<category>/``. The split lists download
directly: ``trainvalsplit_places205.tar.gz`` holds ``train_places205.csv`` and
``val_places205.csv``, lines ``<path under images256> <label>``, and they alone decide the splits
and their order. Category names are the folders of the listed paths (``abbey``,
``apartment_building/outdoor``): once the lists are downloaded the label becomes a class label
with those 205 names (:meth:`Places205.with_files`), which the manifest keeps.

The images come as the form gives them, ``imagesPlaces205_resize.tar.gz``, or as its
uncompressed tar ``imagesPlaces205_resize.tar`` (also published; used when placed). The plain
tar is walked once (headers only; the member data are skipped over) and each input is a run of
list lines with where their images lie, read by a worker or Dask task with one read per image.
The gzip'd tar cannot be entered part way: it is a single input, one pass in one process.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from thresher.errors import MalformedDataError
from thresher.features import ClassLabel, Image, Integer, Schema
from thresher.recipe import WHERE, BadRecord, Input, Miniature, Recipe, Record, Source, Split
from thresher.sources.archive import Limits
from thresher.sources.extent import Extent, head

IMAGES = "imagesPlaces205_resize.tar"
IMAGES_GZ = IMAGES + ".gz"  # as the form's link gives it
LISTS = "trainvalsplit_places205.tar.gz"
FOLDER = "trainvalsplit_places205/"
LIST_MEMBER = {"train": f"{FOLDER}train_places205.csv", "validation": f"{FOLDER}val_places205.csv"}
IMAGE_ROOT = "data/vision/torralba/deeplearning/images256/"
NUM_CLASSES = 205
LINES_PER_INPUT = 512
# Nothing is published about the files: bound what they may hold, generously.
IMAGE_LIMITS = Limits(max_members=5_000_000, max_member_size=64 << 20, max_total_size=1 << 40,
                      max_read_size=64 << 20, basis=" (no size is published for the Places205 images)")
LIST_LIMITS = Limits(max_members=100, max_member_size=1 << 30, max_total_size=2 << 30, max_read_size=1 << 30,
                     max_ratio=100.0, basis=" (no size is published for the split lists)")
LABEL_NOTE = "the list files' label, named by the folder of its images (e.g. apartment_building/outdoor)"
NONE_PUBLISHED = ("none published (the Places site gives no size or checksum); the sha256 of the first "
                  "file is recorded and verified after")


@dataclass(frozen=True)
class Line:
    """One line of a split list: where it is, the image path, and its label (None when unusable)."""

    number: int
    path: str
    label: int | None
    problem: str = ""


class Places205(Recipe):
    name = "places205"
    version = "1.0.0"
    title = "Places205 (MIT Places, 205 scene categories)"
    description = ("Scene-centric photos of 205 categories, resized to 256x256 JPEGs, as used "
                   "to train the Places-CNN models. The published split lists decide the splits: about 2.45 "
                   "million training images and 100 validation images per category. The label is the list "
                   "files' number, named by the folder of its images.")
    homepage = "http://places.csail.mit.edu/"
    license = "Places terms of use: non-commercial research and education only (see the download page)"
    citation = ("@inproceedings{zhou2014learning, title={Learning Deep Features for Scene Recognition using "
                "Places Database}, author={Zhou, Bolei and Lapedriza, Agata and Xiao, Jianxiong and Torralba, "
                "Antonio and Oliva, Aude}, booktitle={Advances in Neural Information Processing Systems 27 "
                "(NIPS 2014)}, pages={487--495}, year={2014}}")
    sources = (
        Source(LISTS, ("http://data.csail.mit.edu/places/places205/trainvalsplit_places205.tar.gz",),
               checksum_source=NONE_PUBLISHED),
        Source(IMAGES, ("http://places.csail.mit.edu/downloadData.html",), manual=True,
               checksum_source=NONE_PUBLISHED, alternative=IMAGES_GZ),
    )
    manual_instructions = (
        "Fill in the form at http://places.csail.mit.edu/downloadData.html (Places205, not Places2) to get the\n"
        "link to the resized images, imagesPlaces205_resize.tar.gz (no size or checksum is published).\n"
        "Placed as downloaded it is read as one gzip stream, by one process. Faster with --workers N:\n"
        "remove only its gzip layer, do not unpack the tar:\n"
        "    gunzip imagesPlaces205_resize.tar.gz      # leaves imagesPlaces205_resize.tar\n"
        "and every worker reads its own images from the tar in place. The split lists,\n"
        "trainvalsplit_places205.tar.gz, are downloaded for you."
    )
    # No split size is published (about 2.45 million train images and 100 validation images a
    # category are commonly quoted): the list files alone decide, and no count is stated to check
    # them against (stated_counts stays the default, none).
    splits = (
        Split("train", 2448873, "train_places205.csv, in list order (count as commonly quoted; not enforced)"),
        Split("validation", 20500, "val_places205.csv: 100 images per category, in list order"),
    )
    schema = Schema((
        Image("image", encoding="jpeg", description="the published 256x256 JPEG bytes"),
        Integer("label", minimum=0, maximum=NUM_CLASSES - 1, dims=(1,), description=LABEL_NOTE),
    ))
    channel_order = "BGR"  # photos, as convert_imageset writes them
    refines_schema = True

    def with_files(self, files: Mapping[str, Path]) -> Recipe:
        """The label as a class label named by the folders of the train list's images."""
        edition = copy.copy(self)
        label = ClassLabel("label", names=tuple(class_names(files[LISTS])), dims=(1,), description=LABEL_NOTE)
        edition.schema = Schema((self.schema["image"], label))
        return edition

    def records(self, split: str, files: Mapping[str, Path]) -> Iterator[Record | BadRecord]:
        """The images in list order: from :meth:`inputs` for the plain tar, else from one pass here.

        A compressed tar (the published ``.tar.gz``) is one stream, so the split is a single
        input. An image the pass meets before its turn in the list is held until then (in memory
        up to a bound, past it in a temporary file beside the tar); the plain tar holds none.
        """
        images = _images(files)
        if _plain_tar(images):
            yield from super().records(split, files)
            return
        from thresher.sources.members import members_in_order

        lines = _lines(files[LISTS], split)
        listed = [IMAGE_ROOT + line.path for line in lines if line.label is not None]
        found = members_in_order(images, listed, limits=IMAGE_LIMITS, label=images.name, allow_missing=True)
        try:
            for line in lines:
                member = next(found) if line.label is not None else None
                yield _record(line, member and member.read(), images.name, LIST_MEMBER[split])
        finally:
            found.close()

    def inputs(self, split: str, files: Mapping[str, Path]) -> Sequence[Input] | None:
        """Runs of list lines with their images' extents; None for a compressed tar (:meth:`records`)."""
        images = _images(files)
        if not _plain_tar(images):
            return None
        lines = _lines(files[LISTS], split)
        where = _image_extents(images)
        entries = [(line, where.get(line.path)) for line in lines]
        return [Input(f"{LIST_MEMBER[split]} lines {run[0][0].number}..{run[-1][0].number}", len(run), tuple(run))
                for run in (entries[i:i + LINES_PER_INPUT] for i in range(0, len(entries), LINES_PER_INPUT))]

    def read(self, split: str, files: Mapping[str, Path], part: Input) -> Iterator[Record | BadRecord]:
        name = _images(files).name
        for line, extent in part.where:
            yield _record(line, extent, name, LIST_MEMBER[split])

    def locate(self, split: str, index: int) -> str:
        return f"{LISTS}:{LIST_MEMBER[split]} entry {index + 1}"

    def write_miniature(self, directory: Path) -> Miniature:
        """Every class once in train (tiny JPEGs), a few in validation, one nested category, lists by hand."""
        import io

        from PIL import Image as Picture

        from thresher.miniature import drawn_image, write_tar
        names = miniature_class_names()
        jpegs: dict[str, bytes] = {}
        train, validation = [], []
        for label, name in enumerate(names):
            for second in range(2 if label % 50 == 0 else 1):
                path = f"{name[0]}/{name}/gsun_{label:03d}{second}{'abcdef'[label % 6]}.jpg"
                pixels = drawn_image(str(label), (8 + label % 5, 9 + second), background=(label, 255 - label, 90),
                                     noise=6, seed=label * 2 + second)
                buffer = io.BytesIO()
                Picture.fromarray(pixels, "RGB").save(buffer, "JPEG", quality=80)
                jpegs[path] = buffer.getvalue()
                (validation if second else train).append((path, label))
        train = train[::-1]  # list order differs from tar order
        members: dict[str, bytes | None] = {IMAGE_ROOT.rstrip("/"): None}
        members.update({IMAGE_ROOT + path: data for path, data in sorted(jpegs.items())})
        images = write_tar(directory / IMAGES, members)
        text = {split: "".join(f"{path} {label}\n" for path, label in rows).encode()
                for split, rows in (("train", train), ("validation", validation))}
        lists = write_tar(directory / LISTS, {FOLDER.rstrip("/"): None, **{LIST_MEMBER[s]: t for s, t in text.items()}},
                          compression="gz")
        records = {
            "train": [{"image": jpegs[p], "label": label} for p, label in train],
            "validation": [{"image": jpegs[p], "label": label} for p, label in validation],
        }
        return Miniature({LISTS: lists, IMAGES: images}, records)


def miniature_class_names() -> list[str]:
    """205 category folders for the miniature: a few as the real ones look, the rest made up."""
    real_looking = ["abbey", "airport_terminal", "alley", "apartment_building/outdoor", "aquarium"]
    return real_looking + [f"{chr(ord('b') + i % 24)}_scene_{i:03d}" for i in range(NUM_CLASSES - len(real_looking))]


def category_of(path: str) -> str | None:
    """``apartment_building/outdoor`` for ``a/apartment_building/outdoor/x.jpg``; None if not in that form."""
    parts = path.split("/")
    if len(parts) < 3 or len(parts[0]) != 1 or not all(parts):
        return None
    return "/".join(parts[1:-1])


def _lines(lists: Path, split: str) -> list[Line]:
    """The split's list, line by line; a line that cannot be used keeps its place with its problem."""
    member = LIST_MEMBER[split]
    found = []
    for number, raw in enumerate(_list_text(lists, member).splitlines(), 1):
        fields = raw.split()
        if not fields:
            continue
        if len(fields) != 2:
            found.append(Line(number, raw[:120], None, f"{raw[:120]!r} is not '<image path> <label>'"))
            continue
        path, label = fields
        if not label.isdigit() or int(label) >= NUM_CLASSES:
            found.append(Line(number, path, None, f"label {label!r} is not an integer in 0..{NUM_CLASSES - 1}"))
        elif category_of(path.lstrip("/")) is None:
            found.append(Line(number, path, None, f"path {path!r} is not <letter>/<category>/<file>"))
        else:
            found.append(Line(number, path.lstrip("/"), int(label)))
    return found


def _list_text(lists: Path, member: str) -> str:
    from thresher.sources.archive import read_tar_members
    data = read_tar_members(lists, [member], limits=LIST_LIMITS)[member]
    try:
        return data.decode("ascii")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise MalformedDataError(LISTS, f"{member} line {line}", f"not ASCII text ({exc.reason})") from None


def class_names(lists: Path) -> list[str]:
    """The name of each label: the folder of its images in the train list, which must agree."""
    member = LIST_MEMBER["train"]
    names: dict[int, tuple[str, int]] = {}
    for line in _lines(lists, "train"):
        if line.label is None:
            continue
        name = category_of(line.path)
        first = names.setdefault(line.label, (name, line.number))  # type: ignore[arg-type]
        if first[0] != name:
            raise MalformedDataError(LISTS, f"{member} line {line.number}",
                                     f"label {line.label} is {name!r} here but {first[0]!r} on line {first[1]}")
    missing = [label for label in range(NUM_CLASSES) if label not in names]
    if missing:
        raise MalformedDataError(LISTS, member, f"no image of label {missing[0]} ({len(missing)} of the "
                                                f"{NUM_CLASSES} labels have none), so its name is unknown")
    return [names[label][0] for label in range(NUM_CLASSES)]


def _images(files: Mapping[str, Path]) -> Path:
    """The images as placed: the plain tar, or the gzip'd one in its place."""
    return files[IMAGES] if IMAGES in files else files[IMAGES_GZ]


def _plain_tar(images: Path) -> bool:
    """Whether the images are an uncompressed tar, by their bytes (the name may say otherwise)."""
    from thresher.sources.archive import sniff_compression
    return sniff_compression(images) == "tar"


def _image_extents(images: Path) -> dict[str, Extent]:
    status = images.stat()
    return _walk_images(str(images), status.st_ino, status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=1)
def _walk_images(path: str, inode: int, size: int, mtime_ns: int) -> dict[str, Extent]:
    """Where each image lies in the tar, by its path under images256/ (one walk for both splits)."""
    from thresher.sources.archive import iter_tar
    del inode, size, mtime_ns  # the cache key: a replaced tar is walked again
    found = {}
    for member in iter_tar(path, limits=IMAGE_LIMITS, label=IMAGES):
        assert member.extent is not None  # a plain tar: every member lies in the file
        if member.name.startswith(IMAGE_ROOT):
            found[member.name[len(IMAGE_ROOT):]] = member.extent
    return found


def _record(line: Line, image: Extent | bytes | None, images: str, member: str) -> Record | BadRecord:
    """The record of one list line whose image (where it lies, or its bytes) came from ``images``."""
    where = f"{member} line {line.number}"
    if line.label is None:
        return BadRecord(LISTS, where, line.problem)
    if image is None:
        return BadRecord(images, f"{IMAGE_ROOT}{line.path} ({where})", "image listed in the split list is missing "
                                                                        "from the tar")
    start = head(image, 3)
    if start != b"\xff\xd8\xff":
        return BadRecord(images, f"{IMAGE_ROOT}{line.path} ({where})",
                         f"not a JPEG file (starts with {start.hex(' ') or 'nothing'})")
    return {"image": image, "label": line.label, WHERE: f"{images}:{IMAGE_ROOT}{line.path}"}


RECIPE = Places205()
