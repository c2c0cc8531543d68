"""``thresher verify``: re-hash every shard against the manifest and decode every record."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from thresher.conversion.tiling import split_problems
from thresher.errors import ThresherError
from thresher.features import Feature, Schema
from thresher.formats import get_format
from thresher.hashing import hash_file
from thresher.manifest import MANIFEST_NAME, Manifest
from thresher.reader import Dataset, no_split


@dataclass
class VerifyReport:
    directory: Path
    records: int = 0
    files: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # stale but harmless to the data; printed, not failed

    @property
    def ok(self) -> bool:
        return not self.problems


def locate_manifest(path: Path) -> tuple[Manifest, list[str]]:
    """A format directory means all its splits; a split directory means that split."""
    path = Path(path)
    if (path / MANIFEST_NAME).exists():
        manifest = Manifest.read(path)
        return manifest, sorted(manifest.splits)
    if (path.parent / MANIFEST_NAME).exists():
        manifest = Manifest.read(path.parent)
        if path.name not in manifest.splits:
            raise no_split(manifest, path.name)
        return manifest, [path.name]
    raise FileNotFoundError(f"{path}: no {MANIFEST_NAME} here or in the parent directory")


def verify(path: str | Path, *, decode: bool = True) -> VerifyReport:
    manifest, splits = locate_manifest(Path(path))
    assert manifest.directory is not None
    report = VerifyReport(manifest.directory)
    for split in splits:
        entry = manifest.splits.get(split)
        if entry is None:
            report.problems.append(f"{manifest.directory / split}: the manifest has no split {split!r}")
            continue
        files = [f for shard in entry.shards for f in shard.files]
        storage = get_format(manifest.format)
        tiling = split_problems(entry, directory=f"{manifest.generation}/{split}", key_format=manifest.key_format,
                                shard_name=storage.shard_name)
        report.problems += [f"{manifest.directory / MANIFEST_NAME}: {problem}" for problem in tiling]
        hashes_ok = not tiling
        shard_paths = [manifest.directory / s.path for s in entry.shards]
        listed = storage.check_split_files(manifest.directory / split, shard_paths)
        report.problems += listed.problems
        report.warnings += listed.warnings
        for f in files:
            report.files += 1
            target = manifest.directory / f.path
            if not target.is_file():
                report.problems.append(f"{target}: missing")
                hashes_ok = False
                continue
            size = target.stat().st_size
            if size != f.bytes:
                report.problems.append(f"{target}: {size} bytes, manifest says {f.bytes}")
                hashes_ok = False
                continue
            digest = hash_file(target).sha256
            if digest != f.sha256:
                report.problems.append(f"{target}: sha256 {digest} differs from the manifest's {f.sha256}")
                hashes_ok = False
        if decode and hashes_ok:
            _decode_all(manifest, split, report)
    return report


def _decode_all(manifest: Manifest, split: str, report: VerifyReport) -> None:
    """Check every shard's count and keys against the manifest, then decode every record."""
    dataset = Dataset(manifest, split, decode=True)
    known = len(report.problems)
    try:
        for shard_no in range(len(dataset.shards)):
            try:
                dataset.shard(shard_no)
            except (ThresherError, OSError) as exc:
                report.problems.append(str(exc))
        if len(report.problems) > known:
            return
        for index in range(len(dataset)):
            dataset[index]
            report.records += 1
    except (ThresherError, OSError, ValueError) as exc:
        report.problems.append(f"{split} record {report.records}: {exc}")
    finally:
        dataset.close()


def inspect_text(path: str | Path, *, first: int = 3) -> str:
    """Schema, counts and the first records, as text for a terminal."""
    manifest, splits = locate_manifest(Path(path))
    lines = [
        f"{manifest.recipe} {manifest.recipe_version} — {manifest.format}"
        + (f", codec {manifest.codec}" if manifest.codec else "")
        + f", channel order {manifest.channel_order}, layout {manifest.layout}, keys {manifest.key_format}",
        "schema:",
        *(f"  {line}" for line in manifest.schema.describe()),
        *(line for split in splits if split in manifest.split_schemas
          for line in (f"schema of {split}:", *(f"  {x}" for x in manifest.split_schemas[split].describe()))),
    ]
    for split in splits:
        entry = manifest.splits[split]
        lines.append(f"{split}: {entry.records:,} records in {len(entry.shards)} shard(s), {entry.bytes:,} bytes"
                     + (f", {entry.skipped} skipped" if entry.skipped else ""))
        dataset = Dataset(manifest, split, decode=True)
        try:  # a damaged shard stops here with a CorruptShardError that says what to do
            for i in range(min(first, len(dataset))):
                lines.append(f"  [{i}] " + describe_record(dataset[i], dataset.schema))
        finally:
            dataset.close()
    return "\n".join(lines)


def describe_record(record: dict, schema: Schema | None = None) -> str:
    """One line per record: each field as its feature summarises it (class names, box labels,
    tensor ranges), or by its Python type when no schema is given."""
    parts = []
    for name, value in record.items():
        feature = schema[name] if schema is not None and name in schema else Feature(name)
        parts.append(f"{name}={feature.summary(value)}")
    return " ".join(parts)
