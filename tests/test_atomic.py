"""Atomic placement and hashing helpers, on real files and real threads and processes."""

from __future__ import annotations

import hashlib
import multiprocessing
import threading
from pathlib import Path

import pytest

from thresher.atomic import place, write_bytes_atomic
from thresher.hashing import hash_file


def test_threads_writing_one_file_never_collide(tmp_path: Path) -> None:
    """Two threads of one process (download stamps, checksums.tsv) may replace the same file at once."""
    final = tmp_path / "stamp.json"
    payloads = [bytes([i]) * 4096 for i in range(2)]
    errors: list[BaseException] = []

    def writer(data: bytes) -> None:
        try:
            for _ in range(300):
                write_bytes_atomic(final, data)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert final.read_bytes() in payloads
    assert [p.name for p in tmp_path.iterdir()] == ["stamp.json"]


def test_a_file_never_replaces_a_directory(tmp_path: Path) -> None:
    """A download whose name a user's folder already has must not delete that folder."""
    folder = tmp_path / "data.bin"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    tmp = tmp_path / ".data.bin.part"
    tmp.write_bytes(b"downloaded")
    with pytest.raises(OSError):
        place(tmp, folder)
    assert (folder / "notes.txt").read_text() == "mine"


def test_a_directory_replaces_an_old_directory(tmp_path: Path) -> None:
    """LMDB shards are directories: a rewritten shard replaces the old one whole."""
    final, tmp = tmp_path / "shard-00000.lmdb", tmp_path / ".shard-00000.lmdb.tmp-1"
    final.mkdir()
    (final / "data.mdb").write_bytes(b"old")
    tmp.mkdir()
    (tmp / "data.mdb").write_bytes(b"new")
    place(tmp, final)
    assert (final / "data.mdb").read_bytes() == b"new" and not tmp.exists()


def _hash_in_child(path: str, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    queue.put(hash_file(Path(path)).sha256)


def test_hashing_works_in_a_process_forked_after_hashing(tmp_path: Path) -> None:
    """The hashing thread does not survive fork; a forked child must still be able to hash."""
    data = bytes(range(256)) * 8192
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert hash_file(path).sha256 == hashlib.sha256(data).hexdigest()  # the parent's thread now runs
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_hash_in_child, args=(str(path), queue))
    child.start()
    child.join(timeout=20)
    if child.is_alive():
        child.kill()
        child.join()
        pytest.fail("hashing in the forked child hung")
    assert queue.get(timeout=5) == hashlib.sha256(data).hexdigest()
