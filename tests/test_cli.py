"""The command line as a user runs it: real processes, the loopback mirror, real output files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from e2e import Mirror
from PIL import Image
from server import LoopbackServer

from thresher.registry import all_recipes

REPO = Path(__file__).resolve().parents[1]
THRESHER = [sys.executable, "-m", "thresher.cli"]


def run(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*THRESHER, *map(str, args)], capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"thresher {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc




def network(mirror: Mirror, mirror_server: LoopbackServer, name: str) -> list[str]:
    return ["--mirror", mirror_server.url, "--offline", "--checksums", str(mirror.checksums[name]), "--no-progress"]


def test_list_shows_every_recipe_with_splits_sizes_and_manual_flag() -> None:
    out = run("list").stdout
    assert out.splitlines()[0].split() == ["name", "splits", "download", "manual"]
    for recipe in all_recipes().values():
        line = next(line for line in out.splitlines() if line.startswith(recipe.with_variant(None).key + " "))
        if recipe.parameters:  # the user's own files: no counts before they are named
            assert "your own files (--source DIR" in line and " 0" not in line
            continue
        for split in recipe.splits:
            assert f"{split.name} {split.num_records:,}" in line
    assert "unknown size" in next(line for line in out.splitlines() if line.startswith("an4 "))
    assert "11.1 MiB" in next(line for line in out.splitlines() if line.startswith("mnist "))


@pytest.mark.parametrize("name", sorted(all_recipes()))
def test_info_shows_everything_a_user_needs(name: str) -> None:
    recipe = all_recipes()[name]
    out = run("info", name).stdout
    flat = " ".join(out.split())  # long text is wrapped for the terminal
    for text in (recipe.description, recipe.homepage, recipe.license, *recipe.citation.splitlines()):
        assert " ".join(text.split()) in flat
    for split in recipe.splits:
        assert f"{split.name}: {split.num_records:,} records" in out
    for line in recipe.schema.describe():
        assert line in out
    for source in recipe.sources:
        assert source.filename in out and source.urls[0] in out
        if source.sha256:
            assert source.sha256 in out
        else:
            assert "none published" in out
        if source.alternative:  # the other published form a user may have instead (places205's .tar.gz)
            assert f"or, in its place, {source.alternative}" in out


def test_unknown_recipe_is_a_one_line_error() -> None:
    proc = run("info", "imagenet21k", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("thresher: error: no recipe named 'imagenet21k'")
    assert "Traceback" not in proc.stderr


def test_prepare_verify_inspect_show_checksums(mirror: Mirror, mirror_server: LoopbackServer, tmp_path: Path) -> None:
    root = tmp_path / "data"
    proc = run("prepare", "flowers102", "--root", root, "--format", "minidb", "--codec", "tensorprotos",
               *network(mirror, mirror_server, "flowers102"))
    want = {s: len(r) for s, r in mirror.miniatures["flowers102"].records.items()}
    assert f"train: {want['train']} records" in proc.stdout and "prepared in" in proc.stdout
    again = run("prepare", "flowers102", "--root", root, "--format", "minidb", "--codec", "tensorprotos",
                *network(mirror, mirror_server, "flowers102"))
    assert "already prepared, nothing to do" in again.stdout

    out_dir = root / "flowers102" / "minidb"
    verified = run("verify", out_dir).stdout
    assert f"{sum(want.values())} records decoded: OK" in verified

    inspected = run("inspect", out_dir / "test").stdout
    assert "codec tensorprotos" in inspected and "image: image, encoded jpeg" in inspected
    assert f"test: {want['test']} records in 1 shard(s)" in inspected and "[0] image=uint8[" in inspected

    sheet = tmp_path / "grid.png"
    run("show", out_dir / "train", "-o", sheet)
    with Image.open(sheet) as img:
        assert img.width > 0 and img.height > 0

    checksums = run("checksums", "flowers102", "--root", root).stdout
    assert checksums == mirror.checksums["flowers102"].read_text()

    shard = out_dir / os.readlink(out_dir / "test") / "shard-00000.minidb"  # the generation's real path
    shard.write_bytes(shard.read_bytes()[:-3])
    failed = run("verify", out_dir, check=False)
    assert failed.returncode == 1 and f"FAIL {shard}" in failed.stdout


def test_audio_contact_sheet_draws_waveforms(mirror: Mirror, mirror_server: LoopbackServer, tmp_path: Path) -> None:
    run("prepare", "an4", "--root", tmp_path, "--audio-encoding", "flac", *network(mirror, mirror_server, "an4"))
    sheet = tmp_path / "an4.png"
    run("show", tmp_path / "an4" / "lmdb" / "train", "-o", sheet)
    with Image.open(sheet) as img:
        colours = {c for _, c in img.convert("RGB").getcolors(1 << 16) or []}
    assert (0, 0, 128) in colours  # the waveform's navy lines


def test_datum_for_audio_is_a_clear_error(mirror: Mirror, mirror_server: LoopbackServer, tmp_path: Path) -> None:
    proc = run("prepare", "an4", "--root", tmp_path, "--codec", "datum", *network(mirror, mirror_server, "an4"),
               check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "datum holds one image and one integer label" in proc.stderr and "tensorprotos" in proc.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_recipe_target_prepares_into_the_data_root(mirror: Mirror, mirror_server: LoopbackServer,
                                                        tmp_path: Path) -> None:
    args = " ".join(["--root", str(tmp_path), *network(mirror, mirror_server, "mnist")])
    env = {**os.environ, "ARGS": args}
    proc = subprocess.run(["make", "--no-print-directory", "-C", str(REPO), "mnist"], capture_output=True,
                          text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "thresher prepare mnist --workers auto " in proc.stdout  # make targets use every usable core
    assert "mnist (lmdb datum, GRAY) prepared in" in proc.stdout
    assert (tmp_path / "mnist" / "lmdb" / "train" / "shard-00000" / "data.mdb").is_file()


def test_download_fetches_and_verifies_only(mirror: Mirror, mirror_server: LoopbackServer, tmp_path: Path) -> None:
    out = run("download", "cifar10", "--root", tmp_path, *network(mirror, mirror_server, "cifar10")).stdout
    path = tmp_path / "cifar10" / "downloads" / "cifar-10-binary.tar.gz"
    assert f"{path}  {path.stat().st_size:,} bytes" in out
    assert path.read_bytes() == mirror.miniatures["cifar10"].files["cifar-10-binary.tar.gz"].read_bytes()
    assert not (tmp_path / "cifar10" / "lmdb").exists()


def test_demo_prepares_every_recipe_in_every_format_and_draws_sheets(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "thresher.demo", str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in all_recipes():
        for fmt in ("lmdb", "minidb", "hdf5"):  # images: under datasets/images/<name of the folder>/
            assert list((tmp_path / "datasets" / name).glob(f"**/{fmt}/manifest.json"))
        with Image.open(tmp_path / "sheets" / f"{name}-{all_recipes()[name].split_names[0]}.png") as img:
            assert img.width >= 96
    assert proc.stdout.count("verify: OK") == 3 * len(all_recipes())
