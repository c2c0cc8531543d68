"""ImageNet-21k: whichever release is placed converts exactly, the hold-out is the stated one, bad input is named."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import signal
import tarfile
import time
from pathlib import Path

import pytest
from e2e import FORMAT_CODECS, assert_same_records, tree_bytes
from PIL import Image

import thresher
from thresher.acquire import manual_instructions
from thresher.cli import main
from thresher.errors import CorruptArchiveError, MalformedDataError, ManualDownloadRequired
from thresher.miniature import write_checksums
from thresher.recipe import Miniature, Record
from thresher.recipes._imagenet21k import FALL11, WINTER21, WINTER21_PLAIN, held_out
from thresher.recipes._imagenet_miniature import tar as tar_bytes
from thresher.recipes._imagenet_miniature import write_21k
from thresher.registry import get_recipe
from thresher.sources.extent import resolved

RECIPE = get_recipe("imagenet/21k")
RELEASES = (FALL11, WINTER21, WINTER21_PLAIN)
# The miniature's classes, sorted by hand: the label is this position, whatever the tar's order.
SORTED_WNIDS = ("n00004475", "n00005787", "n01440764", "n02084071")


def read_tar(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


def mini(directory: Path, release: str) -> Miniature:
    directory.mkdir(parents=True, exist_ok=True)
    return write_21k(directory, release)


def place(miniature: Miniature, root: Path) -> Path:
    """The miniature's file where ``prepare imagenet/21k`` looks (shared with imagenet); a checksums file."""
    downloads = root / "imagenet" / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    for name, path in miniature.files.items():
        (downloads / name).write_bytes(path.read_bytes())
    return write_checksums(miniature.files, root / f"{len(list(root.glob('*.tsv')))}.checksums.tsv")


def prepare(root: Path, checksums: Path, **kwargs) -> thresher.Manifest:
    return thresher.prepare("imagenet/21k", root=root, offline=True, checksums=checksums, progress=False, **kwargs)


def without_where(records: list[Record]) -> list[Record]:
    return [{k: v for k, v in resolved(r).items() if k != "__where__"} for r in records]


# -- the miniature, in the real layout ------------------------------------------------------------


@pytest.mark.parametrize("release", RELEASES)
def test_the_miniature_is_a_tar_of_class_tars_as_published(release: str, tmp_path: Path) -> None:
    data = mini(tmp_path, release).files[release].read_bytes()
    if release.endswith(".gz"):
        assert data[:2] == b"\x1f\x8b"
        data = gzip.decompress(data)
    assert data[257:262] == b"ustar"
    classes = read_tar(data)
    assert [name[:-4] for name in classes] != sorted(SORTED_WNIDS) and sorted(n[:-4] for n in classes) == list(SORTED_WNIDS)
    for name, inner in classes.items():
        photos = read_tar(inner)
        assert all(p.startswith(name[:-4] + "_") and p.endswith(".JPEG") for p in photos)
        assert {Image.open(io.BytesIO(b)).format for b in photos.values()} <= {"JPEG", "PNG"}


# -- manual download: one of the releases -----------------------------------------------------------


def test_the_manual_screen_names_each_release_its_checksum_and_the_shared_directory(tmp_path: Path) -> None:
    with pytest.raises(ManualDownloadRequired) as raised:
        thresher.prepare("imagenet/21k", root=tmp_path, offline=True, progress=False)
    screen = str(raised.value)
    downloads = tmp_path / "imagenet" / "downloads"
    assert screen == manual_instructions(RECIPE, downloads)
    assert f"{downloads.absolute()}/" in screen and "registration" in screen and "ONE of these" in screen
    for text in (FALL11, WINTER21, WINTER21_PLAIN, "md5 ab313ce03179fd803a401b02c651c0a2", "1.31 TB",
                 "14,197,122", "19,167", "https://image-net.org/data/winter21_whole.tar.gz",
                 "thresher prepare imagenet/21k"):
        assert text in screen
    assert len(screen.splitlines()) <= 25


def test_info_describes_the_variant_completely(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "imagenet/21k"]) == 0
    text = capsys.readouterr().out
    for line in ("imagenet/21k 1.0.0: ImageNet-21k", "variants: imagenet (default), imagenet/21k",
                 "manual download: yes", f"  {WINTER21}: size not published",
                 "    sha256 -  md5 ab313ce03179fd803a401b02c651c0a2", "image-net.org's download page",
                 f"  {FALL11}: size not published", "http://www.image-net.org/archive/stanford/fall11_whole.tar",
                 "  train: ", "  validation: ", "citation:", "deng2009imagenet"):
        assert line in text, line
    assert main(["info", "imagenet"]) == 0
    assert capsys.readouterr().out.startswith("imagenet 1.0.0: ImageNet Large Scale Visual Recognition Challenge 2012")


