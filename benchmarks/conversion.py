"""Benchmark 1: MNIST idx.gz → LMDB and CIFAR-10 binary → LMDB against a plain-loop floor.

The floor is the least any converter must do: decompress the sources and put the finished
values into LMDB (``putmulti(append=True)`` in 64 MB transactions, fresh directory, one sync
at the end). Its values are Caffe ``Datum`` bytes encoded *before* the clock starts, so the
floor pays nothing for parsing or encoding. thresher is timed on the conversion alone:
sources already downloaded and verified, ``prepare`` into a fresh root with ``download_dir=``.
Target (issue): thresher within 1.3× of the floor's time.
"""

from __future__ import annotations

import gzip
import io
import shutil
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import lmdb
import numpy as np

import thresher
from benchmarks.common import MB, Table, Target, best_times, number, rate
from benchmarks.inputs import CIFAR_ARCHIVE, CIFAR_FOLDER, MNIST_FILES, Inputs, Workspace
from benchmarks.profiling import facts, profile

NAME = "conversion"
TARGET = Target(1.3, at_least=False)
COMMIT_BYTES = 64 << 20
KEY = "%08d"

Values = dict[str, list[list[tuple[bytes, bytes]]]]  # split -> transactions -> (key, value)


def run(ws: Workspace, quick: bool) -> Table:
    table = Table(NAME, "Conversion to LMDB (Caffe Datum), both splits, against a plain-loop floor")
    repeats = 2 if quick else 5
    for label, inputs, sources, values in (
        ("MNIST idx.gz → LMDB datum", ws.mnist(), _mnist_sources, _mnist_values),
        ("CIFAR-10 binary → LMDB datum", ws.cifar10(), _cifar_sources, _cifar_values),
    ):
        _measure(ws, table, label, inputs, sources, values(inputs), repeats)
    table.notes += [
        "Measured: `thresher.prepare(format='lmdb')` of both splits into a fresh root, sources already in "
        "`download_dir` (verified on an earlier call); best of "
        f"{repeats} runs alternating with the floor's (fewer once 16 s are spent). MB/s counts the stored values.",
        "Floor: gzip-decompress the source files, then write the same Datum values (encoded before timing) "
        "with py-lmdb `putmulti(append=True)` in 64 MB transactions to a fresh directory (opened with "
        "`sync=False, metasync=False, meminit=False`), one `env.sync(True)` at the end; "
        f"best of {repeats} likewise. The floor's values are checked to be byte-identical to what thresher stored.",
        "Ratio = thresher's time / the floor's time.",
    ]
    return table


def _measure(ws: Workspace, table: Table, label: str, inputs: Inputs,
             decompress: Callable[[Inputs], list[Path]], values: Values, repeats: int) -> None:
    downloads = ws.downloads(inputs)
    stored = sum(len(v) for txns in values.values() for txn in txns for _, v in txn)
    roots: list[Path] = []
    floors: list[Path] = []

    def convert() -> None:
        _remove(roots)  # keep disk use to one output; the last one is compared with the floor's values
        root = ws.fresh(f"{inputs.recipe}-conversion")
        thresher.prepare(inputs.recipe, root=root, format="lmdb", download_dir=downloads, **inputs.fetch_options())
        roots.append(root)

    phases: list[tuple[float, float]] = []  # (decompress, write) seconds of each floor run

    def floor() -> None:
        _remove(floors)
        out = ws.fresh(f"{inputs.recipe}-floor")
        start = time.perf_counter()
        for path in decompress(inputs):
            gzip.decompress(path.read_bytes())
        middle = time.perf_counter()
        for split, transactions in values.items():
            write_lmdb(out / split, transactions)
        phases.append((middle - start, time.perf_counter() - middle))
        floors.append(out)

    floor_seconds, seconds = best_times([floor, convert], repeats=repeats, budget=16.0)
    unpack, write = min(phases, key=sum)
    output = roots[-1] / inputs.recipe / "lmdb"
    same = all(_lmdb_items(output / split / "shard-00000") == [kv for txn in txns for kv in txn]
               for split, txns in values.items())
    _remove(roots + floors)

    records = inputs.total_records
    table.add(
        f"{label}, {records:,} records ({', '.join(f'{k} {v:,}' for k, v in inputs.records.items())})",
        f"{seconds:.2f} s · {rate(records, seconds, 'rec')} · {rate(stored / MB, seconds, 'MB')}",
        f"floor {floor_seconds:.2f} s · {rate(records, floor_seconds, 'rec')} · {rate(stored / MB, floor_seconds, 'MB')}",
        seconds / floor_seconds, f"{number(seconds / floor_seconds)}× the floor's time", TARGET,
    )
    if not same:
        table.notes.append(f"WARNING ({label}): the floor's values differ from thresher's, so this ratio is not "
                           "like for like; fix the floor's encoder.")
    table.analysis += [f"{label}: the floor's best run spent {unpack:.2f} s decompressing "
                       f"{inputs.source_bytes / MB:,.0f} MB of gzip and {write:.2f} s writing "
                       f"{stored / MB:,.0f} MB of values to LMDB (sync included); thresher's best run took "
                       f"{seconds:.2f} s.", ""]
    profiled_root = ws.fresh(f"{inputs.recipe}-profile")
    _, stats = profile(lambda: thresher.prepare(inputs.recipe, root=profiled_root, format="lmdb",
                                                download_dir=downloads, **inputs.fetch_options()))
    table.analysis += facts(f"{label} ({records:,} records), one un-timed `prepare`", stats)
    shutil.rmtree(profiled_root, ignore_errors=True)


