"""Damaged shards: a truncated file or a flipped bit is a CorruptShardError naming the file, never a crash.

Every case is read in a child process, so a SIGSEGV or SIGBUS inside a library shows up as a
negative return code instead of taking the test run down; many cases share one child.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e import Mirror
from reliability_matrix import scenario
from server import LoopbackServer
from test_reliability import prepare_kwargs

import thresher
from thresher.formats import ShardContext, get_format
from thresher.manifest import Manifest

FORMATS = ("lmdb", "minidb", "hdf5")
PAGE = 4096
META_RECORD = 152  # page header, magic, version, address, map size, two database records, last page, txnid
MAX_CRASHES = 5  # enough to show a pattern; each crash costs a fresh child

READ_EVERYTHING = r"""
import json, sys, traceback
from pathlib import Path
from thresher.errors import CorruptShardError
spec = json.loads(sys.stdin.read())
target = Path(spec["file"])
pristine = target.read_bytes()

def reads_of_dataset():
    from thresher.manifest import Manifest
    from thresher.reader import Dataset
    manifest = Manifest.read(Path(spec["format_dir"]))
    def opened():
        return Dataset(manifest, spec["split"])
    def iterate(ds):
        for _ in ds:
            pass
    def every_index(ds):
        for i in reversed(range(len(ds))):
            ds[i]
    def batches(ds):
        for _ in ds.batches(3):
            pass
        for _ in ds.batches(2, shuffle=False):
            pass
    return opened, (iterate, every_index, batches)

def reads_of_shard():
    from thresher.formats import ShardContext, get_format
    from thresher.schema import Schema
    context = ShardContext(Schema.from_json(spec["schema"]))
    def opened():
        return get_format(spec["format"]).reader(Path(spec["shard"]), context, expected_sizes=spec["sizes"])
    def iterate(shard):
        for _ in shard.iterate():
            pass
    def every_index(shard):
        for i in reversed(range(len(shard))):
            shard.read(i)
    def values(shard):
        shard.values(0, len(shard))
    return opened, (iterate, every_index, values)

opened, reads = reads_of_shard() if spec.get("shard") else reads_of_dataset()
for number, (kind, position, mask) in spec["cases"]:
    print("start", number, flush=True)
    damaged = bytearray(pristine[:position] if kind == "truncate" else pristine)
    if kind == "flip":
        damaged[position] ^= mask
    target.write_bytes(damaged)
    outcomes = []
    for read in reads:
        dataset = None
        try:
            dataset = opened()
            read(dataset)
            outcomes.append("ok")
        except CorruptShardError as exc:
            outcomes.append("CorruptShardError: " + str(exc))
        except Exception as exc:
            outcomes.append(type(exc).__name__ + ": " + str(exc) + " " + traceback.format_exc(limit=-3))
        finally:
            if dataset is not None:
                dataset.close()
    print("done", number, json.dumps(outcomes), flush=True)
