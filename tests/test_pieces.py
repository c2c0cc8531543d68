"""Recipes in independent inputs: pieces cover a split exactly, workers and Dask tasks read only their
inputs, a resumed run starts at the input holding its first missing record, and bytes never change."""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e import tree_bytes, write_checksums
from recipe_packages import recipe_package

import thresher
from thresher.conversion import pipeline
from thresher.conversion.pieces import InputPlan, Piece, read_piece
from thresher.errors import MalformedDataError
from thresher.recipe import Input

PACKAGE = "piece_test_recipes"
SIZES = {"train": [3, 0, 1, 17, 2, 2, 9, 1, 1, 1, 30, 4], "test": [5, 5]}


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The ``parts`` recipe importable here and in every worker process started from now on."""
    with recipe_package(tmp_path_factory.mktemp("pkgs"), PACKAGE, "parts") as root:
        yield root


@pytest.fixture
def parts(package: Path, tmp_path: Path) -> tuple[dict[str, Any], dict[str, list[dict]]]:
    """A file:// mirror of parts.txt with the records it holds."""
    return mirror_of_parts(tmp_path, SIZES)


def mirror_of_parts(tmp_path: Path, sizes: dict[str, list[int]]) -> tuple[dict[str, Any], dict[str, list[dict]]]:
    """prepare()'s options for a file:// mirror of a parts.txt of inputs of ``sizes``, and its records."""
    from piece_test_recipes.parts import SOURCE, write_parts  # type: ignore[import-not-found]

    folder = tmp_path / "mirror" / "parts"
    folder.mkdir(parents=True)
    records = write_parts(folder / SOURCE, sizes)
    checksums = write_checksums({SOURCE: folder / SOURCE}, tmp_path / "mirror" / "parts.checksums.tsv")
    return {"mirror": (tmp_path / "mirror").as_uri(), "offline": True, "checksums": str(checksums),
            "progress": False}, records


def reads(root: Path) -> list[tuple[str, int]]:
    log = root / "parts" / "downloads" / "parts.txt.reads"
    if not log.exists():
        return []
    return [(name, int(size)) for name, size, _ in (line.split() for line in log.read_text().splitlines())]


# -- planning -------------------------------------------------------------------------------------


def plan_of(counts: list[int]) -> InputPlan:
    return InputPlan([Input(f"i{n}", count) for n, count in enumerate(counts)])


def covered(piece: Piece, plan: InputPlan) -> list[int]:
    """The source indexes a piece reads, from its parts and skip alone."""
    indexes = []
    for n, part in enumerate(piece.parts):
        base = plan.offsets[plan.inputs.index(part)]
        indexes += range(base + (piece.skip if n == 0 else 0), base + part.records)
    return indexes[:piece.count]


@pytest.mark.parametrize("seed", range(20))
def test_pieces_cover_the_split_once_in_order_from_any_start(seed: int) -> None:
    rng = random.Random(seed)
    counts = [rng.choice([0, 1, 1, 2, 3, 5, 8, 40]) for _ in range(rng.randint(1, 30))]
    plan = plan_of(counts)
    size = rng.randint(1, 12)
    start = rng.randint(0, plan.total)
    pieces = list(plan.pieces("train", start, size))
    indexes = [i for piece in pieces for i in covered(piece, plan)]
    assert indexes == list(range(start, plan.total))
    assert [p.start for p in pieces] == [start + sum(q.count for q in pieces[:k]) for k in range(len(pieces))]
    for piece in pieces:
        assert 0 < piece.count <= size
        assert all(part.records > 0 for part in piece.parts[1:]), "an empty input is never read"
        if len(piece.parts) > 1:  # grouped: whole inputs after the first, entered where the piece starts
            assert piece.count == sum(p.records for p in piece.parts) - piece.skip


