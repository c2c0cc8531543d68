"""Every recipe × every format × both codecs, from a loopback mirror to records read back exactly."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
from e2e import FORMAT_CODECS, Mirror, assert_same_records, recipe_supports, tree_bytes
from server import LoopbackServer

import thresher
from thresher.errors import UnsupportedCodecError
from thresher.registry import all_recipes, get_recipe
from thresher.transforms import ConvertOptions

RECIPES = sorted(all_recipes())




def run_prepare(name: str, mirror: Mirror, mirror_server: LoopbackServer, root: Path, **kwargs) -> thresher.Manifest:
    return thresher.prepare(name, root=root, mirror=mirror_server.url, offline=True, checksums=mirror.checksums[name],
                            progress=False, arguments=mirror.miniatures[name].arguments, **kwargs)


@pytest.mark.parametrize("name", RECIPES)
@pytest.mark.parametrize(("fmt", "codec"), FORMAT_CODECS)
def test_recipe_round_trips_exactly(name: str, fmt: str, codec: str | None, mirror: Mirror,
                                    mirror_server: LoopbackServer, tmp_path: Path) -> None:
    recipe = get_recipe(name)  # NAME alone: its default edition
    if not recipe_supports(recipe, codec):
        with pytest.raises(UnsupportedCodecError, match="tensorprotos"):
            run_prepare(name, mirror, mirror_server, tmp_path, format=fmt, codec=codec)
        return
    result = run_prepare(name, mirror, mirror_server, tmp_path, format=fmt, codec=codec)
    manifest = result
    assert manifest.codec == codec
    edition = recipe.with_variant(None).with_arguments(mirror.miniatures[name].arguments)
    assert manifest.directory == tmp_path / edition.directory / fmt
    assert (manifest.directory / "manifest.json").is_file()
    for split in recipe.split_names:
        want = mirror.miniatures[name].records[split]
        assert manifest.splits[split].records == len(want)
        ds = thresher.open(manifest.directory / split, decode=False)
        assert len(ds) == len(want)
        got = [ds[i] for i in range(len(ds))]
        assert_same_records(got, want, recipe.split_schema(split), f"{name}/{fmt}/{codec}/{split}")
        assert_same_records(list(ds), want, recipe.split_schema(split), f"{name}/{fmt}/{codec}/{split} iterated")
        ds.close()


def test_prepare_is_deterministic_and_a_rerun_does_nothing(mirror: Mirror, mirror_server: LoopbackServer,
                                                           tmp_path: Path) -> None:
    outputs = []
    for run in ("a", "b"):
        result = run_prepare("cifar10", mirror, mirror_server, tmp_path / run, format="lmdb")
        assert not result.run.already_done
        outputs.append(result.directory)
    assert tree_bytes(outputs[0]) == tree_bytes(outputs[1]) and tree_bytes(outputs[0])
    before = {p: p.stat().st_mtime_ns for p in outputs[0].rglob("*") if p.is_file() and "lock" not in p.name}
    again = run_prepare("cifar10", mirror, mirror_server, tmp_path / "a", format="lmdb")
    assert again.run.already_done and "already prepared" in again.summary()
    assert {p: p.stat().st_mtime_ns for p in outputs[0].rglob("*") if p.is_file() and "lock" not in p.name} == before


@pytest.mark.parametrize("fmt", ["lmdb", "minidb", "hdf5"])
def test_output_is_byte_identical_for_any_worker_count_and_shard_split(fmt: str, mirror: Mirror,
                                                                       mirror_server: LoopbackServer, tmp_path: Path) -> None:
    one = run_prepare("flowers102", mirror, mirror_server, tmp_path / "one", format=fmt, workers=1, shard_size=3000,
                      options=ConvertOptions(resize=(24, 20)))
    two = run_prepare("flowers102", mirror, mirror_server, tmp_path / "two", format=fmt, workers=2, shard_size=3000,
                      options=ConvertOptions(resize=(24, 20)))
    assert one.dumps() == two.dumps()
    assert any(len(s.shards) > 1 for s in one.splits.values()), "shard_size should split a split"
    for split, entry in one.splits.items():
        ds = thresher.open(one.directory / split)
        assert len(ds) == entry.records
        assert all(ds[i]["image"].shape == (24, 20, 3) for i in range(len(ds)))


def test_manifest_records_what_was_made(mirror: Mirror, mirror_server: LoopbackServer, tmp_path: Path) -> None:
    result = run_prepare("mnist", mirror, mirror_server, tmp_path, format="minidb", codec="tensorprotos")
    data = json.loads((result.directory / "manifest.json").read_text())
    assert data["recipe"] == {"name": "mnist", "version": all_recipes()["mnist"].version}
    assert data["codec"] == "tensorprotos" and data["channel_order"] == "GRAY" and data["layout"] == "HWC"
    assert data["key_format"] == "%08d"
    assert [s["filename"] for s in data["sources"]] == sorted(s.filename for s in all_recipes()["mnist"].sources)
    shard = data["splits"]["train"]["shards"][0]
    assert shard["first_key"] == "00000000" and shard["files"][0]["path"] == f"{data['generation']}/train/shard-00000.minidb"
    assert [f["name"] for f in data["schema"]] == ["image", "label"]


def test_flac_audio_is_decoded_transparently_and_losslessly(mirror: Mirror, mirror_server: LoopbackServer,
                                                            tmp_path: Path) -> None:
    result = run_prepare("an4", mirror, mirror_server, tmp_path, format="lmdb",
                         options=ConvertOptions(audio_encoding="flac"))
    assert result.schema["audio"].encoding == "flac"
    for split in ("train", "test"):
        ds = thresher.open(result.directory / split)
        stored = thresher.open(result.directory / split, decode=False)
        for i, want in enumerate(mirror.miniatures["an4"].records[split]):
            assert stored[i]["audio"][:4] == b"fLaC"
            np.testing.assert_array_equal(ds[i]["audio"], want["audio"])
            assert ds[i]["transcript"] == want["transcript"]


def test_channel_order_option_flips_stored_pixels_and_reader_undoes_it(mirror: Mirror, mirror_server: LoopbackServer,
                                                                       tmp_path: Path) -> None:
    rgb = run_prepare("cifar10", mirror, mirror_server, tmp_path / "rgb", format="minidb", splits=["test"])
    bgr = run_prepare("cifar10", mirror, mirror_server, tmp_path / "bgr", format="minidb", splits=["test"],
                      options=ConvertOptions(channel_order="BGR"))
    assert (rgb.channel_order, bgr.channel_order) == ("RGB", "BGR")
    raw_rgb = rgb.directory.joinpath("test/shard-00000.minidb").read_bytes()
    raw_bgr = bgr.directory.joinpath("test/shard-00000.minidb").read_bytes()
    assert raw_rgb != raw_bgr
    want = mirror.miniatures["cifar10"].records["test"]
    for result in (rgb, bgr):
        ds = thresher.open(result.directory / "test")
        assert_same_records([ds[i] for i in range(len(ds))], want, all_recipes()["cifar10"].schema, "cifar10")


_INHERITED: dict[str, thresher.Dataset] = {}


def _read_inherited(index: int) -> int:
    """Runs in a forked child that inherited the parent's open dataset (as DataLoader workers do)."""
    return int(_INHERITED["ds"][index]["label"])