# -- whichever release is placed converts exactly ----------------------------------------------------


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize(("fmt", "codec"), FORMAT_CODECS)
def test_a_placed_release_converts_exactly_in_every_format(release: str, fmt: str, codec: str | None,
                                                           tmp_path: Path) -> None:
    miniature = mini(tmp_path / "mini", release)
    manifest = prepare(tmp_path, place(miniature, tmp_path), format=fmt, codec=codec)
    for split in ("train", "validation"):
        want = miniature.records[split]
        assert manifest.splits[split].records == len(want)
        with thresher.open(tmp_path / "imagenet" / "21k" / fmt / split, decode=False) as ds:
            assert_same_records([ds[i] for i in range(len(ds))], want, RECIPE.split_schema(split), f"{fmt}/{split}")
    written = json.loads((tmp_path / "imagenet" / "21k" / fmt / "manifest.json").read_text())
    assert [s["filename"] for s in written["sources"]] == [release]
    label = next(f for f in written["schema"] if f["name"] == "label")
    assert tuple(label["names"]) == SORTED_WNIDS
    assert release in label["description"] and "min(50, n // 2)" in label["description"]
    assert ("winter 2021" if release.startswith("winter") else "fall 2011") in label["description"]


def test_labels_are_sorted_wordnet_id_positions_not_tar_order(tmp_path: Path) -> None:
    miniature = mini(tmp_path, FALL11)
    got = [resolved(r) for r in RECIPE.records("train", miniature.files)]
    label_of = {r["__where__"].split(":")[1][:-4]: r["label"] for r in got}
    assert label_of == {"n00004475": 0, "n00005787": 1, "n01440764": 2, "n02084071": 3}
    assert RECIPE.class_names(miniature.files) == [(w, w) for w in SORTED_WNIDS]


def test_the_plain_tar_gives_one_input_per_class_and_the_gzip_one_stream(tmp_path: Path) -> None:
    for release in (FALL11, WINTER21_PLAIN):
        miniature = mini(tmp_path / release, release)
        listed = RECIPE.inputs("train", miniature.files)
        assert listed is not None
        parts = list(listed)  # classes are counted as they are listed
        assert [p.name for p in parts] == ["n02084071", "n00004475", "n01440764", "n00005787"]
        assert [p.records for p in parts] == [2, 54, 4, 1]
    assert RECIPE.inputs("train", mini(tmp_path / "gz", WINTER21).files) is None


def test_when_several_releases_are_placed_the_first_listed_is_used(tmp_path: Path) -> None:
    fall = mini(tmp_path / "fall", FALL11)
    winter = mini(tmp_path / "winter", WINTER21)
    checksums = write_checksums({**fall.files, **winter.files}, tmp_path / "both.tsv")
    place(fall, tmp_path)
    place(winter, tmp_path)
    manifest = prepare(tmp_path, checksums, format="hdf5", splits=["validation"])
    assert [s["filename"] for s in manifest.sources] == [WINTER21]


def test_the_gzip_stream_lists_its_synsets_once_and_keeps_the_list_beside_it(tmp_path: Path) -> None:
    miniature = mini(tmp_path, WINTER21)
    RECIPE.with_files(miniature.files)
    kept = miniature.files[WINTER21].with_name(WINTER21 + ".synsets")
    lines = kept.read_text().splitlines()
    assert lines[1:] == ["n02084071", "n00004475", "n01440764", "n00005787"]
    kept.write_text("\n".join([lines[0], "n09999999", *lines[2:]]) + "\n")  # the kept list is what is used
    assert RECIPE.class_names(miniature.files)[-1] == ("n09999999", "n09999999")
    kept.write_text("\n".join(["another file 1 2", "n09999999", *lines[2:]]) + "\n")  # a stale list is not
    assert RECIPE.class_names(miniature.files) == [(w, w) for w in SORTED_WNIDS]
    kept.write_text("\n".join([lines[0], *lines[2:]]) + "\n")  # a list that lacks a class the stream holds
    with pytest.raises(MalformedDataError, match=rf"{WINTER21}.*'n02084071.tar'.*delete that list"):
        list(RECIPE.records("train", miniature.files))