target.write_bytes(pristine)
"""


def damage_cases(size: int, lmdb: bool, spread: int = 300, meta_records: bool = True) -> list[tuple[str, int, int]]:
    """Truncations at several points; bit flips at every byte of the LMDB meta records (the rest of a
    meta page is unused), lowest and highest bit, and at ``spread`` positions through the rest of the
    file, the bit rotating (an odd stride, so the positions fall on every part of a page)."""
    cuts = {0, 1, 17, size // 4, size // 2, size - 1} | ({PAGE, 2 * PAGE, size - PAGE} if lmdb else set())
    cases = [("truncate", n, 0) for n in sorted(c for c in cuts if 0 <= c < size)]
    meta = [page * PAGE + i for page in (0, 1) for i in range(META_RECORD)] if lmdb and meta_records else []
    cases += [("flip", pos, mask) for pos in meta for mask in (0x01, 0x80)]
    stride = max(7, size // spread) | 1
    cases += [("flip", pos, 1 << (pos // stride % 8)) for pos in range(3, size, stride) if pos not in meta]
    return cases


def read_damaged(spec: dict, cases: list[tuple[str, int, int]]) -> tuple[list[str], list[str]]:
    """Run every case in as few children as possible; return (crashes, outcomes that are not allowed)."""
    target = Path(spec["file"])
    pristine = target.read_bytes()
    crashes: list[str] = []
    numbered = list(enumerate(cases))
    finished: dict[int, list[str]] = {}
    while numbered and len(crashes) < MAX_CRASHES:
        target.write_bytes(pristine)  # a crashed child leaves its damage behind
        proc = subprocess.run([sys.executable, "-c", READ_EVERYTHING], input=json.dumps({**spec, "cases": numbered}),
                              capture_output=True, text=True, timeout=300)
        started = None
        for line in proc.stdout.splitlines():
            word, number, *rest = line.split(" ", 2)
            if word == "start":
                started = int(number)
            elif word == "done":
                finished[int(number)] = json.loads(rest[0])
                started = None
        if proc.returncode == 0:
            break
        if started is None:
            raise AssertionError(f"the reading child failed outside a case ({proc.returncode}):\n{proc.stderr[-2000:]}")
        crashes.append(f"{cases[started]} -> return code {proc.returncode}")
        numbered = [(n, c) for n, c in numbered if n > started]
    target.write_bytes(pristine)
    name = spec["shard_path"]  # an LMDB shard is a directory; naming it or its data.mdb both name the shard
    wrong = [f"{cases[n]}: {outcome[:400]}" for n, outcomes in sorted(finished.items()) for outcome in outcomes
             if outcome != "ok" and not (outcome.startswith("CorruptShardError: ") and name in outcome
                                         and "thresher verify" in outcome)]
    return crashes, wrong


@pytest.fixture(scope="module")
def prepared(mirror: Mirror, mirror_server: LoopbackServer,
             tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    root = tmp_path_factory.mktemp("damaged")
    return {(name, fmt): thresher.prepare(name, root=root, format=fmt,
                                          **prepare_kwargs(mirror, mirror_server, name)).directory
            for name in ("mnist", "cifar10") for fmt in FORMATS}


@pytest.fixture
def pristine_copy(prepared: dict[tuple[str, str], Path], tmp_path: Path) -> Iterator:
    def copy(name: str, fmt: str) -> Path:
        out = tmp_path / name / fmt
        shutil.copytree(prepared[(name, fmt)], out)
        return out
    yield copy


SCENARIO = scenario(
    "14", "a damaged shard: truncated at several points, or one bit flipped anywhere (every byte of the LMDB "
          "meta records, a spread through every page), in LMDB, minidb and HDF5",
    "reading it (open, every record, batches; `thresher inspect` and `show`) either works (the bit was in "
    "unused or value bytes) or stops with a CorruptShardError naming the file and saying to run "
    "`thresher verify` and prepare again; never a crash (SIGSEGV/SIGBUS) or a library traceback",
    "each case is read fully in a child process: no negative return code, no exception but CorruptShardError, "
    "whose message names the damaged file and `thresher verify`")


@SCENARIO
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_damaged_shard_is_an_error_naming_it_never_a_crash(name: str, fmt: str, pristine_copy) -> None:
    out = pristine_copy(name, fmt)
    manifest = Manifest.read(out)
    shard = manifest.splits["test"].shards[0]
    damaged = out / shard.files[0].path
    spec = {"file": str(damaged), "format_dir": str(out), "split": "test", "shard_path": str(out / shard.path)}
    crashes, wrong = read_damaged(spec, damage_cases(damaged.stat().st_size, fmt == "lmdb"))
    assert not crashes, f"reading {damaged} killed the process:\n" + "\n".join(crashes)
    assert not wrong, f"{len(wrong)} cases ended otherwise than with a CorruptShardError naming the file:\n" \
        + "\n".join(wrong[:20])


@SCENARIO
def test_damaged_multilevel_lmdb_is_an_error_never_a_crash(tmp_path: Path) -> None:
    """A shard of 3,000 small records: a branch level above the leaves, and values on overflow pages."""
    from thresher.schema import Field, Schema

    schema = Schema((Field("label", "int"),))
    path = tmp_path / "shard-00000"
    writer = get_format("lmdb").writer(path, ShardContext(schema))
    for i in range(3000):
        writer.append(f"{i:08d}".encode(), bytes([i % 251]) * (5000 if i % 500 == 7 else 1 + i % 40))
    writer.close()
    data = path / "data.mdb"
    size = data.stat().st_size
    assert size > 30 * PAGE
    spec = {"file": str(data), "shard": str(path), "shard_path": str(path), "format": "lmdb", "schema": schema.to_json(),
            "sizes": {"data.mdb": size}}
    cases = damage_cases(size, lmdb=True, spread=400, meta_records=False)  # the meta records are fuzzed above
    crashes, wrong = read_damaged(spec, cases)
    assert not crashes, f"reading {data} killed the process:\n" + "\n".join(crashes)
    assert not wrong, f"{len(wrong)} cases ended otherwise than with a CorruptShardError naming the file:\n" \
        + "\n".join(wrong[:20])


@SCENARIO
@pytest.mark.parametrize("fmt", FORMATS)
def test_inspect_and_show_on_a_truncated_shard_say_one_line_and_exit_1(fmt: str, pristine_copy,
                                                                       tmp_path: Path) -> None:
    out = pristine_copy("cifar10", fmt)
    shard = out / Manifest.read(out).splits["train"].shards[0].files[0].path
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    for args in (["inspect", str(out)], ["show", str(out / "train"), "-o", str(tmp_path / "sheet.png")]):
        proc = subprocess.run([sys.executable, "-m", "thresher.cli", *args], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 1, (args, proc.returncode, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("thresher: error: "), proc.stderr
        assert str(shard) in lines[0] and f"thresher verify {out}" in lines[0], lines[0]
