"""Everything a user can type: a bad value or path is a one-line error naming it, never a traceback."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
from e2e import Mirror
from reliability_matrix import scenario
from server import LoopbackServer

import thresher
from thresher.cli import main
from thresher.inputs import check_workers, parse_workers
from thresher.transforms import ConvertOptions

THRESHER = [sys.executable, "-m", "thresher.cli"]


def run(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([*THRESHER, *map(str, args)], capture_output=True, text=True, timeout=120)


def one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 1, no traceback, one ``thresher: error:`` line holding every needle."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("thresher: error:")]
    assert len(lines) == 1 and all(n in lines[0] for n in needles), proc.stderr
    return lines[0]


def network(mirror: Mirror, mirror_server: LoopbackServer, name: str) -> list[str]:
    return ["--mirror", mirror_server.url, "--offline", "--checksums", str(mirror.checksums[name]), "--no-progress"]


BAD_VALUES = [
    (["--workers", "0"], "--workers", "not 0"),
    (["--workers", "-3"], "--workers", "not -3"),
    (["--workers", "100000"], "--workers", "not 100000"),
    (["--shard-size", "0"], "--shard-size", "not '0'"),
    (["--shard-size", "infG"], "--shard-size", "not 'infG'"),
    (["--shard-size", "nan"], "--shard-size", "not 'nan'"),
    (["--shard-size", "1e30"], "--shard-size", "not '1e30'"),
    (["--shard-size", "12Q"], "--shard-size", "not '12Q'"),
    (["--resize", "100000x100000"], "--resize", "(100000, 100000)"),
    (["--resize", "0x256"], "--resize", "(0, 256)"),
]


@scenario("16", "a number typed out of range: --workers 0 or -3, --shard-size 0, infG, nan or absurdly large, "
                "--resize 100000x100000",
          "refused before any work with a usage error naming the option and the value; the Python API raises "
          "ValueError with the same message instead of a MemoryError",
          "`thresher prepare` exits 2 with `argument --OPTION: ... not VALUE` and no traceback (an offline run "
          "with nothing to fetch, so the old code's only way to pass was to reject the value first); "
          "ConvertOptions and thresher.prepare raise ValueError")
@pytest.mark.parametrize(("args", "option", "value"), BAD_VALUES, ids=[" ".join(a) for a, _, _ in BAD_VALUES])
def test_out_of_range_numbers_are_usage_errors(args: list[str], option: str, value: str, tmp_path: Path) -> None:
    proc = run("prepare", "mnist", "--root", tmp_path, "--offline", "--no-progress", *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"thresher prepare: error: argument {option}: ") and value in last, proc.stderr
    assert not (tmp_path / "mnist").exists()


def test_python_api_refuses_the_same_values(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"each side from 1 to 8192 pixels, not \(100000, 100000\)"):
        ConvertOptions(resize=(100000, 100000))
    for kwargs, message in (({"workers": 0}, "workers must be a whole number from 1 to"),
                            ({"shard_size": 0}, "shard size must be a whole number of bytes from 1 to")):
        with pytest.raises(ValueError, match=message):
            thresher.prepare("mnist", root=tmp_path, offline=True, progress=False, **kwargs)
    assert not (tmp_path / "mnist").exists()


def test_workers_auto_is_one_per_core_this_process_may_use() -> None:
    """``auto`` follows the CPU affinity (a container's or taskset's limit), not the machine's core count."""
    script = ("import os, sys; from thresher.inputs import parse_workers, check_workers; "
              "os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
              "print(parse_workers('auto'), parse_workers(' AUTO '), check_workers('auto'))")
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this system")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["1", "1", "1"]
    assert check_workers("auto") == len(os.sched_getaffinity(0))
    with pytest.raises(ValueError, match=r"whole number or 'auto', not 'many'"):
        parse_workers("many")
    with pytest.raises(ValueError, match=r"from 1 to 512, or 'auto', not 'all'"):
        check_workers("all")


@scenario("16", "a path of the wrong kind: --root or --download-dir under a file, --checksums naming a "
                "directory, show -o naming a directory",
          "`thresher: error: <path>: <what is wrong>` on one line, exit 1, before any download",
          "each case through the CLI: exit 1, one error line naming the path and the option, no traceback")
def test_paths_of_the_wrong_kind_are_one_line_errors(mirror: Mirror, mirror_server: LoopbackServer,
                                                      tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory\n")
    net = network(mirror, mirror_server, "mnist")

    one_line_error(run("prepare", "mnist", "--root", a_file, *net), f"{a_file}: not a directory", "--root")
    one_line_error(run("download", "mnist", "--root", tmp_path / "r", *net, "--download-dir", a_file / "dl"),
                   f"{a_file}: not a directory", "--download-dir")
    one_line_error(run("prepare", "mnist", "--root", tmp_path / "r", "--mirror", mirror_server.url, "--offline",
                       "--checksums", tmp_path, "--no-progress"),
                   f"{tmp_path}: is a directory", "--checksums")
    assert not (tmp_path / "r" / "mnist" / "downloads").exists()

    assert main(["prepare", "mnist", "--root", str(tmp_path / "r"), "--splits", "test", *net]) == 0
    out = tmp_path / "sheet-dir"
    out.mkdir()
    one_line_error(run("show", tmp_path / "r" / "mnist" / "lmdb" / "test", "-o", out), f"{out}: is a directory", "-o")


def unprivileged() -> list[str]:
    """A command prefix dropping the power to ignore file permissions: root in a new user namespace
    has no capabilities over the host's files, so a 0555 directory refuses it as it would anyone."""
    if os.geteuid() != 0:
        return []
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "--user", "true"], capture_output=True).returncode != 0:
        pytest.skip("running as root without user namespaces: permissions cannot be tested")
    return [unshare, "--user"]


