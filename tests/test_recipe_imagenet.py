"""ImageNet ILSVRC2012: manual placement, class tars read in place, labels through meta.mat, bad input named."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from e2e import FORMAT_CODECS, assert_same_records, tree_bytes
from PIL import Image
from recipe_packages import recipe_package

import thresher
from thresher.acquire import manual_instructions
from thresher.cli import main
from thresher.errors import ChecksumError, CorruptArchiveError, MalformedDataError, ManualDownloadRequired
from thresher.miniature import write_checksums
from thresher.recipe import BadRecord, Miniature, Record
from thresher.recipes.imagenet import (
    DEVKIT,
    GROUND_TRUTH,
    META,
    ODD_FILES,
    RECIPE,
    TEST,
    TRAIN,
    VAL,
    parse_meta,
)
from thresher.sources.extent import Extent, resolved
from thresher.transforms import ConvertOptions

sio = pytest.importorskip("scipy.io")


@pytest.fixture
def mini(tmp_path: Path) -> Miniature:
    (tmp_path / "mini").mkdir()
    return RECIPE.write_miniature(tmp_path / "mini")


def tar_bytes(members: Mapping[str, bytes], mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:  # type: ignore[call-overload]
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def read_tar(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


def records(split: str, files: Mapping[str, Path]) -> list[Record | BadRecord]:
    return [r if isinstance(r, BadRecord) else resolved(r) for r in RECIPE.records(split, files)]


def synsets_mat(rows: list[tuple[int, str, str, int]]) -> bytes:
    """meta.mat as the devkit lays it out: a (N, 1) struct array of doubles and strings."""
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]
    synsets = np.zeros((len(rows), 1), dtype=[(f, object) for f in fields])
    for i, (ident, wnid, words, children) in enumerate(rows):
        synsets[i, 0] = (np.array([[ident]], float), wnid, words, "a gloss", np.array([[children]], float),
                         np.zeros((1, children)), np.array([[0]], float), np.array([[1300]], float))
    buffer = io.BytesIO()
    sio.savemat(buffer, {"synsets": synsets})
    return buffer.getvalue()


def with_devkit(files: Mapping[str, Path], tmp_path: Path, *, meta: bytes | None = None,
                truth: bytes | None = None) -> dict[str, Path]:
    """The miniature's files with a devkit whose meta.mat or ground truth is replaced."""
    members = read_tar(files[DEVKIT].read_bytes())
    if meta is not None:
        members[META] = meta
    if truth is not None:
        members[GROUND_TRUTH] = truth
    path = tmp_path / DEVKIT
    path.write_bytes(gzip.compress(tar_bytes(members)))
    return {**files, DEVKIT: path}


def with_tar(files: Mapping[str, Path], tmp_path: Path, name: str, members: Mapping[str, bytes]) -> dict[str, Path]:
    path = tmp_path / name
    path.write_bytes(tar_bytes(members))
    return {**files, name: path}


# -- the miniature reads back exactly ---------------------------------------------------------------


def test_records_are_the_published_bytes_in_class_then_name_order(mini: Miniature) -> None:
    for split in RECIPE.split_names:
        raw = list(RECIPE.records(split, mini.files))
        assert all(isinstance(r["image"], Extent) for r in raw), "images stay in the tar until a worker reads them"
        got = records(split, mini.files)
        assert [{k: v for k, v in r.items() if k != "__where__"} for r in got] == mini.records[split]
    where = [r["__where__"] for r in records("validation", mini.files)]
    assert where == [f"{VAL}:ILSVRC2012_val_{n:08d}.JPEG" for n in range(1, 8)]  # the tar holds them unsorted