def _read_pickled(args: tuple[thresher.Dataset, int]) -> int:
    """Runs in a child that received the dataset pickled (spawn/forkserver DataLoader workers)."""
    ds, index = args
    return int(ds[index]["label"])


@pytest.mark.parametrize("fmt", ["lmdb", "minidb", "hdf5"])
def test_dataset_works_in_worker_processes_after_the_parent_has_read(fmt: str, mirror: Mirror,
                                                                    mirror_server: LoopbackServer, tmp_path: Path) -> None:
    result = run_prepare("mnist", mirror, mirror_server, tmp_path, format=fmt)
    ds = thresher.open(result.directory / "train")
    parent = [ds[i]["label"] for i in range(len(ds))]  # the parent's handles are open now
    _INHERITED["ds"] = ds
    try:
        with multiprocessing.get_context("fork").Pool(2) as pool:
            inherited = pool.map(_read_inherited, range(len(ds)))
        with multiprocessing.get_context("spawn").Pool(2) as pool:
            pickled = pool.map(_read_pickled, [(ds, i) for i in range(len(ds))])
    finally:
        _INHERITED.clear()
    assert inherited == pickled == parent
    assert parent == [r["label"] for r in mirror.miniatures["mnist"].records["train"]]
    assert [ds[i]["label"] for i in range(len(ds))] == parent  # the parent still reads after the children


def test_batches_stack_arrays_and_shuffle_reproducibly(mirror: Mirror, mirror_server: LoopbackServer,
                                                       tmp_path: Path) -> None:
    result = run_prepare("cifar10", mirror, mirror_server, tmp_path, format="hdf5", splits=["train"])
    ds = thresher.open(result.directory, split="train")
    batches = list(ds.batches(4, shuffle=True, seed=3))
    assert [len(b["label"]) for b in batches] == [4, 4, 4, 3]
    assert batches[0]["image"].shape == (4, 32, 32, 3) and batches[0]["image"].dtype == np.uint8
    again = list(ds.batches(4, shuffle=True, seed=3))
    assert all(np.array_equal(a["label"], b["label"]) for a, b in zip(batches, again, strict=True))
    seen = np.concatenate([b["label"] for b in batches])
    assert sorted(seen.tolist()) == sorted(r["label"] for r in mirror.miniatures["cifar10"].records["train"])
    ordered = list(ds.batches(4, shuffle=False, drop_last=True))
    assert len(ordered) == 3
    assert ordered[0]["label"].tolist() == [r["label"] for r in mirror.miniatures["cifar10"].records["train"][:4]]


def test_offline_prepare_never_contacts_the_recipe_hosts(mirror: Mirror, mirror_server: LoopbackServer,
                                                         tmp_path: Path) -> None:
    before = len(mirror_server.requests)
    run_prepare("mnist", mirror, mirror_server, tmp_path, format="lmdb")
    paths = {r.path for r in mirror_server.requests[before:]}
    assert paths == {f"/mnist/{s.filename}" for s in all_recipes()["mnist"].sources}


@pytest.mark.parametrize("name", ["cifar10", "an4"])
def test_hdf5_reads_agree_with_and_without_the_in_memory_cache(name: str, mirror: Mirror, mirror_server: LoopbackServer,
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from thresher.formats import hdf5_format

    result = run_prepare(name, mirror, mirror_server, tmp_path, format="hdf5")
    split = all_recipes()[name].split_names[0]
    want = mirror.miniatures[name].records[split]
    cached = thresher.open(result.directory / split)
    order = list(reversed(range(len(cached))))
    from_cache = [cached[i] for i in order]
    monkeypatch.setattr(hdf5_format, "CACHE_BYTES", 0)  # shards too big to hold: row by row from the file
    direct = thresher.open(result.directory / split)
    from_file = [direct[i] for i in order]
    schema = all_recipes()[name].schema
    assert_same_records(from_cache, [want[i] for i in order], schema, f"{name} cached")
    assert_same_records(from_file, [want[i] for i in order], schema, f"{name} from file")
    assert direct.shards[0]._cache is None