# -- the hold-out ----------------------------------------------------------------------------------


def test_the_hold_out_is_the_stated_seeded_rule() -> None:
    names = [f"n01440764_{k}.JPEG" for k in range(1, 131)]
    held = held_out(names)
    by_hash = sorted(names, key=lambda n: hashlib.sha256(f"imagenet21k-holdout-v1/{n}".encode()).hexdigest())
    assert held == set(by_hash[:50])  # the cap: 50 of 130
    assert held_out(list(reversed(names))) == held  # the names decide, not their order
    assert held_out(names, seed="another") != held
    for n, expected in ((0, 0), (1, 0), (2, 1), (7, 3), (99, 49), (100, 50), (101, 50)):
        assert len(held_out(names[:n])) == expected


def test_the_splits_are_disjoint_and_together_the_whole_class(tmp_path: Path) -> None:
    miniature = mini(tmp_path, FALL11)
    places = {split: [resolved(r)["__where__"] for r in RECIPE.records(split, miniature.files)]
              for split in ("train", "validation")}
    assert not set(places["train"]) & set(places["validation"])
    every = {f"{FALL11}:{c}:{p}" for c, inner in read_tar(miniature.files[FALL11].read_bytes()).items()
             for p in read_tar(inner)}
    assert set(places["train"]) | set(places["validation"]) == every
    per_class = {w: sum(p.split(":")[1] == f"{w}.tar" for p in places["validation"]) for w in SORTED_WNIDS}
    assert per_class == {"n00004475": 50, "n00005787": 0, "n01440764": 3, "n02084071": 1}


def test_one_worker_and_two_write_the_same_bytes(tmp_path: Path) -> None:
    miniature = mini(tmp_path / "mini", FALL11)
    one = prepare(tmp_path / "one", place(miniature, tmp_path / "one"), shard_size=6000)
    two = prepare(tmp_path / "two", place(miniature, tmp_path / "two"), shard_size=6000, workers=2)
    assert len(one.splits["train"].shards) >= 3
    assert tree_bytes(one.directory) == tree_bytes(two.directory)


# -- bad input, named ------------------------------------------------------------------------------


def rewritten(miniature: Miniature, tmp_path: Path, release: str, change: dict[str, bytes]) -> dict[str, Path]:
    members = {**read_tar(gzip.decompress(miniature.files[release].read_bytes()) if release.endswith(".gz")
                          else miniature.files[release].read_bytes()), **change}
    data = tar_bytes(members)
    path = tmp_path / "changed" / release
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(gzip.compress(data) if release.endswith(".gz") else data)
    return {release: path}


@pytest.mark.parametrize("release", [FALL11, WINTER21])
def test_a_member_that_is_not_a_class_tar_is_named(release: str, tmp_path: Path) -> None:
    files = rewritten(mini(tmp_path, release), tmp_path, release, {"README.txt": b"hello"})
    with pytest.raises(MalformedDataError, match=rf"{release}.*'README.txt'.*<WordNet id>.tar"):
        list(RECIPE.records("train", files))


@pytest.mark.parametrize("release", [FALL11, WINTER21])
def test_a_class_tar_holding_a_non_image_stops_prepare_naming_it(release: str, tmp_path: Path) -> None:
    miniature = mini(tmp_path / "mini", release)
    inner = read_tar(read_tar(gzip.decompress(miniature.files[release].read_bytes()) if release.endswith(".gz")
                              else miniature.files[release].read_bytes())["n02084071.tar"])
    files = rewritten(miniature, tmp_path, release,
                      {"n02084071.tar": tar_bytes({**inner, "n02084071_99.JPEG": b"<html>login</html>"})})
    changed = Miniature(files, {})
    with pytest.raises(MalformedDataError,
                       match=rf"{release}:n02084071.tar.*'n02084071_99.JPEG'.*not a JPEG or PNG file"):
        prepare(tmp_path, place(changed, tmp_path), format="hdf5")
    skipped = prepare(tmp_path, write_checksums(files, tmp_path / "again.tsv"), format="hdf5", skip_bad=True)
    assert sum(skipped.splits[s].skipped for s in ("train", "validation")) == 1


@pytest.mark.parametrize("release", [FALL11, WINTER21])
def test_a_truncated_release_is_named(release: str, tmp_path: Path) -> None:
    data = mini(tmp_path, release).files[release].read_bytes()
    path = tmp_path / "cut" / release
    path.parent.mkdir()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(CorruptArchiveError, match=release):
        list(RECIPE.records("train", {release: path}))