def test_the_miniature_is_in_the_published_layout(mini: Miniature) -> None:
    train = read_tar(mini.files[TRAIN].read_bytes())
    assert mini.files[TRAIN].read_bytes()[257:262] == b"ustar"  # uncompressed, a tar of tars
    assert list(train) == sorted(train) and all(name.endswith(".tar") for name in train)
    formats = {}
    for name, data in train.items():
        for image_name, image in read_tar(data).items():
            assert image_name.startswith(name[:-4] + "_") and image_name.endswith(".JPEG")
            opened = Image.open(io.BytesIO(image))
            formats[image_name] = (opened.format, opened.mode)
    assert formats["n01739381_1309.JPEG"] == ("JPEG", "CMYK") and formats["n02105855_2933.JPEG"][0] == "PNG"
    assert {"n01739381_1309.JPEG", "n02105855_2933.JPEG"} <= set(ODD_FILES)
    devkit = read_tar(mini.files[DEVKIT].read_bytes())
    assert mini.files[DEVKIT].read_bytes()[:2] == b"\x1f\x8b" and {META, GROUND_TRUTH} <= set(devkit)
    synsets = sio.loadmat(io.BytesIO(devkit[META]))["synsets"]
    assert synsets.shape[1] == 1 and {"ILSVRC2012_ID", "WNID", "words", "num_children"} <= set(synsets.dtype.names)


def test_class_index_is_the_sorted_position_of_the_wordnet_id() -> None:
    # meta.mat lists synsets by ILSVRC2012_ID, which is not alphabetical; inner nodes have children.
    meta = synsets_mat([(1, "n02119789", "kit fox, Vulpes macrotis", 0), (2, "n02100735", "English setter", 0),
                        (3, "n02110185", "Siberian husky", 0), (4, "n01443537", "goldfish, Carassius auratus", 0),
                        (5, "n01440764", "tench, Tinca tinca", 0), (6, "n02084071", "dog, domestic dog", 3)])
    classes = parse_meta(meta)
    assert classes.wnids == ("n01440764", "n01443537", "n02100735", "n02110185", "n02119789")
    assert classes.words[3] == "Siberian husky" and classes.words[0] == "tench, Tinca tinca"
    assert classes.by_id == {1: "n02119789", 2: "n02100735", 3: "n02110185", 4: "n01443537", 5: "n01440764"}


def test_validation_labels_follow_real_ground_truth_lines_through_meta_mat(mini: Miniature, tmp_path: Path) -> None:
    # The devkit's ground truth starts "490\n361\n171\n": ILSVRC2012_IDs, one per image in file-name order.
    meta = synsets_mat([(171, "n02105855", "Shetland sheepdog", 0), (361, "n09193705", "alp", 0),
                        (490, "n01751748", "sea snake", 0), (1001, "n00001740", "entity", 3)])
    files = with_devkit(mini.files, tmp_path, meta=meta, truth=b"490\n361\n171\n171\n490\n361\n490\n")
    got = records("validation", files)
    assert [r["label"] for r in got] == [0, 2, 1, 1, 0, 2, 0]  # sea snake, alp, sheepdog: by sorted WordNet id
    assert RECIPE.class_names(files) == [("n01751748", "sea snake"), ("n02105855", "Shetland sheepdog"),
                                         ("n09193705", "alp")]


# -- manual download ----------------------------------------------------------------------------------


def test_the_manual_screen_names_files_sizes_checksums_and_the_directory(tmp_path: Path) -> None:
    with pytest.raises(ManualDownloadRequired) as raised:
        thresher.prepare("imagenet", root=tmp_path, offline=True, progress=False)
    screen = str(raised.value)
    assert screen == manual_instructions(RECIPE, tmp_path / "imagenet" / "downloads")
    assert "registration" in screen and "logged in" in screen and str((tmp_path / "imagenet" / "downloads").absolute()) in screen
    for line in (f"{TRAIN}  147,897,477,120 bytes", "sha256 b08200a27a8e34218a0e58fde36b0fe8f73bc377f4acea2d91602057c3ca45bb",
                 f"{VAL}  6,744,924,160 bytes", "md5 fa75699e90414af021442c21a62c3abf",
                 f"{TEST}  no checksum published"):
        assert line in screen
    assert len(screen.splitlines()) <= 25