@pytest.mark.parametrize("seed", range(20))
def test_inputs_listed_lazily_give_the_same_pieces_and_are_listed_only_as_far_as_needed(seed: int) -> None:
    rng = random.Random(seed)
    counts = [rng.choice([0, 1, 2, 3, 5, 8, 40]) for _ in range(rng.randint(1, 30))]
    size, start = rng.randint(1, 12), rng.randint(0, sum(counts))
    listed: list[int] = []

    def lazily() -> Iterator[Input]:
        for n, count in enumerate(counts):
            listed.append(n)
            yield Input(f"i{n}", count)

    lazy = InputPlan(lazily())
    pieces = lazy.pieces("train", start, size)
    first = next(pieces, None)
    if first is not None:  # handed out while inputs after it are still unlisted
        end = first.start + first.count
        later = [n for n, count in enumerate(counts) if count and sum(counts[:n]) >= end]
        if len(later) >= 2:  # one input past the piece is looked at, to see whether it fits
            assert listed[-1] < later[1], (listed, later)
    from_lazy = [first, *pieces] if first is not None else []
    assert from_lazy == list(plan_of(counts).pieces("train", start, size))
    assert lazy.total == sum(counts) and listed == list(range(len(counts)))


def test_a_shard_piece_reads_only_the_inputs_holding_its_records() -> None:
    plan = plan_of([3, 0, 1, 17, 2])
    piece = plan.piece("train", 5, 10)  # records 5..9 lie in the 17-record input (source indexes 4..20)
    assert [p.name for p in piece.parts] == ["i3"] and piece.skip == 1 and piece.count == 5
    piece = plan.piece("train", 2, 6)
    assert [p.name for p in piece.parts] == ["i0", "i2", "i3"] and piece.skip == 2 and piece.count == 4
    assert plan.piece("train", 23, 30).count == 0


def test_an_input_that_holds_other_than_its_stated_count_is_an_error(package: Path, tmp_path: Path) -> None:
    from piece_test_recipes.parts import RECIPE, SOURCE, write_parts  # type: ignore[import-not-found]

    write_parts(tmp_path / SOURCE, {"train": [4]})
    files = {SOURCE: tmp_path / SOURCE}
    [real] = RECIPE.inputs("train", files)
    assert len(list(read_piece(RECIPE, files, Piece("train", 0, 4, (real,))))) == 4
    for stated, found in ((3, "more"), (5, "only 4")):
        wrong = Input(real.name, stated, real.where)
        with pytest.raises(MalformedDataError, match=f"holds {found} records where its listing said {stated}"):
            list(read_piece(RECIPE, files, Piece("train", 0, stated, (wrong,))))


# -- end to end -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["lmdb", "hdf5"])
def test_workers_read_each_input_once_and_write_what_one_process_writes(fmt: str, parts, tmp_path: Path) -> None:
    kwargs, records = parts
    one = thresher.prepare("parts", root=tmp_path / "one", format=fmt, shard_size=300, **kwargs)
    two = thresher.prepare("parts", root=tmp_path / "two", format=fmt, shard_size=300, workers=2, **kwargs)
    assert len(one.splits["train"].shards) >= 3
    assert tree_bytes(one.directory) == tree_bytes(two.directory)
    for root in (tmp_path / "one", tmp_path / "two"):
        counts = Counter(name for name, _ in reads(root))
        assert counts == Counter(f"{s}-{n:03d}" for s, sizes in SIZES.items() for n, c in enumerate(sizes) if c)
    with thresher.open(two.directory, "train") as ds:
        assert [ds[i] for i in range(len(ds))] == records["train"]


@pytest.mark.parametrize("workers", [1, 2])
def test_the_conversion_reads_the_first_inputs_before_the_last_is_listed(package: Path, tmp_path: Path,
                                                                          workers: int) -> None:
    options, records = mirror_of_parts(tmp_path, {"train": [100] * 8, "test": [1]})  # pieces of 256 records
    manifest = thresher.prepare("parts", root=tmp_path / "out", format="lmdb", workers=workers, splits=["train"],
                                **options)
    assert manifest.splits["train"].records == len(records["train"]) == 800
    events = (tmp_path / "out" / "parts" / "downloads" / "parts.txt.events").read_text().splitlines()
    first_read = min(i for i, event in enumerate(events) if event.startswith("read "))
    last_listed = max(i for i, event in enumerate(events) if event.startswith("listed "))
    assert first_read < last_listed, events
    assert sorted(e for e in events if e.startswith("listed ")) == [f"listed train-{n:03d}" for n in range(8)]


