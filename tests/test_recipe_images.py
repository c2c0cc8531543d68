"""images recipe: your own folder (a Caffe list file or class subfolders) through the CLI and the API.

Folders are written here with PIL and plain text, never with the recipe's helpers; what is read
back is compared with the files' own bytes and with PIL's decoding of them.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from e2e import FORMAT_CODECS, assert_same_records, tree_bytes
from PIL import Image

import thresher
from thresher.cli import main
from thresher.errors import MalformedDataError
from thresher.features import ClassLabel
from thresher.options import ConvertOptions
from thresher.recipe import BadRecord
from thresher.recipes.images import RECIPE


def picture(path: Path, size: tuple[int, int], colour: tuple[int, int, int], fmt: str = "JPEG",
            mode: str = "RGB") -> bytes:
    """A small photo-like file at ``path`` (height, width), written by PIL; returns its bytes."""
    rng = np.random.default_rng(sum(colour) + size[0])
    pixels = np.clip(np.array(colour) + rng.integers(-20, 20, (*size, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def decoded(data: bytes, size: tuple[int, int] | None = None) -> np.ndarray:
    """What a reader must return for ``data``: PIL's RGB decoding, resized bilinearly to (height, width)."""
    with Image.open(io.BytesIO(data)) as img:
        rgb = img.convert("RGB")
        if size is not None:
            rgb = rgb.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)


def prepare_cli(*args: str | Path) -> int:
    return main(["-q", "prepare", "images", "--no-progress", *map(str, args)])


def read_split(path: Path, decode: bool = False) -> list[dict]:
    ds = thresher.open(path, decode=decode)
    try:
        return [ds[i] for i in range(len(ds))]
    finally:
        ds.close()


@pytest.fixture
def classes(tmp_path: Path) -> tuple[Path, list[dict]]:
    """Class folders as a user has them: a PNG named .jpg, a grey JPEG, spaces, a nested folder, hidden files."""
    folder = tmp_path / "pets"
    want = [
        {"image": picture(folder / "cat" / "a.jpg", (20, 30), (200, 40, 40)), "label": 0},
        {"image": picture(folder / "cat" / "b c.jpg", (16, 16), (40, 200, 40), fmt="PNG"), "label": 0},
        {"image": picture(folder / "cat" / "litter" / "k.jpeg", (9, 13), (40, 40, 200)), "label": 0},
        {"image": picture(folder / "dog" / "x.gif", (8, 8), (90, 90, 10), fmt="GIF"), "label": 1},
        {"image": picture(folder / "dog" / "y.JPG", (12, 12), (10, 90, 90), mode="L"), "label": 1},
    ]
    (folder / "empty class").mkdir()
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / "dog" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / "notes.txt").write_text("top-level files are not images of a class\n")
    return folder, want


# -- end to end ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "codec"), FORMAT_CODECS)
def test_class_folders_round_trip_through_the_cli_in_every_format(classes, tmp_path: Path, fmt: str,
                                                                  codec: str | None) -> None:
    folder, want = classes
    root = tmp_path / "out"
    assert prepare_cli("--source", folder, "--root", root, "--format", fmt, *(["--codec", codec] if codec else [])) == 0
    manifest = thresher.Manifest.read(root / "images" / "pets" / fmt)
    label = manifest.schema["label"]
    assert isinstance(label, ClassLabel) and label.names == ("cat", "dog", "empty class")
    got = read_split(root / "images" / "pets" / fmt / "train")
    assert_same_records(got, want, manifest.schema, f"images/{fmt}/{codec}")  # the files' own bytes, sniffed
    assert got[1]["image"].startswith(b"\x89PNG\r\n\x1a\n")  # named .jpg, kept as the PNG it is
    source = manifest.sources[0]
    assert source["folder"] == str(folder) and source["images"] == 5
    assert source["bytes"] == sum(len(w["image"]) for w in want)


