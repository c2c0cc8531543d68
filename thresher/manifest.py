"""``manifest.json``: what a prepared dataset holds and how to check it, written last.

One manifest per ``<root>/<name>/<format>/`` directory covers every split prepared there.
It holds no timestamps, so the same inputs and options give the same bytes on every run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from thresher.atomic import human_bytes, write_bytes_atomic
from thresher.errors import CorruptShardError
from thresher.hashing import hash_file
from thresher.schema import Schema

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 2
GENERATION_PREFIX = "gen-"


@dataclass
class FileEntry:
    path: str  # relative to the format directory
    bytes: int
    sha256: str


@dataclass
class ShardEntry:
    path: str  # relative to the format directory: an LMDB directory or a file
    records: int
    first_key: str  # the key of the shard's first source index, stored or skipped
    consumed: int  # records taken from the recipe for this shard, skipped ones included
    skipped: int
    last_key: str = ""  # the key of the last record stored ("" when every record was skipped)
    files: list[FileEntry] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ShardEntry:
        values = dict(data)
        values["files"] = [FileEntry(**f) for f in data.get("files", [])]
        return cls(**values)


@dataclass
class SplitEntry:
    records: int
    bytes: int
    skipped: int
    shards: list[ShardEntry]
    records_per_shard: int = 0  # shard k holds source indexes [k*R, (k+1)*R)
    # Files derived from the shard list (HDF5's files.txt). They hold absolute paths, so they are
    # checked for what they list, not hashed: the manifest stays the same whatever the data root.
    extra_files: list[str] = field(default_factory=list)
    skipped_records: list[str] = field(default_factory=list)  # where and why, capped
    # Where the source files differ from what the publisher says (thresher.published), when allowed.
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SplitEntry:
        return cls(
            records=data["records"], bytes=data["bytes"], skipped=data.get("skipped", 0),
            shards=[ShardEntry.from_json(s) for s in data["shards"]],
            records_per_shard=data.get("records_per_shard", 0),
            extra_files=list(data.get("extra_files", [])),
            skipped_records=list(data.get("skipped_records", [])),
            warnings=list(data.get("warnings", [])),
        )


@dataclass
class RunReport:
    """What one ``prepare`` call did; kept beside the manifest, never written into it."""

    already_done: bool
    seconds: float
    splits: list[str]


@dataclass
class Manifest:
    recipe: str
    recipe_version: str
    format: str
    codec: str | None
    channel_order: str
    layout: str  # how raw pixels lie in a value: "CHW" (datum, hdf5) or "HWC" (tensorprotos)
    key_format: str
    options: dict[str, Any]
    schema: Schema
    sources: list[dict[str, Any]]
    splits: dict[str, SplitEntry]
    created_by: str = ""
    shard_size: int = 1 << 30  # the target asked for; shards are planned by record count from it
    generation: str = ""  # the directory (beside the manifest) holding this output's shards
    # Splits whose records hold other fields than ``schema`` (a test split without labels, a
    # segmentation subset with masks), for every such split of the recipe, prepared or not.
    split_schemas: dict[str, Schema] = field(default_factory=dict)
    directory: Path | None = None  # where it lives; not serialised
    run: RunReport | None = None  # set by prepare(); not serialised

    @property
    def fingerprint(self) -> dict[str, Any]:
        """Everything that decides the bytes of the output except the split contents."""
        return {
            "recipe": self.recipe, "recipe_version": self.recipe_version, "format": self.format,
            "codec": self.codec, "channel_order": self.channel_order, "options": self.options,
            "schema": self.schema.to_json(), "sources": self.sources, "key_format": self.key_format,
            "shard_size": self.shard_size, **self._split_schemas_json(),
        }

    def schema_of(self, split: str) -> Schema:
        """The fields of ``split``'s records."""
        return self.split_schemas.get(split, self.schema)

    def _split_schemas_json(self) -> dict[str, Any]:
        # Left out when empty, so outputs of recipes without split schemas keep their bytes and generation.
        if not self.split_schemas:
            return {}
        return {"split_schemas": {name: s.to_json() for name, s in sorted(self.split_schemas.items())}}

    @property
    def generation_name(self) -> str:
        """The generation directory this fingerprint writes into: the same options give the same name."""
        digest = hashlib.sha256(json.dumps(self.fingerprint, sort_keys=True).encode()).hexdigest()
        return GENERATION_PREFIX + digest[:12]

    def summary(self) -> str:
        """One paragraph for people: records and bytes per split, time, and where the output is.

        Then one line per warning, e.g. a source that differs from the published counts.
        """
        names = self.run.splits if self.run else sorted(self.splits)
        parts = [
            f"{name}: {self.splits[name].records:,} records, {human_bytes(self.splits[name].bytes)}"
            + (f", {self.splits[name].skipped} skipped" if self.splits[name].skipped else "")
            for name in names
        ]
        if self.run is None:
            state = "prepared"
        elif self.run.already_done:
            state = "already prepared, nothing to do"
        else:
            state = f"prepared in {self.run.seconds:.1f} s"
        details = ", ".join(x for x in (f"{self.format} {self.codec or ''}".strip(),
                                        self.channel_order if self.channel_order != "NONE" else "") if x)
        warnings = [w for name in names for w in self.splits[name].warnings]
        return (f"{self.recipe} ({details}) {state}: " + "; ".join(parts)
                + f". Output: {self.directory}" + "".join(f"\nWarning: {w}" for w in warnings))

    def to_json(self) -> dict[str, Any]:
        return {
            "thresher_manifest": MANIFEST_VERSION,
            "created_by": self.created_by,
            "recipe": {"name": self.recipe, "version": self.recipe_version},
            "format": self.format,
            "codec": self.codec,
            "channel_order": self.channel_order,
            "layout": self.layout,
            "key_format": self.key_format,
            "shard_size": self.shard_size,
            "generation": self.generation,
            "options": self.options,
            "schema": self.schema.to_json(),
            **self._split_schemas_json(),
            "sources": self.sources,
            "splits": {name: asdict(entry) for name, entry in sorted(self.splits.items())},
        }

    def dumps(self) -> bytes:
        return (json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n").encode()

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST_NAME
        write_bytes_atomic(path, self.dumps())
        self.directory = directory
        return path

    @classmethod
    def from_json(cls, data: dict[str, Any], directory: Path | None = None) -> Manifest:
        if data.get("thresher_manifest") != MANIFEST_VERSION:
            raise CorruptShardError(
                f"{directory}: not a thresher manifest of version {MANIFEST_VERSION} "
                f"(written by {data.get('created_by') or 'another version'}); prepare the dataset again")
        return cls(
            recipe=data["recipe"]["name"], recipe_version=data["recipe"]["version"],
            format=data["format"], codec=data["codec"], channel_order=data["channel_order"],
            layout=data["layout"], key_format=data["key_format"], options=data["options"],
            schema=Schema.from_json(data["schema"]), sources=data["sources"],
            splits={k: SplitEntry.from_json(v) for k, v in data["splits"].items()},
            created_by=data.get("created_by", ""), shard_size=data.get("shard_size", 1 << 30),
            generation=data.get("generation", ""), directory=directory,
            split_schemas={k: Schema.from_json(v) for k, v in data.get("split_schemas", {}).items()},
        )

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        path = Path(directory) / MANIFEST_NAME
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no manifest here; is this a prepared dataset directory?") from None
        except json.JSONDecodeError as exc:
            raise CorruptShardError(f"{path}: not valid JSON ({exc})") from exc
        return cls.from_json(data, Path(directory))


def file_entry(base: Path, path: Path) -> FileEntry:
    return FileEntry(path=path.relative_to(base).as_posix(), bytes=path.stat().st_size, sha256=hash_file(path).sha256)