@pytest.mark.parametrize("release", [FALL11, WINTER21])
def test_a_class_tar_that_is_there_twice_is_named(release: str, tmp_path: Path) -> None:
    data = mini(tmp_path, release).files[release].read_bytes()
    classes = list(read_tar(gzip.decompress(data) if release.endswith(".gz") else data).items())
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, inner in [*classes, classes[0]]:
            info = tarfile.TarInfo(name)
            info.size = len(inner)
            tar.addfile(info, io.BytesIO(inner))
    path = tmp_path / "doubled" / release
    path.parent.mkdir()
    path.write_bytes(gzip.compress(buffer.getvalue()) if release.endswith(".gz") else buffer.getvalue())
    with pytest.raises(MalformedDataError, match=rf"{release}.*{classes[0][0]}.*there twice"):
        RECIPE.with_files({release: path})


def test_the_hold_out_size_and_seed_are_arguments_recorded_in_the_manifest(tmp_path: Path) -> None:
    miniature = mini(tmp_path / "mini", FALL11)
    checksums = place(miniature, tmp_path)
    manifest = prepare(tmp_path, checksums, format="hdf5", arguments={"holdout": "2", "seed": "mine"})
    classes = read_tar(miniature.files[FALL11].read_bytes())
    want: dict[str, list[bytes]] = {"train": [], "validation": []}
    for inner in classes.values():  # the stated rule, computed here: min(2, n // 2) smallest hashes
        photos = read_tar(inner)
        ranked = sorted(photos, key=lambda p: hashlib.sha256(f"mine/{p}".encode()).hexdigest())
        held = set(ranked[:min(2, len(photos) // 2)])
        for photo, data in photos.items():
            want["validation" if photo in held else "train"].append(data)
    assert len(want["validation"]) == 1 + 2 + 2 + 0
    for split in ("train", "validation"):
        with thresher.open(tmp_path / "imagenet" / "21k" / "hdf5" / split, decode=False) as ds:
            assert [ds[i]["image"] for i in range(len(ds))] == want[split]
    label = next(f for f in manifest.schema.to_json() if f["name"] == "label")
    assert "min(2, n // 2)" in label["description"] and "'mine/<member name>'" in label["description"]
    default = prepare(tmp_path, checksums, format="hdf5")
    assert default.generation != manifest.generation and default.splits["validation"].records == 54
    for wrong, problem in (({"holdout": "-1"}, "whole number"), ({"source": "x"}, "does not take source")):
        with pytest.raises(ValueError, match=problem):
            prepare(tmp_path, checksums, format="hdf5", arguments=wrong)


@pytest.mark.parametrize("release", [FALL11, WINTER21])
def test_dask_tasks_write_what_a_local_run_writes_with_the_same_hold_out(release: str, tmp_path: Path) -> None:
    """Class inputs carry their photos to the tasks; the gzip stream is read in each task, with the arguments."""
    distributed = pytest.importorskip("distributed", reason="the dask extra is not installed")
    miniature = mini(tmp_path / "mini", release)
    arguments = {"holdout": "3", "seed": "dask"}
    local = prepare(tmp_path / "local", place(miniature, tmp_path / "local"), shard_size=6000, arguments=arguments)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, worker_dashboard_address=None) as cluster:
        remote = prepare(tmp_path / "dask", place(miniature, tmp_path / "dask"), shard_size=6000,
                         arguments=arguments, executor="dask", scheduler=cluster.scheduler_address)
    assert len(remote.splits["train"].shards) >= 3 and remote.splits["validation"].records == 1 + 3 + 3 + 0
    assert tree_bytes(remote.directory) == tree_bytes(local.directory)


def test_thresher_checksums_reads_the_release_placed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    miniature = mini(tmp_path / "mini", WINTER21_PLAIN)
    place(miniature, tmp_path)
    assert main(["checksums", "imagenet/21k", "--root", str(tmp_path)]) == 0
    digest = hashlib.sha256(miniature.files[WINTER21_PLAIN].read_bytes()).hexdigest()
    assert capsys.readouterr().out.splitlines()[1:] == [
        f"{WINTER21_PLAIN}\t{miniature.files[WINTER21_PLAIN].stat().st_size}\t{digest}"]


def test_the_cli_resizes_like_imagenet_and_a_rerun_on_the_gzip_stream_does_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checksums = place(mini(tmp_path / "mini", WINTER21), tmp_path)
    command = ["prepare", "imagenet/21k", "--root", str(tmp_path), "--offline", "--checksums", str(checksums),
               "--no-progress"]
    assert main(command) == 0
    manifest = json.loads((tmp_path / "imagenet" / "21k" / "lmdb" / "manifest.json").read_text())
    assert manifest["options"]["resize"] == [256, 256] and manifest["channel_order"] == "BGR"
    assert manifest["codec"] == "datum"
    with thresher.open(tmp_path / "imagenet" / "21k" / "lmdb" / "validation") as ds:
        assert ds[0]["image"].shape == (256, 256, 3) and len(ds) == 54
    capsys.readouterr()
    assert main(command) == 0
    assert "already prepared, nothing to do" in capsys.readouterr().out


def test_the_cli_takes_the_hold_out_size_and_seed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checksums = place(mini(tmp_path / "mini", FALL11), tmp_path)
    command = ["prepare", "imagenet/21k", "--root", str(tmp_path), "--offline", "--checksums", str(checksums),
               "--no-progress", "--format", "hdf5"]
    assert main([*command, "--holdout", "2", "--seed", "mine"]) == 0
    manifest = json.loads((tmp_path / "imagenet" / "21k" / "hdf5" / "manifest.json").read_text())
    label = next(f for f in manifest["schema"] if f["name"] == "label")
    assert "min(2, n // 2)" in label["description"] and "'mine/<member name>'" in label["description"]
    assert manifest["splits"]["validation"]["records"] == 1 + 2 + 2 + 0
    capsys.readouterr()
    assert main(["prepare", "images", "--source", str(tmp_path), "--holdout", "2", "--root", str(tmp_path)]) != 0
    assert "images does not take holdout" in capsys.readouterr().err  # one line, not a traceback


@pytest.mark.parametrize("release", [FALL11, WINTER21])
@pytest.mark.timeout(120)
def test_a_killed_run_resumes_to_the_bytes_of_an_uninterrupted_one(release: str, tmp_path: Path) -> None:
    """The hold-out depends on names only, so a resumed run holds out what the first run would have."""
    from test_interrupt import ended, start

    checksums = place(mini(tmp_path / "mini", release), tmp_path / "killed")
    (tmp_path / "whole" / "imagenet").mkdir(parents=True)
    downloads = tmp_path / "killed" / "imagenet" / "downloads"

    class Run:  # the shape test_interrupt.start expects of a case
        @staticmethod
        def arguments(root: Path, downloads: Path, checksums: Path, workers: int) -> list[str]:
            return ["prepare", "imagenet/21k", "--root", str(root), "--download-dir", str(downloads), "--offline",
                    "--checksums", str(checksums), "--format", "lmdb", "--shard-size", "6000", "--workers",
                    str(workers), "--resize", "none", "--no-progress"]

    proc = start(Run, tmp_path / "killed", downloads, checksums, None, delay=0.05)  # type: ignore[arg-type]
    split = tmp_path / "killed" / "imagenet" / "21k" / "lmdb"
    deadline = time.monotonic() + 60
    while len(list(split.glob("gen-*/train/shard-*/data.mdb"))) < 2:  # two shards finished, more to come
        assert proc.poll() is None, f"the run ended first: {proc.communicate()}"
        assert time.monotonic() < deadline, "no two shards within 60 s"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    ended(proc, 10, "the killed run")
    assert not (split / "manifest.json").exists(), "killed before the end"
    assert main(Run.arguments(tmp_path / "killed", downloads, checksums, 2)) == 0
    assert main(Run.arguments(tmp_path / "whole", downloads, checksums, 1)) == 0
    assert tree_bytes(split) == tree_bytes(tmp_path / "whole" / "imagenet" / "21k" / "lmdb")


@pytest.mark.parametrize("release", [FALL11, WINTER21])
def test_a_class_tar_that_is_not_a_plain_tar_is_named(release: str, tmp_path: Path) -> None:
    miniature = mini(tmp_path / "mini", release)
    data = miniature.files[release].read_bytes()
    inner = read_tar(gzip.decompress(data) if release.endswith(".gz") else data)["n01440764.tar"]
    files = rewritten(miniature, tmp_path, release, {"n01440764.tar": gzip.compress(inner)})
    with pytest.raises(MalformedDataError, match=rf"{release}:n01440764.tar.*not an uncompressed tar.*gzip"):
        list(RECIPE.records("validation", files))
