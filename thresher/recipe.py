"""What a recipe is: the facts about one dataset and the code that turns its archives into records.

A recipe module in ``thresher.recipes`` defines one subclass of :class:`Recipe` and exposes an
instance as ``RECIPE``. Everything generic (download, decode/resize, codecs, writers,
manifest) lives in the machinery; a recipe holds only what is special about its dataset.
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from thresher.errors import MalformedDataError
from thresher.published import Contents, Count
from thresher.schema import Schema, classic_pair

Record = dict[str, Any]
# Optional record key naming where a record came from (e.g. "102flowers.tgz:jpg/image_00042.jpg"),
# for recipes whose records cannot be located from their index alone; removed before encoding.
WHERE = "__where__"


@dataclass(frozen=True)
class RecordBatch:
    """Consecutive records as columns: each value has the records along its first axis.

    Recipes whose sources are arrays (IDX files, CIFAR batches) yield these so that validation,
    encoding and HDF5 writing run column-wise instead of once per record.
    """

    columns: Mapping[str, Any]

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def rows(self) -> Iterator[Record]:
        import numpy as np  # here, not at the top: ``thresher list`` imports every recipe module

        names = list(self.columns)
        columns = [c.tolist() if isinstance(c, np.ndarray) and c.ndim == 1 else c for c in self.columns.values()]
        for values in zip(*columns, strict=True):
            yield dict(zip(names, values, strict=True))

    def slice(self, start: int, stop: int) -> RecordBatch:
        return RecordBatch({name: column[start:stop] for name, column in self.columns.items()})


@dataclass(frozen=True)
class BadRecord:
    """Yielded by a recipe in place of a record it cannot build, so the run can go on with --skip-bad.

    Without --skip-bad the pipeline raises :meth:`error`; either way the place is named.
    """

    source: str
    where: str
    problem: str

    def error(self) -> MalformedDataError:
        return MalformedDataError(self.source, self.where, self.problem)


@dataclass(frozen=True)
class Input:
    """A part of a split that can be read without reading what precedes it.

    A file, an archive member (or where it lies in an uncompressed archive), an inner tar of a
    tar of tars, a range of lines whose start is known. ``records`` is exactly how many items
    (records and BadRecords) :meth:`Recipe.read` yields for it: from these counts a shard task
    knows which inputs hold its records without reading the others. ``where`` is the recipe's
    own detail, small and picklable (workers and Dask tasks receive it).
    """

    name: str
    records: int
    where: Any = None


@dataclass(frozen=True)
class Source:
    """One file to download.

    ``urls`` are tried in order (the official one first, then published mirrors).
    ``sha256``/``md5``/``size`` are the published values, with ``checksum_source`` saying where
    they were published; all three may be ``None`` when nothing is published, in which case the
    first download's sha256 is recorded and trusted from then on. ``contents`` is what the
    publisher says an archive unpacks to, from which its reading limits follow. ``alternative``
    names another published form of the same file (Places205's uncompressed tar beside its
    ``.tar.gz``): when only that one is in the download directory it is used in this one's place,
    verified against the checksum recorded for it (the published values are this form's).
    """

    filename: str
    urls: tuple[str, ...]
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    checksum_source: str = "none published"
    manual: bool = False
    contents: Contents | None = None
    alternative: str | None = None

    def as_placed(self, download_dir: Path) -> Source:
        """This source, or its :attr:`alternative` form when only that one is in ``download_dir``."""
        if self.alternative is None or (download_dir / self.filename).exists() or \
                not (download_dir / self.alternative).exists():
            return self
        return Source(self.alternative, (), checksum_source=f"the form of {self.filename} that was placed: "
                      "the sha256 it first had is recorded and verified after", manual=True, contents=self.contents)

    @classmethod
    def from_bases(cls, filename: str, bases: tuple[str, ...], **facts: Any) -> Source:
        """A file published under several base URLs (official first, then mirrors)."""
        return cls(filename, tuple(base + filename for base in bases), **facts)

    @property
    def has_published_checksum(self) -> bool:
        return bool(self.sha256 or self.md5)


@dataclass(frozen=True)
class Split:
    """A split and the number of records the full published dataset has in it.

    ``schema`` is for a split whose records hold other fields than the recipe's (a test split
    without labels, a segmentation subset with masks); None means the recipe's schema.
    """

    name: str
    num_records: int
    description: str = ""
    schema: Schema | None = None


@dataclass(frozen=True)
class Variant:
    """One published edition of a dataset (VOC 2007 or 2012), chosen as ``NAME/VARIANT``.

    Facts left as ``None`` are the recipe's own; the recipe's code reads ``self.variant`` for
    whatever else differs (a folder name inside the archive, say).
    """

    name: str
    description: str = ""
    sources: tuple[Source, ...] | None = None
    splits: tuple[Split, ...] | None = None
    schema: Schema | None = None


@dataclass(frozen=True)
class Miniature:
    """What a recipe's miniature writer produced: files on disk and the records they hold.

    ``records`` maps a split to the records a correct conversion must yield, in order and in
    source form (before any option such as resize or FLAC encoding is applied).
    """

    files: Mapping[str, Path]
    records: Mapping[str, list[Record]] = field(default_factory=dict)
    # For a recipe that reads the user's own files: the arguments that prepare the miniature.
    arguments: Mapping[str, str] = field(default_factory=dict)


class Recipe:
    """Base class of every recipe. Subclasses fill the class attributes and two methods."""

    name: ClassVar[str]
    version: ClassVar[str] = "1.0.0"
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    homepage: ClassVar[str] = ""
    license: ClassVar[str] = "not stated by the publisher"
    citation: ClassVar[str] = ""
    sources: ClassVar[tuple[Source, ...]] = ()
    splits: ClassVar[tuple[Split, ...]] = ()
    schema: ClassVar[Schema]
    # Channel order of raw colour pixels in Caffe-style outputs, as the Caffe tool for the same
    # data writes them: "RGB" (convert_cifar_data), "BGR" (convert_imageset), "GRAY".
    channel_order: ClassVar[str] = "RGB"
    manual_instructions: ClassVar[str] = ""
    # (height, width) that ``thresher prepare`` resizes photos to unless told otherwise
    # (``--resize none`` keeps them as published): what the Caffe tool for this data makes.
    default_resize: ClassVar[tuple[int, int] | None] = None
    # Modules imported only inside the recipe's functions, and the pip extra that brings them:
    # the recipe lists without them, and preparing it says what to install.
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str] = ""
    # Named editions; the first is the default when only NAME is given, unless ``plain_edition``.
    # ``variant`` is set on the copy that :meth:`with_variant` returns.
    variants: ClassVar[tuple[Variant, ...]] = ()
    variant: str | None = None
    # The arguments a recipe that reads the user's own files takes (``--source DIR``), and on
    # the copy that :meth:`with_arguments` returns, their values.
    parameters: ClassVar[tuple[str, ...]] = ()
    arguments: Mapping[str, str] = MappingProxyType({})
    # True: NAME alone is the recipe as its class attributes state it (no variant), and each
    # variant adds to it (flowers102 and flowers102/segmented, which also downloads the masks).
    plain_edition: ClassVar[bool] = False

    def records(self, split: str, files: Mapping[str, Path]) -> Iterator[Record | BadRecord | RecordBatch]:
        """Yield the records of ``split`` in their fixed order, read from the downloaded files.

        ``files`` maps each source filename to its verified local path. Consecutive records may
        come as one :class:`RecordBatch`. Records are in source form: raw images as uint8 HWC RGB
        arrays or the published encoded bytes, audio as int16.
        A record that cannot be built is yielded as a :class:`BadRecord` naming the member and the
        offset or line; content so broken that nothing after it can be trusted raises
        :class:`thresher.errors.MalformedDataError` instead.

        A recipe whose split divides into independent parts defines :meth:`inputs` and
        :meth:`read` instead, and this reads them one after another. One that overrides this
        method is a single stream (e.g. one compressed file), read from its start.
        """
        inputs = self.inputs(split, files)
        if inputs is None:
            raise NotImplementedError(f"{type(self).__name__} defines neither records() nor inputs()")
        for part in inputs:
            yield from self.read(split, files, part)

    @property
    def lists_inputs(self) -> bool:
        """Whether this recipe divides its splits into inputs (a form of its sources may still be one stream)."""
        return type(self).inputs is not Recipe.inputs

    def inputs(self, split: str, files: Mapping[str, Path]) -> Iterable[Input] | None:
        """The independent parts of ``split`` in record order, or None for a single stream.

        Called once per split in the main process (it may walk an archive's headers); each
        part is then read by :meth:`read`, in any process, as often as needed. A generator is
        listed only as far as the conversion has got, so workers start on the first parts
        while later ones are listed.
        """
        del split, files
        return None

    def read(self, split: str, files: Mapping[str, Path], part: Input) -> Iterator[Record | BadRecord | RecordBatch]:
        """Yield the ``part.records`` items of one input, as :meth:`records` would."""
        raise NotImplementedError(f"{type(self).__name__} lists inputs but does not read them")

    def stated_counts(self, split: str, files: Mapping[str, Path]) -> list[Count]:
        """What the files' headers say ``split`` holds, read cheaply before converting.

        Compared with ``Split.num_records`` by the pipeline; a recipe whose counts only show
        while reading everything returns nothing here (its readers still enforce the limits).
        """
        del split, files
        return []

    def locate(self, split: str, index: int) -> str:
        """Name the place record ``index`` of ``split`` came from, for error messages."""
        return f"{self.name} {split} record {index}"

    def write_miniature(self, directory: Path) -> Miniature:
        """Write small archives in the real layout and format of this dataset, for tests and the demo."""
        raise NotImplementedError

    # -- derived facts -------------------------------------------------------------------------

    @property
    def key(self) -> str:
        """``NAME`` or ``NAME/VARIANT``: how it is asked for, and its directory under the data root."""
        return self.name if self.variant is None else f"{self.name}/{self.variant}"

    @property
    def variant_names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variants)

    @property
    def default_variant(self) -> str | None:
        """The variant NAME alone means: the first, or None when NAME alone is the plain edition."""
        return None if self.plain_edition or not self.variants else self.variants[0].name

    @property
    def edition_names(self) -> tuple[str | None, ...]:
        """Every edition, None standing for the plain one: what ``list`` and the catalog show."""
        plain: tuple[str | None, ...] = (None,) if self.default_variant is None else ()
        return plain + self.variant_names

    def editions(self) -> list[Recipe]:
        return [self.with_variant(v) for v in self.edition_names]

    def download_directory(self, root: Path | str) -> Path:
        """``ROOT/NAME/downloads``: every edition of a recipe keeps its files there, so shared ones download once."""
        return Path(root) / self.name / "downloads"

    def sources_to_get(self, download_dir: Path) -> tuple[Source, ...]:
        """The sources a run needs: all of them, each in the form placed (:meth:`Source.as_placed`).

        A recipe whose sources are alternatives (ImageNet-21k's releases) returns the one the
        user placed in ``download_dir``, or all of them when none is there, so the manual screen
        names each.
        """
        return tuple(source.as_placed(download_dir) for source in self.sources)

    def with_variant(self, name: str | None) -> Recipe:
        """This recipe as variant ``name`` (NAME alone for ``None``: see ``default_variant``)."""
        if not self.variants:
            if name is not None:
                raise KeyError(f"{self.name} has no variants; ask for it as {self.name!r}")
            return self
        if name is None:
            name = self.default_variant
            if name is None:
                return self
        chosen = next((v for v in self.variants if v.name == name), None)
        if chosen is None:
            raise KeyError(f"{self.name} has no variant {name!r}; it has "
                           + ", ".join(self.name if v is None else f"{self.name}/{v}" for v in self.edition_names))
        edition = copy.copy(self)
        edition.variant = chosen.name
        for fact in ("sources", "splits", "schema"):
            value = getattr(chosen, fact)
            if value is not None:
                setattr(edition, fact, value)
        return edition

    # Whether :meth:`with_files` changes the schema (names only the downloaded files hold).
    refines_schema: ClassVar[bool] = False

    def with_files(self, files: Mapping[str, Path]) -> Recipe:
        """This recipe with what only its downloaded files say, e.g. class names from a devkit.

        Called once the sources are verified, before the output's schema is fixed; itself by default.
        """
        del files
        return self

    def with_arguments(self, arguments: Mapping[str, str]) -> Recipe:
        """This recipe for the user's ``arguments``; a recipe of downloads takes none."""
        unknown = sorted(set(arguments) - set(self.parameters))
        if unknown:
            takes = ", ".join(self.parameters) or "no arguments"
            raise ValueError(f"{self.name} does not take {', '.join(unknown)} (it takes {takes})")
        return self

    @property
    def directory(self) -> str:
        """Its directory under the data root: :attr:`key`, unless arguments name another."""
        return self.key

    def local_sources(self) -> list[dict[str, Any]]:
        """What the manifest records of the user's own files, so a re-run notices a change."""
        return []

    def check_output(self, sources: list[dict[str, Any]]) -> None:
        """Refuse to replace an output whose manifest lists ``sources`` made from other files."""
        del sources

    def missing_requirements(self) -> list[str]:
        """The modules in ``requires`` that cannot be imported here (looked up, not imported)."""
        return [module for module in self.requires if not _importable(module)]

    def install_hint(self) -> str:
        missing = self.missing_requirements()
        if not missing:
            return ""
        what = f"'thresher[{self.extra}]'" if self.extra else " ".join(missing)
        return f"{self.name} needs {', '.join(missing)}: pip install {what}"

    @property
    def split_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.splits)

    def split(self, name: str) -> Split:
        for s in self.splits:
            if s.name == name:
                return s
        raise KeyError(f"{self.name} has no split {name!r}; it has {', '.join(self.split_names)}")

    def split_schema(self, name: str) -> Schema:
        """The fields of split ``name``'s records."""
        return self.split(name).schema or self.schema

    def source(self, filename: str) -> Source:
        for s in self.sources:
            if s.filename == filename:
                return s
        raise KeyError(f"{self.name} has no source file {filename!r}")

    @property
    def needs_manual_download(self) -> bool:
        return any(s.manual for s in self.sources)

    @property
    def download_size(self) -> int | None:
        sizes = [s.size for s in self.sources]
        return None if any(s is None for s in sizes) else sum(sizes)  # type: ignore[arg-type]

    @property
    def default_codec(self) -> str:
        """``datum`` where a record is one image and one integer label, ``tensorprotos`` otherwise."""
        fits = all(classic_pair(self.split_schema(s)) is not None for s in self.split_names)
        return "datum" if fits and classic_pair(self.schema) is not None else "tensorprotos"

    @property
    def own_split_schemas(self) -> dict[str, Schema]:
        """The splits whose records hold other fields than :attr:`schema`, with their schemas."""
        return {s.name: s.schema for s in self.splits if s.schema is not None and s.schema != self.schema}


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False
