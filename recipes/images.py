"""images: your own folder of pictures, as Caffe's ``convert_imageset`` reads one.

Two layouts. With ``--list FILE``: lines of ``relative/path label``, Caffe's format, where the
path is everything before the *last* space (so it may hold spaces) and the label a whole
number. Without it: one subfolder per class, the label being the folder's position in sorted
order and the folder names kept as the class names (every file below a class folder is an
image of that class, whatever its name ends with; names starting with "." are left out).

Nothing is downloaded, so there are no URLs or checksums: the manifest records the folder,
the list file's sha256 and a digest of every image's path and size, and a re-run after the
folder changed converts again. Output goes to ``ROOT/images/NAME/``, NAME being ``--name`` or
the folder's name (with the list file's name after a dash), and an output made from other
files is never replaced under the same NAME.

Each image is one input that a worker or Dask task reads itself. It is decoded once there, so
that a file that is not an image, is truncated or cannot be read is named now rather than by
a training job; its bytes are stored as they are (the format is read from the content, never
from the extension) or decoded and resized as asked.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from thresher.errors import MalformedDataError
from thresher.features import ClassLabel, Image, Integer, Schema
from thresher.recipe import WHERE, BadRecord, Input, Miniature, Recipe, Record, Split

# The schema's name for "the file's own format": JPEG, PNG, ... as each file holds it.
AS_FILED = "as-filed"
IMAGE = Image("image", encoding=AS_FILED, description="the file's bytes as they are (format read from the content)")
LABEL_PATTERN = re.compile(r"[+-]?[0-9]+")
INT32 = (-(2**31), 2**31 - 1)
# How common image files start: names a file whose header is already too damaged for Pillow.
MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF8", "GIF"), (b"BM", "BMP"),
         (b"II*\0", "TIFF"), (b"MM\0*", "TIFF"))
# A listed image: (path relative to the folder, label), or why its list line is unusable.
Entry = tuple[str, int] | BadRecord


class Images(Recipe):
    name = "images"
    version = "1.0.0"
    title = "Your own folder of images (convert_imageset)"
    description = ("A folder of your own images, converted like Caffe's convert_imageset: either a list file of "
                   "'relative/path label' lines (the path is everything before the last space) or one subfolder "
                   "per class (labels in sorted folder order, folder names kept as class names). Give the folder "
                   "with --source DIR, and optionally --list FILE, --split-name NAME (default: the list file's "
                   "name, else train) and --name NAME (default: the folder's name, then '-' and the list file's "
                   "name); the output goes to ROOT/images/NAME/. Images are stored as their files hold them, the "
                   "format read from the content, or decoded and resized as asked.")
    homepage = "https://github.com/BVLC/caffe/blob/master/tools/convert_imageset.cpp"
    license = "yours: the images are your own"
    citation = ""
    channel_order = "BGR"  # convert_imageset decodes with OpenCV
    parameters = ("source", "list", "split_name", "name")
    splits = (Split("train", 0, "one split per run, named by --split-name; as many records as listed images"),)
    schema = Schema((IMAGE, Integer("label", description="the list file's label, or the class folder's index")))

    def with_arguments(self, arguments: Mapping[str, str]) -> Recipe:
        """A copy reading the folder ``arguments["source"]``; the folder's top is looked at, nothing more."""
        super().with_arguments(arguments)
        return Configured(dict(arguments))

    def write_miniature(self, directory: Path) -> Miniature:
        """Three class folders of small photos written with PIL, among them a PNG named .jpg,
        a grey JPEG, a name with spaces and a nested folder."""
        import numpy as np
        from PIL import Image as PILImage

        from thresher.miniature import drawn_image

        folder = directory / "my photos"
        shapes = {"cat/a.jpg": (20, 30, "JPEG"), "cat/b c.jpg": (16, 16, "PNG"), "cat/kittens/d.jpeg": (9, 13, "JPEG"),
                  "dog/x.png": (31, 7, "PNG"), "dog/y.JPG": (12, 12, "JPEG-L"), "emu/z.bmp": (5, 8, "BMP")}
        records = []
        for index, (path, (height, width, kind)) in enumerate(shapes.items()):
            pixels = drawn_image(path[0], (height, width), background=(40 * index, 200 - 30 * index, 90), noise=10,
                                 seed=index)
            picture = PILImage.fromarray(pixels, "RGB")
            if kind.endswith("-L"):
                picture = picture.convert("L")
            buffer = io.BytesIO()
            picture.save(buffer, kind.split("-")[0])
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_bytes(buffer.getvalue())
            records.append({"image": buffer.getvalue(), "label": sorted({p.split("/")[0] for p in shapes}).index(
                path.split("/")[0])})
        (folder / ".hidden").mkdir()
        (folder / "cat" / ".DS_Store").write_bytes(np.zeros(4, np.uint8).tobytes())
        return Miniature({}, {"train": records}, {"source": str(folder)})