def test_a_resumed_run_starts_at_the_input_holding_its_first_missing_record(parts, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    kwargs, _ = parts
    monkeypatch.setattr(pipeline, "unit_size", lambda plan: 4)  # small pieces: shards finish before the failure
    whole = thresher.prepare("parts", root=tmp_path / "whole", shard_size=300, splits=["train"], **kwargs)
    per_shard = whole.splits["train"].records_per_shard
    downloads = tmp_path / "resumed" / "parts" / "downloads"
    thresher.prepare("parts", root=tmp_path / "resumed", shard_size=300, splits=["test"], **kwargs)  # downloads
    (downloads / "parts.txt.reads").unlink()
    (downloads / "parts.txt.fail-train-010").touch()  # the 30-record input near the end
    with pytest.raises(RuntimeError, match="injected failure reading input train-010"):
        thresher.prepare("parts", root=tmp_path / "resumed", shard_size=300, splits=["train"], **kwargs)
    (downloads / "parts.txt.reads").unlink()
    progress = next((tmp_path / "resumed" / "parts" / "lmdb").glob("gen-*/train/.progress.json"))
    done = len(json.loads(progress.read_text())["shards"]) * per_shard  # the first record to write again
    assert done > 0
    resumed = thresher.prepare("parts", root=tmp_path / "resumed", shard_size=300, splits=["train"], **kwargs)
    sizes = SIZES["train"]
    holding = next(n for n in range(len(sizes)) if sum(sizes[:n + 1]) > done)
    read_again = [name for name, _ in reads(tmp_path / "resumed")]  # a big input is read once per piece of it
    assert list(dict.fromkeys(read_again)) == [f"train-{n:03d}" for n in range(holding, len(sizes)) if sizes[n]]
    assert (tree_bytes(resumed.directory / resumed.generation / "train")
            == tree_bytes(whole.directory / whole.generation / "train"))


distributed = pytest.importorskip("distributed", reason="the dask extra is not installed")


@pytest.fixture(scope="module")
def cluster(package: Path):
    """Two worker processes that find the ``parts`` recipe through the registry."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, worker_dashboard_address=None) as local:
        yield local


def test_dask_tasks_read_about_the_input_once_and_equal_a_local_run(parts, cluster, tmp_path: Path) -> None:
    kwargs, _ = parts
    local = thresher.prepare("parts", root=tmp_path / "local", shard_size=300, **kwargs)
    remote = thresher.prepare("parts", root=tmp_path / "dask", shard_size=300, executor="dask",
                              scheduler=cluster.scheduler_address, **kwargs)
    assert len(remote.splits["train"].shards) >= 3
    assert remote.dumps() == local.dumps()
    assert tree_bytes(remote.directory) == tree_bytes(local.directory)
    # Each task reads the inputs that hold its shard's records and no other.
    expected: Counter[str] = Counter()
    for split, sizes in SIZES.items():
        per_shard = remote.splits[split].records_per_shard
        offsets = [sum(sizes[:n]) for n in range(len(sizes) + 1)]
        for first in range(0, offsets[-1], per_shard):
            expected.update(f"{split}-{n:03d}" for n in range(len(sizes))
                            if sizes[n] and offsets[n] < first + per_shard and offsets[n + 1] > first)
        expected[f"{split}-000"] += 1  # and the client reads the first record, for the shard plan
    assert Counter(name for name, _ in reads(tmp_path / "dask")) == expected
    pids = {line.split()[2] for line in (tmp_path / "dask/parts/downloads/parts.txt.reads").read_text().splitlines()}
    assert len(pids - {str(os.getpid())}) == 2, "both workers read"


def test_dask_runs_show_a_bar_per_split(parts, cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kwargs, _ = parts
    thresher.prepare("parts", root=tmp_path, shard_size=300, executor="dask", scheduler=cluster.scheduler_address,
                     **{**kwargs, "progress": True})
    err = capsys.readouterr().err
    assert "parts/train" in err and "parts/test" in err and "rec" in err


def test_recipes_say_whether_they_list_inputs() -> None:
    """The pool starts up front for recipes with inputs; single streams say they have none."""
    from thresher.registry import get_recipe

    assert get_recipe("flowers102").lists_inputs and get_recipe("imagenet").lists_inputs
    assert not get_recipe("mnist").lists_inputs and not get_recipe("cifar10").lists_inputs