def _remove(paths: list[Path]) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def write_lmdb(path: Path, transactions: list[list[tuple[bytes, bytes]]]) -> None:
    """The floor's writer: append-only bulk load, no per-record work, one sync."""
    total = sum(len(k) + len(v) for txn in transactions for k, v in txn)
    env = lmdb.open(str(path), map_size=max(64 << 20, 3 * total), subdir=True, sync=False, metasync=False,
                    readahead=False, meminit=False)
    for txn_items in transactions:
        with env.begin(write=True) as txn:
            txn.cursor().putmulti(txn_items, append=True)
    env.sync(True)
    env.close()


def datum(pixels_chw: bytes, channels: int, height: int, width: int, label: int) -> bytes:
    """A raw Caffe Datum as thresher writes it: channels, height, width, data, label, encoded=false."""
    return b"".join((b"\x08", _varint(channels), b"\x10", _varint(height), b"\x18", _varint(width),
                     b"\x22", _varint(len(pixels_chw)), pixels_chw, b"\x28", _varint(label), b"\x38\x00"))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _transactions(values: list[bytes]) -> list[list[tuple[bytes, bytes]]]:
    """Keys ``%08d`` in order, cut into transactions of about ``COMMIT_BYTES``."""
    txns: list[list[tuple[bytes, bytes]]] = [[]]
    size = 0
    for i, value in enumerate(values):
        if size >= COMMIT_BYTES:
            txns.append([])
            size = 0
        key = (KEY % i).encode()
        txns[-1].append((key, value))
        size += len(key) + len(value)
    return txns


def _mnist_sources(inputs: Inputs) -> list[Path]:
    return [inputs.files[name] for split in ("train", "test") for name in MNIST_FILES[split]]


def _mnist_values(inputs: Inputs) -> Values:
    out: Values = {}
    for split in ("train", "test"):
        images_name, labels_name = MNIST_FILES[split]
        images = np.frombuffer(gzip.decompress(inputs.files[images_name].read_bytes()), np.uint8, offset=16)
        labels = np.frombuffer(gzip.decompress(inputs.files[labels_name].read_bytes()), np.uint8, offset=8)
        rows = images.reshape(len(labels), 28 * 28)
        out[split] = _transactions([datum(row.tobytes(), 1, 28, 28, int(label))
                                    for row, label in zip(rows, labels.tolist(), strict=True)])
    return out


def _cifar_sources(inputs: Inputs) -> list[Path]:
    return [inputs.files[CIFAR_ARCHIVE]]


def _cifar_values(inputs: Inputs) -> Values:
    members = {f"{CIFAR_FOLDER}/data_batch_{i}.bin": "train" for i in range(1, 6)}
    members[f"{CIFAR_FOLDER}/test_batch.bin"] = "test"
    raw = gzip.decompress(inputs.files[CIFAR_ARCHIVE].read_bytes())
    values: dict[str, list[bytes]] = {"train": [], "test": []}
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        for member in tar:
            split = members.get(member.name)
            if split is None:
                continue
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            rows = np.frombuffer(data, np.uint8).reshape(-1, 3073)
            # The binary records already hold planar R, G, B: exactly a Datum's CHW data in RGB order.
            values[split] += [datum(row[1:].tobytes(), 3, 32, 32, int(row[0])) for row in rows]
    return {split: _transactions(v) for split, v in values.items()}


def _lmdb_items(path: Path) -> list[tuple[bytes, bytes]]:
    env = lmdb.open(str(path), readonly=True, lock=False, subdir=True)
    try:
        with env.begin() as txn:
            return list(txn.cursor())
    finally:
        env.close()