class Configured(Images):
    """The ``images`` recipe for one folder (and list file): what ``with_arguments`` returns."""

    def __init__(self, arguments: dict[str, str]) -> None:
        if not arguments.get("source"):
            raise ValueError("images needs the folder of images: --source DIR (with the API: arguments={'source': DIR})")
        self.arguments = arguments
        self.folder = Path(arguments["source"]).expanduser().absolute()
        if not self.folder.is_dir():
            raise ValueError(f"--source {arguments['source']}: not a folder")
        listed = arguments.get("list")
        self.list_file = None if not listed else (self.folder / listed if not Path(listed).is_absolute() else
                                                  Path(listed))
        if self.list_file is not None and not self.list_file.is_file():
            raise ValueError(f"--list {listed}: no such file (relative paths are read from --source {self.folder})")
        stem = self.list_file.stem if self.list_file is not None else ""
        self.split_name = _checked_name(arguments.get("split_name") or stem or "train", "--split-name")
        self.output_name = _checked_name(arguments.get("name") or "-".join(filter(None, (self.folder.name, stem))),
                                         "--name")
        if self.list_file is not None:
            self.schema = Schema((IMAGE, Integer("label", description=f"the label in {self.list_file.name}")))
        else:
            classes = class_folders(self.folder)
            self.schema = Schema((IMAGE, ClassLabel("label", names=classes,
                                                    description="the index of the class folder in sorted order")))

    def with_arguments(self, arguments: Mapping[str, str]) -> Recipe:
        return Images().with_arguments(arguments)

    @property
    def directory(self) -> str:
        return f"{self.name}/{self.output_name}"

    @property
    def splits(self) -> tuple[Split, ...]:  # type: ignore[override]
        how = f"listed in {self.list_file}" if self.list_file is not None else f"in the class folders of {self.folder}"
        return (Split(self.split_name, len(self.entries), f"the images {how}"),)

    @cached_property
    def entries(self) -> list[Entry]:
        """Every image in record order; listed once, in the main process."""
        if self.list_file is not None:
            return parse_list(self.list_file)
        return list(walk_classes(self.folder, self.schema["label"].names))

    def inputs(self, split: str, files: Mapping[str, Path]) -> Sequence[Input]:
        del files
        self.split(split)
        return [Input(entry.where if isinstance(entry, BadRecord) else entry[0], 1, entry) for entry in self.entries]

    def read(self, split: str, files: Mapping[str, Path], part: Input) -> Iterator[Record | BadRecord]:
        del split, files
        entry = part.where
        if isinstance(entry, BadRecord):
            yield entry
            return
        relative, label = entry
        path = self.folder / relative
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            listed = f", listed in {self.list_file}" if self.list_file is not None else ""
            yield BadRecord(str(path), "", f"no such file{listed}")
            return
        except OSError as exc:
            yield BadRecord(str(path), "", f"cannot be read: {exc.strerror or exc}")
            return
        problem = image_problem(data)
        if problem is not None:
            yield BadRecord(str(path), "", problem)
            return
        yield {"image": data, "label": label, WHERE: str(path)}

    def local_sources(self) -> list[dict[str, Any]]:
        """The folder, the list file's sha256, and the count, total size and a digest of each image's path and size."""
        sizes = hashlib.sha256()
        count = total = 0
        for entry in self.entries:
            if isinstance(entry, BadRecord):
                continue
            try:
                size = (self.folder / entry[0]).stat().st_size
            except OSError:
                size = -1  # missing: named when read
            sizes.update(f"{entry[0]}\t{size}\n".encode())
            count, total = count + 1, total + max(size, 0)
        described: dict[str, Any] = {"folder": str(self.folder), "images": count, "bytes": total,
                                     "sizes_sha256": sizes.hexdigest()}
        if self.list_file is not None:
            described.update(list=str(self.list_file), list_sha256=hashlib.sha256(self.list_file.read_bytes()).hexdigest())
        return [described]

    def check_output(self, sources: list[dict[str, Any]]) -> None:
        mine = self.local_sources()[0]
        theirs = next((s for s in sources if "folder" in s), {})
        if (theirs.get("folder"), theirs.get("list")) != (mine["folder"], mine.get("list")):
            made = theirs.get("folder", "downloaded files") + (f" --list {theirs['list']}" if theirs.get("list") else "")
            raise ValueError(f"images/{self.output_name} was made from {made}; give another --name to keep both")

    def locate(self, split: str, index: int) -> str:
        entry = self.entries[index] if index < len(self.entries) else None
        if isinstance(entry, tuple):
            return str(self.folder / entry[0])
        return f"image {index} of {self.folder}"


