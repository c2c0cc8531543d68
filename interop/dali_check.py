"""Does NVIDIA DALI read what thresher writes? Run by ``make interop`` in its own environment.

The project's own tests decode shards with thresher's reader, so a misreading of the Caffe
formats shared by writer and reader could hide there. This script prepares every image recipe's
miniature as LMDB with both codecs and reads it back with DALI's ``fn.readers.caffe`` (Datum)
and ``fn.readers.caffe2`` (TensorProtos) on the CPU, comparing every record with what the
miniature holds: the count, each label, raw pixels byte for byte, and for encoded images the
exact bytes and DALI's CPU decode against Pillow's decode of the same bytes.

DALI's Caffe reader labels a raw Datum's planar C×H×W bytes as (H, W, C) without moving them
(Caffe itself reads them as planes), so raw Datum pixels are compared as planes.

VOC (both editions) is checked as far as DALI's readers go. Datum: a segmentation split is one
LMDB per field with the same keys (``shard-N/<field>/``), one ``fn.readers.caffe`` each: the
photos must be the published JPEG bytes, the label maps raw 1-channel Datums equal to the
palette PNGs' indexes, all with label 0. TensorProtos: ``fn.readers.caffe2`` reads the photo
and, for a detection split, the box table as its one additional input (FLOAT: DALI flattens it,
so the N×7 rows of corners, class, difficult and truncated are compared flat). DALI's own
``bbox`` output cannot express them (it takes one INT32 box of exactly 4 values per record), and
its additional inputs take FLOAT, INT32 or INT64 protos only, so the label maps that TensorProtos
stores as encoded PNG strings are not read by DALI: of a segmentation split only the photos are.

Prints one line per check and ``N passed, N failed``; exits 1 on any failure, 2 if DALI or the
project cannot be imported.
"""

from __future__ import annotations

import argparse
import io
import itertools
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from thresher.schema import classic_pair

HERE = Path(__file__).resolve().parent
# Miniatures and their checksum files are written by the tests' helper, as the end-to-end tests do.
sys.path.insert(0, str(HERE.parent / "tests"))

# Small enough that the CIFAR-10 miniature's train split needs several shards, which DALI
# must read as one sequence in the order given.
SMALL_SHARDS = 16_000


@dataclass(frozen=True)
class Case:
    """One split of one prepared output, and the records it must hold."""

    recipe: str
    codec: str
    split: str
    shards: list[Path]
    want: list[dict[str, Any]]
    channel_order: str
    encoded: bool
    image: str  # the field names in the records
    label: str | None  # None: a split of images only (a test split), read with label_type NO_LABEL
    min_shards: int = 1

    @property
    def title(self) -> str:
        parts = f"{len(self.shards)} shards" if len(self.shards) > 1 else "1 shard"
        return f"{self.recipe} lmdb/{self.codec} {self.split} ({parts})"


@dataclass(frozen=True)
class Read:
    """What DALI gave for every record of a case."""

    count: int
    images: list[np.ndarray]
    labels: list[np.ndarray]
    decoded: list[np.ndarray]


Check = tuple[str, str | None]  # (what was checked, None if it held, else what was wrong)


def cannot_import(what: str, exc: ImportError) -> None:
    print(f"dali_check: {what} cannot be imported ({exc}); `make interop` installs it into .venv-interop",
          file=sys.stderr)
    sys.exit(2)


def import_dali() -> Any:
    try:
        from nvidia.dali import fn, pipeline_def, types
    except ImportError as exc:
        cannot_import("NVIDIA DALI", exc)
    return fn, pipeline_def, types


def image_recipes() -> dict[str, Any]:
    """Recipes whose records are an image and an integer label: the ones Caffe and Caffe2 image readers are for.

    (VOC's boxes and label maps are checked by :func:`voc_checks`.)
    """
    from thresher.registry import all_recipes

    return {name: r for name, r in sorted(all_recipes().items()) if classic_pair(r.schema) is not None}