def place(mini: Miniature, root: Path, name: str = "imagenet") -> Path:
    """The miniature's files put where ``prepare`` looks for manual downloads; a checksums file for them."""
    downloads = root / name / "downloads"
    downloads.mkdir(parents=True)
    for name, path in mini.files.items():
        (downloads / name).write_bytes(path.read_bytes())
    return write_checksums(mini.files, root / "imagenet.checksums.tsv")


def prepare(root: Path, checksums: Path, **kwargs) -> thresher.Manifest:
    return thresher.prepare("imagenet", root=root, offline=True, checksums=checksums, progress=False, **kwargs)


@pytest.mark.parametrize(("fmt", "codec"), FORMAT_CODECS)
def test_placed_files_convert_exactly_in_every_format(fmt: str, codec: str | None, mini: Miniature,
                                                      tmp_path: Path) -> None:
    checksums = place(mini, tmp_path)
    labelled = ["train", "validation"]
    manifest = prepare(tmp_path, checksums, format=fmt, codec=codec, splits=labelled if codec == "datum" else None)
    if codec == "datum":  # Datum holds an image and a label; the test split has no label
        with pytest.raises(thresher.errors.UnsupportedCodecError):
            prepare(tmp_path / "all", checksums, format=fmt, codec=codec)
    for split in labelled if codec == "datum" else RECIPE.split_names:
        want = mini.records[split]
        assert manifest.splits[split].records == len(want)
        with thresher.open(tmp_path / "imagenet" / fmt / split, decode=False) as ds:
            assert_same_records([ds[i] for i in range(len(ds))], want, RECIPE.split_schema(split), f"{fmt}/{split}")
    assert "n02105855_2933.JPEG" in str(manifest.schema.to_json())  # the manifest names the odd files


def test_a_wrong_placed_file_is_refused_and_named(mini: Miniature, tmp_path: Path) -> None:
    checksums = place(mini, tmp_path)
    placed = tmp_path / "imagenet" / "downloads" / VAL
    placed.write_bytes(placed.read_bytes()[:-1024])
    with pytest.raises(ChecksumError, match=rf"{VAL}.*present but wrong"):
        prepare(tmp_path, checksums)


def test_resize_decodes_cmyk_and_png_to_rgb_and_keeps_others_as_published(mini: Miniature, tmp_path: Path) -> None:
    checksums = place(mini, tmp_path)
    prepare(tmp_path, checksums, format="hdf5", splits=["train"], options=ConvertOptions(resize=(16, 16)))
    names = [r["__where__"].rsplit(":", 1)[1] for r in RECIPE.records("train", mini.files)]
    with thresher.open(tmp_path / "imagenet" / "hdf5" / "train") as ds:
        for i, name in enumerate(names):
            source = Image.open(io.BytesIO(mini.records["train"][i]["image"]))
            expected = np.asarray(source.convert("RGB").resize((16, 16), Image.BILINEAR), dtype=np.int16)
            got = ds[i]["image"]
            assert got.shape == (16, 16, 3)
            assert np.abs(got.astype(np.int16) - expected).mean() < 3, name  # RGB, not CMYK read as RGB
    with thresher.open(tmp_path / "imagenet" / "hdf5" / "train", decode=False) as ds:
        assert ds.schema.fields[0].encoding == "raw"  # decoded: a CMYK JPEG and a PNG sit among raw pixels


def test_the_cli_makes_what_create_imagenet_sh_makes_unless_told_resize_none(mini: Miniature, tmp_path: Path) -> None:
    checksums = place(mini, tmp_path)
    common = ["prepare", "imagenet", "--root", str(tmp_path), "--offline", "--checksums", str(checksums),
              "--no-progress", "--splits", "train", "validation", "--codec", "datum"]
    assert main(common) == 0
    manifest = json.loads((tmp_path / "imagenet" / "lmdb" / "manifest.json").read_text())
    assert manifest["options"]["resize"] == [256, 256] and manifest["channel_order"] == "BGR"
    with thresher.open(tmp_path / "imagenet" / "lmdb" / "validation") as ds:
        assert ds[0]["image"].shape == (256, 256, 3)
    assert main([*common, "--format", "minidb", "--resize", "none"]) == 0
    with thresher.open(tmp_path / "imagenet" / "minidb" / "train", decode=False) as ds:
        assert [ds[i]["image"] for i in range(len(ds))] == [r["image"] for r in mini.records["train"]]