@pytest.mark.parametrize(("fmt", "codec"), FORMAT_CODECS)
def test_list_file_as_caffe_writes_it_resized_to_raw_pixels(tmp_path: Path, fmt: str, codec: str | None) -> None:
    folder = tmp_path / "photos"
    a = picture(folder / "holiday 2019" / "beach at noon.jpg", (30, 40), (250, 200, 30))
    b = picture(folder / "b.png", (17, 11), (20, 30, 240), fmt="PNG")
    # Caffe's format: the path is everything before the LAST space; CRLF and a blank line as editors leave them.
    (folder / "val.txt").write_bytes(b"holiday 2019/beach at noon.jpg 7\r\nb.png 0\r\n\r\nb.png 2147483647\n")
    args = ["--source", folder, "--list", "val.txt", "--root", tmp_path / "out", "--format", fmt, "--resize", "12x10"]
    assert prepare_cli(*args, *(["--codec", codec] if codec else [])) == 0
    out = tmp_path / "out" / "images" / "photos-val" / fmt  # default name: folder, then the list's name
    manifest = thresher.Manifest.read(out)
    assert list(manifest.splits) == ["val"] and manifest.channel_order == "BGR"
    got = read_split(out / "val", decode=True)
    assert [r["label"] for r in got] == [7, 0, 2147483647]
    for record, data in zip(got, [a, b, b], strict=True):
        assert np.array_equal(record["image"], decoded(data, (12, 10)))
    assert manifest.sources[0]["list_sha256"] == hashlib.sha256((folder / "val.txt").read_bytes()).hexdigest()


def test_api_takes_the_same_arguments_and_two_workers_write_the_same_bytes(classes, tmp_path: Path) -> None:
    folder, want = classes
    outputs = []
    for workers in (1, 2):
        manifest = thresher.prepare("images", root=tmp_path / str(workers), workers=workers, shard_size=3000,
                                    progress=False, arguments={"source": str(folder), "split_name": "all",
                                                               "name": "mine"})
        assert manifest.directory == tmp_path / str(workers) / "images" / "mine" / "lmdb"
        assert len(manifest.splits["all"].shards) > 1, "want inputs spread over several shards"
        outputs.append(manifest.directory)
    assert tree_bytes(outputs[0]) == tree_bytes(outputs[1])
    assert [r["image"] for r in read_split(outputs[0] / "all")] == [w["image"] for w in want]


def test_a_prepare_makes_no_directory_it_does_not_use(classes, tmp_path: Path) -> None:
    """Your own folder is read where it is: no ``ROOT/images/downloads`` appears, empty or not."""
    folder, _ = classes
    manifest = thresher.prepare("images", root=tmp_path / "out", progress=False, arguments={"source": str(folder)})
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out" / "images").iterdir()) == [
        f"images/{manifest.directory.parent.name}"]
    assert prepare_cli("--source", folder, "--root", tmp_path / "cli") == 0
    assert [p.name for p in (tmp_path / "cli" / "images").iterdir()] == [manifest.directory.parent.name]


def test_dask_tasks_receive_the_folder_and_write_what_a_local_run_writes(classes, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed", reason="the dask extra is not installed")
    folder, _ = classes
    kwargs = {"progress": False, "shard_size": 3000, "arguments": {"source": str(folder)}}
    local = thresher.prepare("images", root=tmp_path / "local", **kwargs)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, worker_dashboard_address=None) as cluster:
        remote = thresher.prepare("images", root=tmp_path / "cluster", executor="dask",
                                  scheduler=cluster.scheduler_address, **kwargs)
    assert tree_bytes(remote.directory) == tree_bytes(local.directory)


def test_a_changed_folder_is_converted_again_and_an_unchanged_one_is_not(classes, tmp_path: Path) -> None:
    folder, want = classes
    run = {"root": tmp_path / "out", "progress": False, "arguments": {"source": str(folder)}}
    thresher.prepare("images", **run)
    assert thresher.prepare("images", **run).run.already_done
    replaced = picture(folder / "dog" / "y.JPG", (14, 12), (10, 90, 90))  # same name, new size
    again = thresher.prepare("images", **run)
    assert not again.run.already_done
    assert read_split(again.directory / "train")[4]["image"] == replaced
    picture(folder / "dog" / "z.jpg", (5, 5), (1, 2, 3))  # one more image
    assert thresher.prepare("images", **run).splits["train"].records == len(want) + 1


