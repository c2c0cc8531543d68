"""ImageNet-21k (``imagenet/21k``): the whole of ImageNet, fall 2011 or winter 2021 release, by manual download.

Either release is a tar of per-synset tars (``n01440764.tar``), like ILSVRC2012's train tar,
and the user places whichever they have: ``fall11_whole.tar`` (uncompressed),
``winter21_whole.tar.gz`` (one gzip stream) or ``winter21_whole.tar`` (the latter gunzipped by
the user). A plain tar is read as ILSVRC2012 train is: each class tar is an independent input,
walked where it lies, so workers and Dask tasks take whole classes. A gzip stream cannot be
entered in the middle without inflating everything before, so ``winter21_whole.tar.gz`` is
one stream, read from its start with one class tar in memory at a time; gunzipping it once
(``gunzip -k``, as much disk again) gives the independent inputs back.

The labels are the synsets present: the class index is the position of the WordNet id in
sorted order, and the class names are the WordNet ids: no words file ships with either release
(the word lists used with it, e.g. Google's ``imagenet21k_wordnet_lemmas.txt`` for its BiT models,
are published elsewhere, and nothing the user did not place is downloaded).
There is no official split: :func:`held_out` states the seeded hold-out this recipe makes.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from thresher.atomic import write_bytes_atomic
from thresher.errors import MalformedDataError
from thresher.features import ClassLabel, Image, Integer, Schema
from thresher.published import Count
from thresher.recipe import WHERE, BadRecord, Input, Miniature, Recipe, Record, Source, Split
from thresher.recipes.imagenet import (
    IMAGE_BYTES,
    RECIPE,
    ClassTar,
    ImageNet,
    class_tars,
    photo_problem,
)
from thresher.sources.archive import Limits, Member, describe_head, iter_tar, sniff_compression

VARIANT = "21k"
FALL11 = "fall11_whole.tar"
WINTER21 = "winter21_whole.tar.gz"
WINTER21_PLAIN = "winter21_whole.tar"  # winter21_whole.tar.gz gunzipped by the user
RELEASES = {WINTER21_PLAIN: "winter 2021", WINTER21: "winter 2021", FALL11: "fall 2011"}
FALL11_SYNSETS, FALL11_IMAGES = 21_841, 14_197_122
WINTER21_SYNSETS = 19_167
HOLDOUT = 50  # validation images per class, at most half the class
SEED = "imagenet21k-holdout-v1"
TB = 10**12
# Neither release publishes its byte size or its largest class: bounds of our own, from the
# 1.31 TB quoted for fall11_whole.tar.
OUTER_LIMITS = Limits(max_members=2 * FALL11_SYNSETS + 100, max_member_size=64 << 30, max_total_size=2 * TB,
                      max_read_size=16 << 30, basis="our bound: 1.31 TB is quoted for fall11_whole.tar")
PHOTO_LIMITS = Limits(max_members=1_000_000, max_member_size=IMAGE_BYTES, max_read_size=IMAGE_BYTES,
                      max_total_size=64 << 30, basis="our bound: no per-class size is published")
IN_PLACE = "a plain tar of class tars is read in place (only winter21_whole.tar.gz may be gzipped)"

MANUAL = f"""\
ImageNet-21k is free for non-commercial research and education, after registration: make an account
on https://image-net.org, accept its terms of access, and download ONE of these releases (while logged
in); place it in the directory below under its published name, not unpacked:
  winter 2021: {WINTER21}, {WINTER21_SYNSETS:,} synsets (md5 below, as image-net.org's download page gives it);
      gunzipped once (gunzip -k, as much disk again) it is {WINTER21_PLAIN}, whose classes several
      workers read in parallel (the .gz is one stream: one process reads it, workers only encode);
  fall 2011: {FALL11}, {FALL11_SYNSETS:,} synsets, {FALL11_IMAGES:,} images, quoted as 1.31 TB (no checksum published).
If several are placed, the first listed below is used. A list of synset words is not part of either
release: the classes are named by their WordNet ids."""


def held_out(names: Sequence[str], count: int = HOLDOUT, seed: str = SEED) -> set[str]:
    """The photos of one class held out for validation: the rule, stated once.

    Each photo's key is the SHA-256 of ``"<seed>/<member name>"``; the ``min(count, n // 2)``
    photos of a class of ``n`` with the smallest keys are held out, so every class keeps at
    least half its photos for training and a class of one photo holds none out. The choice
    depends on the names alone: not on the tar's order, the workers or a resumed run.
    """
    keep = min(count, len(names) // 2)
    return set(sorted(names, key=lambda name: (hashlib.sha256(f"{seed}/{name}".encode()).digest(), name))[:keep])


def rule(count: int = HOLDOUT, seed: str = SEED) -> str:
    """:func:`held_out` in words, for the manifest."""
    return (f"validation holds min({count}, n // 2) photos of each class of n: those with the smallest SHA-256 "
            f"of '{seed}/<member name>'; train holds the rest")


def hold_out_splits(count: int = HOLDOUT) -> tuple[Split, ...]:
    """The splits for a hold-out of ``count`` per class, counted on the fall 2011 release."""
    return (
        Split("train", FALL11_IMAGES - count * FALL11_SYNSETS,
              f"about: fall 2011's {FALL11_IMAGES:,} photos less the hold-out; classes in the tar's order, photos in "
              "their class tar's order"),
        Split("validation", count * FALL11_SYNSETS,
              f"at most {count} photos per class (at most half of it), chosen by a seeded hash of their names; "
              "same order as train"),
    )


def _source(filename: str, url: str | None, md5: str | None, published: str) -> Source:
    return Source(filename, (url,) if url else (), md5=md5, checksum_source=published, manual=True)


def _photos(description: str) -> Image:
    return Image("image", encoding="jpeg", description=description)


class ImageNet21k(ImageNet):
    variant = VARIANT
    title = "ImageNet-21k: the whole of ImageNet (fall 2011 or winter 2021 release)"
    description = ("Every synset of ImageNet with its photos: the fall 2011 release (21,841 synsets, 14,197,122 "
                   "photos) or the winter 2021 release (19,167 synsets), whichever you place. The label is the "
                   "position of the synset's WordNet id among those present, sorted; a class is named by its "
                   "WordNet id. No split is published: validation holds out up to 50 photos per class, chosen "
                   "by a seeded hash of their names (at most half of a class), and train holds the rest. "
                   "Resized to 256x256 by default like imagenet; --resize none keeps the published files.")
    sources = (
        _source(WINTER21_PLAIN, None, None,
                f"none published for your own gunzip of {WINTER21} (its md5 is the .gz's); the first placed is recorded"),
        _source(WINTER21, "https://image-net.org/data/winter21_whole.tar.gz", "ab313ce03179fd803a401b02c651c0a2",
                "md5: image-net.org's download page, as quoted in github.com/X1AOX1A/Datasets ImageNet/README.md, "
                "visym/vipy and datadings (ImageNet21k_write.py); size not published"),
        _source(FALL11, "http://www.image-net.org/archive/stanford/fall11_whole.tar", None,
                "none published (1.31 TB quoted by Alibaba-MIIL/ImageNet21K processing_instructions.md)"),
    )
    splits = hold_out_splits()
    schema = Schema((
        _photos("the published file's bytes (JPEG, with the odd file of another format kept as published); "
                "decoding or --resize gives RGB"),
        Integer("label", minimum=0, maximum=FALL11_SYNSETS - 1, dims=(1,),
                description="position of the WordNet id among the synsets present, sorted (a class label named "
                            "by the WordNet ids once the placed tar is listed)"),
    ))
    citation = ("@inproceedings{deng2009imagenet, author={Deng, Jia and Dong, Wei and Socher, Richard and Li, "
                "Li-Jia and Li, Kai and Fei-Fei, Li}, title={{ImageNet: A Large-Scale Hierarchical Image "
                "Database}}, booktitle={IEEE Conference on Computer Vision and Pattern Recognition (CVPR)}, "
                "pages={248--255}, year={2009}, doi={10.1109/CVPR.2009.5206848}}")
    manual_instructions = MANUAL

    holdout = HOLDOUT
    seed = SEED

    def with_variant(self, name: str | None) -> Recipe:
        return RECIPE.with_variant(name)

    def with_arguments(self, arguments: Mapping[str, str]) -> Recipe:
        """Another hold-out: ``holdout`` photos per class (a whole number) and ``seed`` (any text).

        Not ``parameters``, which mark a recipe of the user's own files: these only change the split.
        """
        unknown = sorted(set(arguments) - {"holdout", "seed"})
        if unknown:
            raise ValueError(f"imagenet/21k does not take {', '.join(unknown)} (it takes holdout and seed)")
        if not arguments:
            return self
        count = arguments.get("holdout", str(HOLDOUT))
        if not count.isdigit():
            raise ValueError(f"imagenet/21k: holdout is a whole number of photos per class, not {count!r}")
        edition = copy.copy(self)
        edition.arguments = dict(arguments)
        edition.holdout, edition.seed = int(count), arguments.get("seed", SEED)
        edition.splits = hold_out_splits(edition.holdout)
        return edition

    def sources_to_get(self, download_dir: Path) -> tuple[Source, ...]:
        """The release placed (the first of :attr:`sources` there), or all of them for the manual screen."""
        placed = [s for s in self.sources if (download_dir / s.filename).is_file()]
        return tuple(placed[:1]) or self.sources

    # -- the splits ------------------------------------------------------------------------------

    def inputs(self, split: str, files: Mapping[str, Path]) -> Iterable[Input] | None:
        """One input per class tar of a plain tar; None (one stream) for the gzipped release.

        An input is only where its class tar lies: the worker that reads it walks the photos'
        headers itself. The lister keeps no photo names (14 million of them for fall 2011), and
        counts each class once for both splits (:func:`_split_counts`), as the conversion
        reaches it: workers start while later classes are counted.
        """
        archive, path = _placed(files)
        if sniff_compression(_head(path)) != "tar":
            return None
        tars = list(class_tars(path, archive, OUTER_LIMITS))
        index = _class_index([wnid for wnid, _ in tars], archive)
        classes = [(wnid, ClassTar.at(archive, member, index[wnid], IN_PLACE)) for wnid, member in tars]
        column = 1 if split == "validation" else 0  # of _split_counts' (train, validation)
        return (Input(wnid, _split_counts(where, self.holdout, self.seed)[column], where) for wnid, where in classes)

    def read(self, split: str, files: Mapping[str, Path], part: Input) -> Iterator[Record | BadRecord]:
        """The photos of one class tar that ``split`` holds, in the tar's order, read where they lie."""
        where: ClassTar = part.where
        photos = where.photos(PHOTO_LIMITS)
        held = held_out([name for name, _ in photos], self.holdout, self.seed)
        yield from where.records([(name, extent) for name, extent in photos if (name in held) == (split == "validation")])

    def records(self, split: str, files: Mapping[str, Path]) -> Iterator[Record | BadRecord]:
        """A plain tar: its inputs one after another. The gzip stream: one class tar in memory at a time."""
        parts = self.inputs(split, files)
        if parts is not None:
            for part in parts:
                yield from self.read(split, files, part)
            return
        archive, path = _placed(files)
        index = {wnid: i for i, wnid in enumerate(sorted(listed_synsets(path, archive)))}
        for wnid, member in class_tars(path, archive, OUTER_LIMITS):
            if wnid not in index:
                raise MalformedDataError(archive, f"member {member.name!r}",
                                         f"is not among the synsets listed in {path.name}.synsets beside it: "
                                         "the file changed since it was listed; delete that list and run again")
            label = f"{archive}:{member.name}"
            data = member.read()
            held = held_out([m.name for m in _photo_members(data, label)], self.holdout, self.seed)
            for photo in _photo_members(data, label):
                if (photo.name in held) != (split == "validation"):
                    continue
                image = photo.read()
                problem = photo_problem(image[:4])
                if problem:
                    yield BadRecord(label, f"member {photo.name!r}", problem)
                else:
                    yield {"image": image, "label": index[wnid], WHERE: f"{label}:{photo.name}"}
            del data  # before the next class tar is read: one in memory at a time

    def stated_counts(self, split: str, files: Mapping[str, Path]) -> list[Count]:
        """Nothing: neither release states its counts outside the photos themselves."""
        del split, files
        return []

    def locate(self, split: str, index: int) -> str:
        return f"imagenet/21k {split} image {index} (classes in the placed tar's order)"

    def with_files(self, files: Mapping[str, Path]) -> Recipe:
        """The label named by the WordNet ids present; the release and the hold-out rule in its description."""
        archive, path = _placed(files)
        wnids = tuple(sorted(listed_synsets(path, archive)))
        label = ClassLabel("label", names=wnids, dims=(1,),
                           description=f"position of the WordNet id among the {len(wnids):,} synsets of the "
                                       f"{RELEASES[archive]} release ({archive}), sorted; named by the WordNet "
                                       f"id; {rule(self.holdout, self.seed)}")
        edition = copy.copy(self)
        edition.schema = Schema((self.schema["image"], label))
        return edition

    def class_names(self, files: Mapping[str, Path]) -> list[tuple[str, str]]:
        """``(WordNet id, WordNet id)`` of each class index: no words ship with the release."""
        archive, path = _placed(files)
        return [(wnid, wnid) for wnid in sorted(listed_synsets(path, archive))]

    def write_miniature(self, directory: Path) -> Miniature:
        from thresher.recipes._imagenet_miniature import write_21k

        return write_21k(directory, FALL11)


# -- the class tars of a plain tar ------------------------------------------------------------------


@functools.lru_cache(maxsize=1 << 16)  # keyed by the class tar's extent, which names the file's identity
def _split_counts(where: ClassTar, holdout: int, seed: str) -> tuple[int, int]:
    """``(train, validation)`` photos of a class tar, from one walk of its headers shared by both splits."""
    names = [name for name, _ in where.photos(PHOTO_LIMITS)]
    held = held_out(names, holdout, seed)
    validation = sum(1 for name in names if name in held)
    return len(names) - validation, validation


# -- the placed release ----------------------------------------------------------------------------


def _placed(files: Mapping[str, Path]) -> tuple[str, Path]:
    for source in ImageNet21k.sources:
        if source.filename in files:
            return source.filename, files[source.filename]
    raise KeyError(f"imagenet/21k needs one of {', '.join(s.filename for s in ImageNet21k.sources)}")


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(512)


def _class_index(wnids: Sequence[str], archive: str) -> dict[str, int]:
    seen: set[str] = set()
    for wnid in wnids:
        if wnid in seen:
            raise MalformedDataError(archive, f"member {wnid}.tar", "is there twice: a synset has one class tar")
        seen.add(wnid)
    return {wnid: i for i, wnid in enumerate(sorted(wnids))}


def listed_synsets(path: Path, archive: str) -> list[str]:
    """The WordNet ids of the class tars in ``path``, in tar order, checked for repeats.

    A plain tar's headers are walked (cheap). The gzip stream must be inflated to its end to
    list them, so the list is kept beside it (``<file>.synsets``, for that size and
    modification time) and a later run, or the conversion after it, reads that instead.
    """
    if sniff_compression(_head(path)) == "tar":
        wnids = [wnid for wnid, _ in class_tars(path, archive, OUTER_LIMITS)]
        _class_index(wnids, archive)
        return wnids
    stat = path.stat()
    stamp = f"{archive} {stat.st_size} {stat.st_mtime_ns}"
    kept = path.with_name(path.name + ".synsets")
    try:
        lines = kept.read_text("ascii").splitlines()
        if lines and lines[0] == stamp:
            return lines[1:]
    except (OSError, UnicodeDecodeError):
        pass
    wnids = [wnid for wnid, _ in class_tars(path, archive, OUTER_LIMITS)]
    _class_index(wnids, archive)
    with contextlib.suppress(OSError):  # a read-only download directory: list it again next time
        write_bytes_atomic(kept, "\n".join([stamp, *wnids, ""]).encode("ascii"))
    return wnids


def _photo_members(data: bytes, label: str) -> Iterator[Member]:
    """The members of one class tar held in memory (from the gzip stream)."""
    if sniff_compression(data[:512]) != "tar":
        raise MalformedDataError(label, "byte 0", f"is not an uncompressed tar: it {describe_head(data[:512])}")
    yield from iter_tar(io.BytesIO(data), limits=PHOTO_LIMITS, label=label)


RECIPE21K = ImageNet21k()
