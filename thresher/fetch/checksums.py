"""Checksums: the ``filename<TAB>size<TAB>sha256`` files, verification stamps, and what to expect.

Three places can say what a file should be, strongest first: a ``--checksums FILE`` override,
the ``checksums.tsv`` recorded in the download directory (trust-on-first-use for files whose
publisher gives no checksum, or an explicit ``--update``), and the values published in the
recipe.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from thresher.atomic import write_bytes_atomic
from thresher.errors import MalformedDataError, ThresherError
from thresher.fetch.lock import file_lock
from thresher.hashing import Actual

RECORD_NAME = "checksums.tsv"
STAMP_DIR = ".verified"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MD5 = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class Expected:
    """What a file must be, and who said so (shown in every mismatch message)."""

    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    origin: str = "none published"
    recorded: bool = False  # the values come from our own checksums.tsv (trust-on-first-use)
    override: bool = False  # the values come from --checksums FILE

    @property
    def has_hash(self) -> bool:
        return bool(self.sha256 or self.md5)

    @property
    def needs_md5(self) -> bool:
        return bool(self.md5) and not self.sha256

    def problems(self, actual: Actual) -> list[str]:
        """Human-readable differences; empty when ``actual`` matches."""
        out = []
        if self.size is not None and actual.size != self.size:
            out.append(f"size {actual.size} != expected {self.size}")
        if self.sha256 and actual.sha256 and actual.sha256 != self.sha256:
            out.append(f"sha256 {actual.sha256} != expected {self.sha256}")
        if self.md5 and actual.md5 is not None and actual.md5 != self.md5:
            out.append(f"md5 {actual.md5} != expected {self.md5}")
        return out

    def describe(self) -> str:
        parts = [f"size={self.size if self.size is not None else 'unknown'}"]
        if self.sha256:
            parts.append(f"sha256={self.sha256}")
        if self.md5:
            parts.append(f"md5={self.md5}")
        return " ".join(parts) + f" ({self.origin})"


def describe_actual(actual: Actual) -> str:
    text = f"size={actual.size} sha256={actual.sha256 or '(not computed)'}"
    return text + (f" md5={actual.md5}" if actual.md5 else "")


# -- the TSV format ----------------------------------------------------------------------------


def format_checksums(rows: Iterable[tuple[str, int, str]]) -> str:
    """``filename<TAB>size<TAB>sha256`` lines, sorted by filename, as ``--checksums FILE`` reads them."""
    lines = ["# filename\tsize\tsha256"]
    for filename, size, sha256 in sorted(rows):
        if "\t" in filename or "\n" in filename:
            raise ValueError(f"cannot write a filename with a tab or newline: {filename!r}")
        lines.append(f"{filename}\t{size}\t{sha256}")
    return "\n".join(lines) + "\n"


def parse_checksums(text: str, origin: str) -> dict[str, tuple[int | None, str]]:
    """Read ``filename<TAB>size<TAB>sha256`` lines (``#`` comments, blank lines ignored).

    ``size`` may be ``-`` when unknown. A malformed line is an error naming ``origin`` and the
    line, never skipped: a silently ignored override would verify against the wrong value.
    """
    out: dict[str, tuple[int | None, str]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.rstrip("\r").split("\t")
        if len(fields) != 3:
            raise MalformedDataError(origin, f"line {number}", "expected filename<TAB>size<TAB>sha256")
        filename, size_text, sha256 = fields[0], fields[1].strip(), fields[2].strip().lower()
        if sha256.startswith("sha256:"):
            sha256 = sha256[len("sha256:") :]
        if not filename:
            raise MalformedDataError(origin, f"line {number}", "empty filename")
        if not _SHA256.match(sha256):
            raise MalformedDataError(origin, f"line {number}", f"not a sha256 hex digest: {sha256!r}")
        if size_text in ("", "-"):
            size = None
        elif size_text.isdigit():
            size = int(size_text)
        else:
            raise MalformedDataError(origin, f"line {number}", f"size is not a number: {size_text!r}")
        out[filename] = (size, sha256)
    return out


def read_checksums_file(path: Path) -> dict[str, tuple[int | None, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ThresherError(f"{path}: checksums file not found") from None
    except IsADirectoryError:
        raise ThresherError(f"{path}: is a directory, not a checksums file") from None
    except OSError as exc:
        raise ThresherError(f"{path}: cannot read the checksums file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ThresherError(f"{path}: not a text checksums file ({exc.reason} at byte {exc.start})") from None
    return parse_checksums(text, str(path))


def check_digest(value: str | None, kind: str, where: str) -> str | None:
    """Normalise a published digest; a malformed one is a recipe bug worth saying so."""
    if value is None:
        return None
    value = value.strip().lower()
    pattern = _SHA256 if kind == "sha256" else _MD5
    if not pattern.match(value):
        raise ThresherError(f"{where}: published {kind} {value!r} is not a {kind} hex digest")
    return value


# -- trust-on-first-use record in the download directory ---------------------------------------


class RecordedChecksums:
    """``<download_dir>/checksums.tsv``: values this machine recorded and now trusts.

    Writers from several threads and processes serialise on a lock file, re-read the file
    under the lock and replace it atomically, so no record is lost or half-written.
    """

    _thread_lock = threading.Lock()

    def __init__(self, download_dir: Path) -> None:
        self.path = download_dir / RECORD_NAME

    def load(self) -> dict[str, tuple[int | None, str]]:
        if not self.path.exists():
            return {}
        return read_checksums_file(self.path)

    def get(self, filename: str) -> tuple[int | None, str] | None:
        return self.load().get(filename)

    def record(self, rows: Mapping[str, tuple[int, str]]) -> None:
        with self._thread_lock, file_lock(self.path.with_name(self.path.name + ".lock"), timeout=60):
            current = self.load()
            current.update(rows)
            text = format_checksums(
                (name, size if size is not None else "-", sha) for name, (size, sha) in current.items()
            )  # type: ignore[misc]
            write_bytes_atomic(self.path, text.encode("utf-8"))


def record_checksums(download_dir: Path, rows: Iterable[tuple[str, int, str]]) -> Path:
    """Write (or update) rows in ``<download_dir>/checksums.tsv``; for ``thresher checksums NAME --update``."""
    store = RecordedChecksums(download_dir)
    store.record({name: (size, sha) for name, size, sha in rows})
    return store.path


# -- "already verified" stamps, so a 150 GB archive is not re-hashed on every run ---------------


def _stamp_path(dest: Path) -> Path:
    return dest.parent / STAMP_DIR / (dest.name + ".json")


def _identity(st: os.stat_result) -> dict[str, int]:
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino, "dev": st.st_dev}


def read_stamp(dest: Path) -> Actual | None:
    """The hashes recorded when ``dest`` was last verified, if the file is provably unchanged since."""
    try:
        st = dest.stat()
        data = json.loads(_stamp_path(dest).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("identity") != _identity(st):
        return None
    try:
        return Actual(size=int(data["size"]), sha256=str(data["sha256"]), md5=data.get("md5"))
    except (KeyError, TypeError, ValueError):
        return None


def write_stamp(dest: Path, actual: Actual) -> None:
    path = _stamp_path(dest)
    try:
        path.parent.mkdir(exist_ok=True)
        payload = {
            "identity": _identity(dest.stat()),
            "size": actual.size,
            "sha256": actual.sha256,
            "md5": actual.md5,
        }
        write_bytes_atomic(path, json.dumps(payload).encode("utf-8"))
    except (OSError, ThresherError):  # a stamp is an optimisation; failing to write one only costs a re-hash
        pass


def drop_stamp(dest: Path) -> None:
    with contextlib.suppress(OSError):
        _stamp_path(dest).unlink()