def prepare_cases(work: Path) -> Iterator[Case]:
    """Every image recipe × codec × split as LMDB, plus CIFAR-10 in several shards per split."""
    from e2e import build_mirror, recipe_supports

    import thresher

    mirror = build_mirror(work / "mirror" / "files")
    runs = [(name, codec, None) for name, recipe in image_recipes().items()
            for codec in ("datum", "tensorprotos") if recipe_supports(recipe, codec)]
    runs += [("cifar10", codec, SMALL_SHARDS) for codec in ("datum", "tensorprotos")]
    for name, codec, shard_size in runs:
        out = work / "out" / f"{codec}-{shard_size or 'default'}"
        extra = {"shard_size": shard_size} if shard_size else {}
        arguments = mirror.miniatures[name].arguments or None  # the images recipe reads a folder of the test's
        manifest = thresher.prepare(name, root=out, format="lmdb", codec=codec, mirror=mirror.root.as_uri(),
                                    offline=True, checksums=mirror.checksums[name], progress=False,
                                    arguments=arguments, **extra)
        image, label = classic_pair(manifest.schema)  # type: ignore[misc]
        for split, entry in manifest.splits.items():
            fields = manifest.schema_of(split)
            if (shard_size and split != "train") or not fields.of_kind("image"):
                continue  # a split without images (places205's classes) is not for an image reader
            yield Case(name, codec, split, [manifest.directory / shard.path for shard in entry.shards],
                       mirror.miniatures[name].records[split], manifest.channel_order, image.is_encoded,
                       image.name, label.name if label.name in fields.names else None,
                       min_shards=2 if shard_size else 1)


def run_reader(n: int, graph: Callable[[Any, Any], tuple[Any, ...]]) -> tuple[int, list[list[np.ndarray]]]:
    """The reader named "reader" in ``graph(fn, types)`` run once over ``n`` records on the CPU:
    its epoch size and each output's ``n`` samples."""
    fn, pipeline_def, types = import_dali()

    @pipeline_def(batch_size=n, num_threads=1, device_id=None)
    def pipeline() -> tuple[Any, ...]:
        return graph(fn, types)

    pipe = pipeline()
    pipe.build()
    outputs = pipe.run()
    return int(pipe.epoch_size("reader")), [[np.array(out.at(i)) for i in range(n)] for out in outputs]


def read_with_dali(case: Case) -> Read:
    """All records of a case in one CPU batch, in key order, through the reader for its codec."""
    paths = [str(p) for p in case.shards]

    def graph(fn: Any, types: Any) -> tuple[Any, ...]:
        if case.codec == "datum":
            images, labels = fn.readers.caffe(path=paths, name="reader")
        elif case.label is None:  # images only: NO_LABEL (4 in DALI's caffe2 parser)
            images = labels = fn.readers.caffe2(path=paths, label_type=4, name="reader")
        else:  # one INT32 label per record: SINGLE_LABEL
            images, labels = fn.readers.caffe2(path=paths, label_type=0, num_labels=1, name="reader")
        if not case.encoded:
            return images, labels
        return images, labels, fn.decoders.image(images, device="cpu", output_type=types.RGB)

    count, columns = run_reader(len(case.want), graph)
    return Read(count, columns[0], columns[1], columns[2] if case.encoded else [])


def stored_pixels(case: Case, image: np.ndarray) -> np.ndarray:
    """What DALI should hand back for a source HWC RGB image, as the codec stored it."""
    if case.channel_order == "BGR" and image.shape[2] == 3:
        image = image[..., ::-1]
    if case.codec == "datum":  # planar bytes under DALI's (H, W, C) shape
        return np.ascontiguousarray(image.transpose(2, 0, 1)).reshape(image.shape)
    return image


def first_difference(case: Case, values: list[Any], expected: Callable[[dict[str, Any]], Any],
                     same: Callable[[Any, Any], bool]) -> str | None:
    return first_listed(values, [expected(record) for record in case.want], same)


def mismatch(got: Any, want: Any) -> str:
    if isinstance(got, np.ndarray) and isinstance(want, np.ndarray) and (got.dtype, got.shape) == (want.dtype, want.shape):
        return f"{np.count_nonzero(got != want)} of {got.size} values differ"
    return f"got {describe(got)}, want {describe(want)}"