@scenario("16", "a read-only --root or --download-dir",
          "`thresher: error: <path>: permission denied (not writable); --root needs to write there`, exit 1",
          "as a user without write permission (root runs it in a user namespace without capabilities), --root "
          "and --download-dir inside a 0555 directory: one error line naming it, no traceback, nothing created")
def test_read_only_root_and_download_dir_are_one_line_errors(mirror: Mirror, mirror_server: LoopbackServer,
                                                              tmp_path: Path) -> None:
    prefix = unprivileged()
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    net = network(mirror, mirror_server, "mnist")
    try:
        for args, option in ((["prepare", "mnist", "--root", locked / "data"], "--root"),
                             (["download", "mnist", "--download-dir", locked / "dl"], "--download-dir")):
            proc = subprocess.run([*prefix, *THRESHER, *map(str, args), *net], capture_output=True, text=True,
                                  timeout=120)
            one_line_error(proc, f"{locked}: permission denied", option)
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


@scenario("16", "`inspect`, `verify` or `show` of a split the manifest does not hold",
          "`thresher: error: <dir>: no split 'x'; prepared splits: [...]`",
          "after preparing only mnist's train split, each command on .../test exits 1 with that line")
def test_split_not_in_manifest_names_the_prepared_ones(mirror: Mirror, mirror_server: LoopbackServer,
                                                       tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["prepare", "mnist", "--root", str(tmp_path), "--splits", "train",
                 *network(mirror, mirror_server, "mnist")]) == 0
    out_dir = tmp_path / "mnist" / "lmdb"
    capsys.readouterr()
    for command in (["inspect"], ["verify"], ["show", "-o", str(tmp_path / "s.png")]):
        assert main([command[0], str(out_dir / "test"), *command[1:]]) == 1
        err = capsys.readouterr().err
        assert err == f"thresher: error: {out_dir}: no split 'test'; prepared splits: ['train']\n", (command, err)


@scenario("manual", "a manual download with `--checksums FILE` overriding the recipe's values",
          "the one-screen instructions show the size and sha256 from FILE, the values that will be enforced",
          "`thresher download` of a manual recipe whose published values differ from FILE's prints FILE's "
          "size and sha256 and not the recipe's")
def test_manual_screen_shows_the_checksums_that_will_be_enforced(mirror: Mirror, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture) -> None:
    from thresher import registry

    base = registry.get_recipe("cifar10")
    data = mirror.miniatures["cifar10"].files["cifar-10-binary.tar.gz"].read_bytes()
    published = "ab" * 32

    class ManualCifar(type(base)):  # the recipe publishes values for the full-size file
        name = "manualcifar"
        sources = (dataclasses.replace(base.sources[0], manual=True, size=170052171, md5=None, sha256=published),)

    monkeypatch.setitem(registry.all_recipes(), "manualcifar", ManualCifar())
    checksums = tmp_path / "mine.tsv"
    checksums.write_text(f"cifar-10-binary.tar.gz\t{len(data)}\t{hashlib.sha256(data).hexdigest()}\n")
    assert main(["download", "manualcifar", "--root", str(tmp_path), "--checksums", str(checksums)]) == 1
    err = capsys.readouterr().err
    assert "must be downloaded by hand" in err
    assert f"cifar-10-binary.tar.gz  {len(data):,} bytes" in err and hashlib.sha256(data).hexdigest() in err
    assert published not in err and "170,052,171" not in err


@scenario("16", "an HDF5 output moved to another directory (files.txt holds absolute paths for Caffe)",
          "verify passes the data, with a warning that files.txt lists the old place and the command that "
          "fixes it; `thresher relocate DIR` rewrites every split's files.txt",
          "prepare mnist hdf5, move it: verify exits 0 with the WARNING; relocate; verify is clean and h5py "
          "opens every path in the new files.txt")
def test_moved_hdf5_output_verifies_and_relocate_rewrites_files_txt(mirror: Mirror, mirror_server: LoopbackServer,
                                                                     tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    assert main(["prepare", "mnist", "--root", str(tmp_path / "old"), "--format", "hdf5",
                 *network(mirror, mirror_server, "mnist")]) == 0
    moved = tmp_path / "new" / "hdf5"
    moved.parent.mkdir()
    shutil.move(tmp_path / "old" / "mnist" / "hdf5", moved)
    capsys.readouterr()

    assert main(["verify", str(moved)]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and out.rstrip().endswith("OK"), out
    warnings = [line for line in out.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 2 and all(f"thresher relocate {moved}" in w for w in warnings), out
    assert f"{moved / 'train' / 'files.txt'}: lists the shards at their old place {tmp_path / 'old'}" in out

    assert main(["relocate", str(moved)]) == 0
    assert f"rewrote {moved / 'test' / 'files.txt'}" in capsys.readouterr().out
    assert main(["verify", str(moved)]) == 0
    out = capsys.readouterr().out
    assert "WARNING" not in out and "FAIL" not in out, out
    for split in ("train", "test"):
        listed = (moved / split / "files.txt").read_text().splitlines()
        assert listed and all(Path(p).parent == (moved / split).resolve() for p in listed)
        for path in listed:
            with h5py.File(path, "r") as f:
                assert len(f["label"]) > 0