# -- workers and Dask tasks take whole classes ------------------------------------------------------


def test_two_workers_write_what_one_writes(mini: Miniature, tmp_path: Path) -> None:
    checksums = place(mini, tmp_path / "one")
    place(mini, tmp_path / "two")
    one = prepare(tmp_path / "one", checksums, shard_size=3000)
    two = prepare(tmp_path / "two", checksums, shard_size=3000, workers=2)
    assert len(one.splits["train"].shards) >= 3
    assert tree_bytes(one.directory) == tree_bytes(two.directory)


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``imagenet_logged``: this recipe logging each input it reads, importable in worker processes too."""
    with recipe_package(tmp_path_factory.mktemp("pkgs"), "imagenet_test_recipes", "imagenet_logged") as root:
        yield root


@pytest.fixture(scope="module")
def cluster(logged: Path) -> Iterator[Any]:
    distributed = pytest.importorskip("distributed", reason="the dask extra is not installed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, worker_dashboard_address=None) as local:
        yield local


def test_dask_tasks_read_only_their_classes_and_equal_a_local_run(mini: Miniature, cluster: Any,
                                                                  tmp_path: Path) -> None:
    runs = {}
    for run, kwargs in (("local", {}), ("dask", {"executor": "dask", "scheduler": cluster.scheduler_address})):
        checksums = place(mini, tmp_path / run, "imagenet_logged")
        runs[run] = thresher.prepare("imagenet_logged", root=tmp_path / run, offline=True, checksums=checksums,
                                     progress=False, splits=["train"], shard_size=3000, **kwargs)
    local, remote = runs["local"], runs["dask"]
    assert len(remote.splits["train"].shards) >= 3
    assert tree_bytes(remote.directory) == tree_bytes(local.directory)
    classes = [(part.name, part.records) for part in RECIPE.inputs("train", mini.files)]
    per_shard = remote.splits["train"].records_per_shard
    ends = np.cumsum([0] + [count for _, count in classes])
    expected = Counter({classes[0][0]: 1})  # the client reads the first record, for the shard plan
    for first in range(0, ends[-1], per_shard):
        expected.update(name for n, (name, _) in enumerate(classes)
                        if ends[n] < first + per_shard and ends[n + 1] > first)
    log = (tmp_path / "dask" / "imagenet_logged" / "downloads" / "reads.log").read_text().splitlines()
    assert Counter(line.split()[1] for line in log) == expected
    assert len({line.split()[2] for line in log} - {str(os.getpid())}) == 2, "both workers read"


# -- malformed input ----------------------------------------------------------------------------------


def test_a_train_member_that_is_not_a_class_tar_is_named(mini: Miniature, tmp_path: Path) -> None:
    members = read_tar(mini.files[TRAIN].read_bytes())
    files = with_tar(mini.files, tmp_path, TRAIN, {**members, "README.txt": b"hello"})
    with pytest.raises(MalformedDataError, match=rf"{TRAIN}.*'README.txt'.*<WordNet id>.tar"):
        RECIPE.inputs("train", files)


def test_a_class_missing_from_meta_mat_is_named(mini: Miniature, tmp_path: Path) -> None:
    members = read_tar(mini.files[TRAIN].read_bytes())
    files = with_tar(mini.files, tmp_path, TRAIN, {**members, "n09999999.tar": tar_bytes({"n09999999_1.JPEG": b"x"})})
    with pytest.raises(MalformedDataError, match=r"'n09999999.tar'.*not one of the leaf synsets"):
        RECIPE.inputs("train", files)


def test_a_class_tar_that_is_not_a_tar_is_named(mini: Miniature, tmp_path: Path) -> None:
    members = read_tar(mini.files[TRAIN].read_bytes())
    members["n02110185.tar"] = gzip.compress(members["n02110185.tar"])
    files = with_tar(mini.files, tmp_path, TRAIN, members)
    with pytest.raises(MalformedDataError, match=rf"{TRAIN}:n02110185.tar.*not an uncompressed tar.*gzip"):
        list(RECIPE.inputs("train", files))  # found when the class's photos are counted


def test_a_truncated_train_tar_is_named(mini: Miniature, tmp_path: Path) -> None:
    path = tmp_path / TRAIN
    data = mini.files[TRAIN].read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(CorruptArchiveError, match=TRAIN):
        RECIPE.inputs("train", {**mini.files, TRAIN: path})


def test_a_compressed_train_tar_is_refused_with_the_reason(mini: Miniature, tmp_path: Path) -> None:
    path = tmp_path / TRAIN
    path.write_bytes(gzip.compress(mini.files[TRAIN].read_bytes()))
    with pytest.raises(MalformedDataError, match="not readable in place: the published train tar is uncompressed"):
        RECIPE.inputs("train", {**mini.files, TRAIN: path})


def test_a_photo_that_is_neither_jpeg_nor_png_is_a_bad_record(mini: Miniature, tmp_path: Path) -> None:
    members = read_tar(mini.files[TRAIN].read_bytes())
    inner = read_tar(members["n02110185.tar"])
    members["n02110185.tar"] = tar_bytes({**inner, "n02110185_9.JPEG": b"<html>login</html>"})
    files = with_tar(mini.files, tmp_path, TRAIN, members)
    bad = [r for r in records("train", files) if isinstance(r, BadRecord)]
    assert bad == [BadRecord(f"{TRAIN}:n02110185.tar", "member 'n02110185_9.JPEG'",
                             "not a JPEG or PNG file (starts with 3c 68 74 6d)")]
    val = with_tar(mini.files, tmp_path, VAL, {**read_tar(mini.files[VAL].read_bytes()),
                                               "ILSVRC2012_val_00000008.JPEG": b""})
    with pytest.raises(MalformedDataError, match=r"7 labels for the 8 images"):
        records("validation", val)


@pytest.mark.parametrize(("truth", "where", "problem"), [
    (b"3\n5\n1\nx1\n4\n2\n5\n", "line 4 (ILSVRC2012_val_00000004.JPEG)", "'x1' is not an ILSVRC2012_ID"),
    (b"3\n5\n1\n1\n4\n6\n5\n", "line 6 (ILSVRC2012_val_00000006.JPEG)", "ILSVRC2012_ID 6 is not a leaf synset"),
])
def test_an_unusable_ground_truth_line_is_a_bad_record(mini: Miniature, tmp_path: Path, truth: bytes, where: str,
                                                       problem: str) -> None:
    got = records("validation", with_devkit(mini.files, tmp_path, truth=truth))
    bad = [r for r in got if isinstance(r, BadRecord)]
    assert len(got) == 7 and len(bad) == 1
    assert bad[0].source == GROUND_TRUTH and bad[0].where == where and bad[0].problem.startswith(problem)


def test_a_ground_truth_of_the_wrong_length_is_an_error(mini: Miniature, tmp_path: Path) -> None:
    files = with_devkit(mini.files, tmp_path, truth=b"3\n5\n1\n")
    with pytest.raises(MalformedDataError, match=r"line 4.*3 labels for the 7 images"):
        RECIPE.inputs("validation", files)


@pytest.mark.parametrize(("meta", "match"), [
    (b"<html>sign in</html>", rf"{DEVKIT}:{META}.*byte 0.*not a MAT file"),
    ("no synsets", r"variable 'synsets'.*is missing \(variables found: other\)"),
    ("bad wnid", r"synsets\(2\).WNID.*'dog' is not a WordNet id"),
    ("two ids", r"synsets\(2\).ILSVRC2012_ID.*1 is also n02119789's id"),
    ("no leaves", r"has no leaf synset"),
])
def test_a_malformed_meta_mat_is_named(mini: Miniature, tmp_path: Path, meta: bytes | str, match: str) -> None:
    cases = {
        "no synsets": lambda: _savemat({"other": np.zeros((1, 1))}),
        "bad wnid": lambda: synsets_mat([(1, "n02119789", "kit fox", 0), (2, "dog", "dog", 0)]),
        "two ids": lambda: synsets_mat([(1, "n02119789", "kit fox", 0), (1, "n02110185", "husky", 0)]),
        "no leaves": lambda: synsets_mat([(1, "n02084071", "dog", 2)]),
    }
    data = meta if isinstance(meta, bytes) else cases[meta]()
    with pytest.raises(MalformedDataError, match=match):
        RECIPE.inputs("train", with_devkit(mini.files, tmp_path, meta=data))


def _savemat(variables: dict) -> bytes:
    buffer = io.BytesIO()
    sio.savemat(buffer, variables)
    return buffer.getvalue()


def test_a_devkit_without_meta_mat_is_named(mini: Miniature, tmp_path: Path) -> None:
    members = {k: v for k, v in read_tar(mini.files[DEVKIT].read_bytes()).items() if k != META}
    path = tmp_path / DEVKIT
    path.write_bytes(gzip.compress(tar_bytes(members)))
    with pytest.raises(MalformedDataError, match=rf"{DEVKIT}.*has no member '{META}'"):
        RECIPE.inputs("validation", {**mini.files, DEVKIT: path})


# -- published facts -----------------------------------------------------------------------------------


def test_published_facts() -> None:
    facts = {s.filename: (s.size, s.md5, s.sha256, s.manual) for s in RECIPE.sources}
    assert facts == {
        TRAIN: (147897477120, "1d675b47d978889d74fa0da5fadfb00e",
                "b08200a27a8e34218a0e58fde36b0fe8f73bc377f4acea2d91602057c3ca45bb", True),
        VAL: (6744924160, "29b22e2961454d5413ddabcf34fc5622",
              "c7e06a6c0baccf06d8dbeb6577d71efff84673a5dbdd50633ab44f8ea0456ae0", True),
        DEVKIT: (None, "fa75699e90414af021442c21a62c3abf", None, True),
        TEST: (None, None, None, True),
    }
    for source in RECIPE.sources:
        assert source.urls == (f"https://image-net.org/data/ILSVRC/2012/{source.filename}",
                               f"http://www.image-net.org/challenges/LSVRC/2012/nnoupb/{source.filename}")
    assert "torchvision" in RECIPE.source(TRAIN).checksum_source and "TFDS" in RECIPE.source(VAL).checksum_source
    assert RECIPE.source(TEST).checksum_source == "none published"
    assert [(s.name, s.num_records) for s in RECIPE.splits] == [("train", 1281167), ("validation", 50000),
                                                                  ("test", 100000)]
    assert RECIPE.split_schema("test").names == ("image",) and RECIPE.schema.names == ("image", "label")
    assert RECIPE.channel_order == "BGR" and len(ODD_FILES) == 23


def test_the_label_is_named_by_the_devkit_synset_words(mini: Miniature, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from thresher.recipes._imagenet_miniature import SYNSETS

    want = [words for _, words in sorted((wnid, words) for _, wnid, words, children in SYNSETS if not children)]
    checksums = place(mini, tmp_path)
    manifest = prepare(tmp_path, checksums, format="hdf5", splits=["validation"])
    label = manifest.schema["label"]
    assert label.kind == "class_label" and list(label.names) == want
    from thresher.verify import inspect_text

    assert want[mini.records["validation"][0]["label"]] in inspect_text(tmp_path / "imagenet" / "hdf5")
    common = ["prepare", "imagenet", "--root", str(tmp_path), "--offline", "--checksums", str(checksums),
              "--no-progress", "--format", "hdf5", "--splits", "validation", "--resize", "none"]
    capsys.readouterr()
    assert main(common) == 0  # the names come from the files, and a second run still finds nothing to do
    assert "already prepared, nothing to do" in capsys.readouterr().out
    again = thresher.prepare("imagenet", root=tmp_path, offline=True, checksums=checksums, progress=False,
                             format="hdf5", splits=["validation"])
    assert again.run is not None and again.run.already_done