def describe(value: Any) -> str:
    if isinstance(value, np.ndarray) and value.size > 4:
        return f"{value.dtype}{value.shape}"
    if isinstance(value, bytes):
        return f"{len(value)} bytes"
    return repr(value)


def arrays_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


def pillow_rgb(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def dali_message(exc: Exception) -> str:
    """The operator's own words from a DALI pipeline error, without the pipeline's wrapping."""
    lines = [line.strip() for line in str(exc).splitlines()]
    if "encountered:" in lines:
        lines = lines[lines.index("encountered:") + 1:]
    said = [line for line in lines if line and not line.startswith(("Critical error", "Current pipeline", "C++ context"))]
    return said[0] if said else f"{type(exc).__name__} without a message"


def check_case(case: Case) -> list[Check]:
    """The checks of one case, or one failed check when DALI cannot read it."""
    try:
        got = read_with_dali(case)
    except Exception as exc:  # DALI reports every reader and parser error as a RuntimeError
        return [("read", f"DALI failed on {', '.join(map(str, case.shards))}: {dali_message(exc)}")]
    n = len(case.want)
    checks: list[Check] = [] if case.min_shards < 2 else [
        (f"shards: at least {case.min_shards}", None if len(case.shards) >= case.min_shards
         else f"the split has {len(case.shards)}; make SMALL_SHARDS smaller"),
    ]
    checks += [
        (f"records: {n}", None if got.count == n else f"DALI's reader has {got.count} records, the split {n}"),
    ]
    if case.label is not None:
        label = case.label
        checks.append((f"labels: int32 (1,), all {n} exact",
                       first_difference(case, got.labels, lambda r: np.array([r[label]], dtype=np.int32),
                                        arrays_equal)))
    if not case.encoded:
        layout = "planar bytes under (H, W, C)" if case.codec == "datum" else "H×W×C"
        checks.append((f"pixels: uint8 {layout}, {case.channel_order}, all {n} exact",
                       first_difference(case, got.images, lambda r: stored_pixels(case, r[case.image]), arrays_equal)))
        return checks
    checks.append((f"images: the published bytes, all {n} exact",
                   first_difference(case, [g.tobytes() for g in got.images], lambda r: r[case.image],
                                    lambda a, b: a == b)))
    checks.append((f"decode: DALI's CPU decoder equals Pillow, all {n}",
                   first_difference(case, got.decoded, lambda r: pillow_rgb(r[case.image]), arrays_equal)))
    return checks


VOC_EDITIONS = ("voc/2012", "voc/2007")
VOC_FIELDS = ("image", "segmentation_class", "segmentation_object")


def voc_checks(work: Path) -> Iterator[tuple[str, list[Check]]]:
    """Each VOC edition's miniature as LMDB in both codecs (Datum: the segmentation splits it takes),
    read back by DALI: (title, checks) per split and reader."""
    from e2e import served_miniature

    import thresher

    for key in VOC_EDITIONS:
        with served_miniature(key, work / "voc-mirror" / key.replace("/", "-")) as served:
            datum = thresher.prepare(key, root=work / "voc-out" / "datum", format="lmdb", codec="datum",
                                     mirror=served.url, offline=True, checksums=served.checksums, progress=False,
                                     splits=[s for s in served.miniature.records if s.startswith("segmentation")])
            tensors = thresher.prepare(key, root=work / "voc-out" / "tensorprotos", format="lmdb",
                                       codec="tensorprotos", mirror=served.url, offline=True,
                                       checksums=served.checksums, progress=False)
        for split, entry in datum.splits.items():
            want = served.miniature.records[split]
            for field in VOC_FIELDS:
                paths = [datum.directory / shard.path / field for shard in entry.shards]
                yield f"{key} lmdb/datum {split} {field}", datum_field_checks(paths, field, want)
        for split, entry in tensors.splits.items():
            paths = [tensors.directory / shard.path for shard in entry.shards]
            yield f"{key} lmdb/tensorprotos {split}", tensorprotos_checks(paths, served.miniature.records[split])


def datum_field_checks(paths: list[Path], field: str, want: list[dict[str, Any]]) -> list[Check]:
    """One field's LMDB of a Datum segmentation split through ``fn.readers.caffe``."""
    n = len(want)
    try:
        count, (values, labels) = run_reader(n, lambda fn, types: tuple(fn.readers.caffe(
            path=[str(p) for p in paths], name="reader")))
    except Exception as exc:  # DALI reports every reader and parser error as a RuntimeError
        return [("read", f"DALI failed on {', '.join(map(str, paths))}: {dali_message(exc)}")]
    checks: list[Check] = [
        (f"records: {n}", None if count == n else f"DALI's reader has {count} records, the split {n}"),
        (f"labels: 0, all {n}", first_listed(labels, [np.array([0], np.int32)] * n, arrays_equal)),
    ]
    if field == "image":
        checks.append((f"images: the published bytes, all {n} exact",
                       first_listed([v.tobytes() for v in values], [r[field] for r in want], lambda a, b: a == b)))
    else:
        checks.append((f"label map: uint8 (H, W, 1), the PNG's palette indexes, all {n} exact",
                       first_listed(values, [palette_indexes(r[field])[..., None] for r in want], arrays_equal)))
    return checks


def tensorprotos_checks(paths: list[Path], want: list[dict[str, Any]]) -> list[Check]:
    """A TensorProtos split through ``fn.readers.caffe2``: the photo, and a detection split's box table."""
    n = len(want)
    boxes = "objects" in want[0]

    def graph(fn: Any, types: Any) -> tuple[Any, ...]:
        out = fn.readers.caffe2(path=[str(p) for p in paths], label_type=4, additional_inputs=int(boxes),
                                name="reader")  # NO_LABEL: the photo, then the table as an additional input
        return tuple(out) if boxes else (out,)

    try:
        count, columns = run_reader(n, graph)
    except Exception as exc:  # DALI reports every reader and parser error as a RuntimeError
        return [("read", f"DALI failed on {', '.join(map(str, paths))}: {dali_message(exc)}")]
    checks: list[Check] = [
        (f"records: {n}", None if count == n else f"DALI's reader has {count} records, the split {n}"),
        (f"images: the published bytes, all {n} exact",
         first_listed([v.tobytes() for v in columns[0]], [r["image"] for r in want], lambda a, b: a == b)),
    ]
    if boxes:
        checks.append((f"boxes: float32 rows of corners, class, difficult, truncated (flattened), all {n} exact",
                       first_listed(columns[1], [box_rows(r["objects"]) for r in want], arrays_equal)))
    return checks


def first_listed(got: list[Any], want: list[Any], same: Callable[[Any, Any], bool]) -> str | None:
    """The first record whose value differs, described; None if all agree."""
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        if not same(a, b):
            return f"record {i}: {mismatch(a, b)}"
    return None


def palette_indexes(png: bytes) -> np.ndarray:
    """A palette PNG's class indexes as Pillow reads them (mode P, no colour conversion)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        assert im.mode == "P", im.mode
        return np.asarray(im)


def box_rows(objects: dict[str, np.ndarray]) -> np.ndarray:
    """The miniature's boxes as the flat float32 table: per box x0, y0, x1, y1, class, difficult, truncated."""
    rows = np.column_stack([objects["boxes"], objects["labels"], objects["difficult"], objects["truncated"]])
    return rows.astype(np.float32).ravel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, help="keep the miniatures and outputs here (default: a temporary "
                        "directory, removed at the end)")
    args = parser.parse_args(argv)
    import_dali()
    try:
        import thresher  # noqa: F401
    except ImportError as exc:
        cannot_import("thresher", exc)
    from thresher.errors import ThresherError

    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="dali-check-") as tmp:
        work = args.workdir or Path(tmp)
        try:
            cases = ((case.title, check_case(case)) for case in prepare_cases(work))
            for title, checks in itertools.chain(cases, voc_checks(work)):
                for what, problem in checks:
                    ok = problem is None
                    passed, failed = passed + ok, failed + (not ok)
                    print(f"{'PASS' if ok else 'FAIL'} {title} {what}" + ("" if ok else f": {problem}"), flush=True)
        except (ThresherError, OSError) as exc:  # preparing a miniature failed: nothing left to read
            failed += 1
            print(f"FAIL preparing the miniatures: {exc}", flush=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