def _checked_name(name: str, option: str) -> str:
    """A name that is one directory level: no separator, not hidden, not empty."""
    if not name or name.startswith(".") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"{option} {name!r}: must be a plain folder name (no '/', not starting with '.')")
    return name


def class_folders(folder: Path) -> tuple[str, ...]:
    """The class names: the subfolders of ``folder`` in sorted order, hidden ones left out."""
    names = tuple(sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if not names:
        raise ValueError(f"--source {folder}: no class subfolders; give a list file with --list FILE, or put each "
                         "class's images in a subfolder named after it")
    return names


def walk_classes(folder: Path, classes: Sequence[str]) -> Iterator[tuple[str, int]]:
    """Every visible file below each class folder, class by class, sorted by path within a class."""
    for label, name in enumerate(classes):
        found = []
        for directory, subfolders, filenames in os.walk(folder / name, followlinks=True):
            subfolders[:] = [s for s in subfolders if not s.startswith(".")]
            base = Path(directory).relative_to(folder)
            found += [(base / f).as_posix() for f in filenames if not f.startswith(".")]
        yield from ((path, label) for path in sorted(found))


def parse_list(path: Path) -> list[Entry]:
    """The lines of a convert_imageset list file; an unusable line is a BadRecord naming it."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise MalformedDataError(str(path), f"line {line}", "is not UTF-8 text") from None
    entries: list[Entry] = []
    for number, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        relative, space, label = line.rpartition(" ")
        problem = None
        if not space or not relative:
            problem = "expected 'relative/path label' (the label after the last space)"
        elif not LABEL_PATTERN.fullmatch(label):
            problem = f"label {label!r} is not a whole number"
        elif not INT32[0] <= int(label) <= INT32[1]:
            problem = f"label {label} does not fit in 32 bits"
        if problem is None:
            entries.append((relative, int(label)))
        else:
            entries.append(BadRecord(str(path), f"line {number}", f"{problem}: {line[:80]!r}"))
    return entries


def image_problem(data: bytes) -> str | None:
    """Why ``data`` is not a whole, readable image (it is decoded to find out), or None."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    if not data:
        return "is empty, not an image"
    kind = next((f"{name} image" for magic, name in MAGIC if data.startswith(magic)), "image")
    try:
        with PILImage.open(io.BytesIO(data)) as picture:
            kind = f"{picture.format} image"
            picture.load()
    except UnidentifiedImageError:
        return f"is not an image in a format Pillow reads (it starts with {data[:8].hex(' ')})"
    except Exception as exc:  # Pillow raises many kinds for damaged files; each is this file's problem
        return f"is not a readable {kind} (truncated or damaged: {exc})"
    return None


RECIPE = Images()