def test_two_folders_of_one_name_never_overwrite_each_other(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "photos", tmp_path / "b" / "photos"
    one = picture(first / "cat" / "1.jpg", (8, 8), (200, 0, 0))
    picture(second / "cat" / "1.jpg", (8, 8), (0, 200, 0))
    root = tmp_path / "out"
    thresher.prepare("images", root=root, progress=False, arguments={"source": str(first)})
    with pytest.raises(ValueError, match=r"images/photos was made from .*a/photos; give another --name"):
        thresher.prepare("images", root=root, progress=False, arguments={"source": str(second)})
    thresher.prepare("images", root=root, progress=False, arguments={"source": str(second), "name": "photos-b"})
    assert read_split(root / "images" / "photos" / "lmdb" / "train")[0]["image"] == one
    assert (root / "images" / "photos-b" / "lmdb" / "manifest.json").is_file()
    # Two list files of one folder go to two outputs by default.
    (first / "train.txt").write_text("cat/1.jpg 0\n")
    (first / "val.txt").write_text("cat/1.jpg 1\n")
    for listed in ("train.txt", "val.txt"):
        thresher.prepare("images", root=root, progress=False, arguments={"source": str(first), "list": listed})
    assert read_split(root / "images" / "photos-train" / "lmdb" / "train")[0]["label"] == 0
    assert read_split(root / "images" / "photos-val" / "lmdb" / "val")[0]["label"] == 1


# -- bad input: each kind named ---------------------------------------------------------------------


def bad_records(folder: Path, **arguments: str) -> list[BadRecord]:
    recipe = RECIPE.with_arguments({"source": str(folder), **arguments})
    split = recipe.split_names[0]
    return [item for part in recipe.inputs(split, {}) for item in recipe.read(split, {}, part)
            if isinstance(item, BadRecord)]


@pytest.mark.parametrize(("content", "problem"), [
    (b"", "^is empty, not an image$"),
    (b"just some notes\n", r"is not an image in a format Pillow reads \(it starts with 6a 75 73 74"),
    ("truncated", r"is not a readable JPEG image \(truncated or damaged"),
    ("bad png", r"is not a readable PNG image \(truncated or damaged"),
])
def test_a_file_that_is_not_a_whole_image_is_named(tmp_path: Path, content: bytes | str, problem: str) -> None:
    folder = tmp_path / "shots"
    picture(folder / "ok" / "good.jpg", (10, 10), (1, 2, 3))
    if content == "truncated":
        content = picture(tmp_path / "whole.jpg", (64, 64), (9, 9, 9))[:300]
    elif content == "bad png":
        whole = bytearray(picture(tmp_path / "whole.png", (16, 16), (9, 9, 9), fmt="PNG"))
        content = bytes(whole[:60] + b"\xff" * 20 + whole[80:])  # damaged compressed data
    (folder / "ok" / "bad.jpg").write_bytes(content)  # type: ignore[arg-type]
    [bad] = bad_records(folder)
    assert bad.source == str(folder / "ok" / "bad.jpg")
    assert re.search(problem, bad.problem), bad.problem


def test_a_bad_file_stops_the_cli_with_its_path_and_skip_bad_lists_it(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "shots"
    good = picture(folder / "ok" / "good.jpg", (10, 10), (1, 2, 3))
    (folder / "ok" / "readme.txt").write_text("not a picture")
    assert prepare_cli("--source", folder, "--root", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert f"{folder / 'ok' / 'readme.txt'}" in err and "is not an image" in err and "Traceback" not in err
    assert not list((tmp_path / "out").rglob("manifest.json"))
    assert prepare_cli("--source", folder, "--root", tmp_path / "out", "--skip-bad") == 0
    data = json.loads((tmp_path / "out" / "images" / "shots" / "lmdb" / "manifest.json").read_text())
    assert data["splits"]["train"]["skipped"] == 1 and data["splits"]["train"]["records"] == 1
    assert any("readme.txt" in note and "not an image" in note for note in data["splits"]["train"]["skipped_records"])
    assert read_split(tmp_path / "out" / "images" / "shots" / "lmdb" / "train")[0]["image"] == good


@pytest.mark.parametrize(("line", "problem"), [
    ("nolabel.jpg", "expected 'relative/path label' (the label after the last space)"),
    ("a.jpg\t3", "expected 'relative/path label' (the label after the last space)"),
    (" 3", "expected 'relative/path label' (the label after the last space)"),
    ("a.jpg cat", "label 'cat' is not a whole number"),
    ("a.jpg 2147483648", "label 2147483648 does not fit in 32 bits"),
])
def test_a_malformed_list_line_is_named_by_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    picture(tmp_path / "a.jpg", (6, 6), (5, 5, 5))
    (tmp_path / "list.txt").write_text(f"a.jpg 1\n{line}\n")
    [bad] = bad_records(tmp_path, list="list.txt")
    assert (bad.source, bad.where) == (str(tmp_path / "list.txt"), "line 2") and bad.problem.startswith(problem)


def test_a_listed_file_that_is_missing_is_named_with_the_list(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_text("gone/away.jpg 3\n")
    [bad] = bad_records(tmp_path, list="list.txt")
    assert bad.source == str(tmp_path / "gone" / "away.jpg") and bad.problem == f"no such file, listed in {tmp_path / 'list.txt'}"


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "album.jpg").mkdir()  # listed, but a folder: reading it fails (as root too, unlike a chmod)
    (tmp_path / "list.txt").write_text("album.jpg 0\n")
    [bad] = bad_records(tmp_path, list="list.txt")
    assert bad.source == str(tmp_path / "album.jpg") and bad.problem == "cannot be read: Is a directory"


def test_a_list_file_that_is_not_utf8_is_refused_naming_its_line(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_bytes(b"a.jpg 1\ncaf\xe9.jpg 2\n")
    with pytest.raises(MalformedDataError, match=r"list.txt \(line 2\): is not UTF-8 text"):
        bad_records(tmp_path, list="list.txt")


@pytest.mark.parametrize(("arguments", "message"), [
    ({}, "images needs the folder of images: --source DIR"),
    ({"source": "{tmp}/nowhere"}, "--source {tmp}/nowhere: not a folder"),
    ({"source": "{tmp}", "list": "train.txt"}, "--list train.txt: no such file"),
    ({"source": "{tmp}"}, "no class subfolders; give a list file with --list FILE"),
    ({"source": "{tmp}", "split_name": "a/b"}, "--split-name 'a/b': must be a plain folder name"),
    ({"source": "{tmp}", "name": ".."}, "--name '..': must be a plain folder name"),
    ({"source": "{tmp}", "colour": "red"}, "images does not take colour"),
])
def test_wrong_arguments_get_a_clear_error_before_any_work(tmp_path: Path, arguments: dict, message: str,
                                                           capsys) -> None:
    given = {k: v.format(tmp=tmp_path) for k, v in arguments.items()}
    with pytest.raises(ValueError) as info:
        thresher.prepare("images", root=tmp_path / "out", progress=False, arguments=given)
    assert message.format(tmp=tmp_path) in str(info.value)
    assert not (tmp_path / "out").exists()


def test_other_recipes_take_no_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"mnist does not take source \(it takes no arguments\)"):
        thresher.prepare("mnist", root=tmp_path, arguments={"source": str(tmp_path)})


def test_the_cli_reports_a_missing_source_without_a_traceback(tmp_path: Path, capsys) -> None:
    assert prepare_cli("--root", tmp_path) == 1
    err = capsys.readouterr().err
    assert "thresher: error: images needs the folder of images: --source DIR" in err and "Traceback" not in err


def test_the_miniature_holds_what_it_says(tmp_path: Path) -> None:
    mini = RECIPE.write_miniature(tmp_path)
    recipe = RECIPE.with_arguments(mini.arguments)
    got = [r for part in recipe.inputs("train", {}) for r in recipe.read("train", {}, part)]
    assert [r["label"] for r in got] == [r["label"] for r in mini.records["train"]]
    assert [r["image"] for r in got] == [r["image"] for r in mini.records["train"]]
    assert Image.open(io.BytesIO(got[1]["image"])).format == "PNG"  # "b c.jpg"


def test_resized_hdf5_output_is_pils_decoding_of_each_file(classes, tmp_path: Path) -> None:
    """Resized output decodes each file exactly as PIL does (grey and GIF files become RGB)."""
    folder, want = classes
    manifest = thresher.prepare("images", root=tmp_path, progress=False, format="hdf5",
                                options=ConvertOptions(resize=(6, 5)), arguments={"source": str(folder)})
    got = read_split(manifest.directory / "train", decode=True)
    for record, expected in zip(got, want, strict=True):
        assert np.array_equal(record["image"], decoded(expected["image"], (6, 5)))
