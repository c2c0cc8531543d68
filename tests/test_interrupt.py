"""Ctrl-C and a killed main process during ``thresher prepare --workers 2``: prompt, quiet and resumable.

A terminal's Ctrl-C sends SIGINT to every process of the foreground group, workers and fork
server included, so the tests send it the same way: to the process group of a run started in
a session of its own. Every run is a real ``thresher`` command line (tests/slow_prepare.py,
which slows each unit's encoding so the signal can land at a chosen point).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e import Mirror, check_interrupted_state, tree_bytes
from reliability_matrix import scenario
from server import LoopbackServer

import thresher
from thresher.transforms import ConvertOptions

SCRIPT = Path(__file__).with_name("slow_prepare.py")
INTERRUPTED = "thresher: interrupted; run the same command again to resume\n"
EXIT_SECONDS = 3.0  # from the signal to the main process's exit
GONE_SECONDS = 3.0  # from the main process's exit to the last process of its session
DELAY = 0.1  # seconds of encoding per record
WORKING = "both workers encoding"


@dataclass(frozen=True)
class Case:
    name: str
    fmt: str
    shard_size: int
    resize: tuple[int, int] | None
    points: dict[str, tuple[str, float]]  # point -> (cue: a record read, or WORKING; most jitter after it)

    def arguments(self, root: Path, downloads: Path, checksums: Path, workers: int) -> list[str]:
        extra = ["--resize", "x".join(map(str, self.resize))] if self.resize else []
        return ["prepare", self.name, "--root", str(root), "--download-dir", str(downloads), "--offline",
                "--checksums", str(checksums), "--format", self.fmt, "--shard-size", str(self.shard_size),
                "--workers", str(workers), *extra]


CASES = {
    # Resized, so its units go to the workers (records needing only their codec stay in the main process).
    "mnist-hdf5": Case("mnist", "hdf5", 2000, (20, 20), {
        "pool starting": ("train-0", 0.05), "mid-conversion": (WORKING, 0.1), "last shard": ("test-3", 0.04)}),
    "flowers102-lmdb": Case("flowers102", "lmdb", 3000, (24, 20), {
        "pool starting": ("train-0", 0.05), "mid-conversion": (WORKING, 0.1),
        "last shard": ("test-5", 0.04)}),
}
TRIES = 2  # per point


def start(case: Case, root: Path, downloads: Path, checksums: Path, marks: Path | None,
          delay: float, workers: int = 2, **env_extra: str) -> subprocess.Popen:
    env = dict(os.environ, THRESHER_TEST_DELAY=str(delay), **env_extra)
    if marks is not None:
        marks.mkdir(parents=True)
        env["THRESHER_TEST_MARKS"] = str(marks)
    return subprocess.Popen([sys.executable, str(SCRIPT), *case.arguments(root, downloads, checksums, workers)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def session_members(session: int) -> list[str]:
    """Live processes (zombies aside) of ``session``: pid and command line."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended meanwhile
            continue
        state, _ppid, _pgrp, sid = stat.rsplit(")", 1)[1].split()[:4]
        if int(sid) == session and state != "Z":
            members.append(f"{entry.name} {cmdline}")
    return members


def ended(proc: subprocess.Popen, within: float, what: str) -> tuple[str, str]:
    """Wait for the run's main process and then every process of its session; their stdout and stderr."""
    try:
        proc.wait(timeout=within)
    except subprocess.TimeoutExpired:
        left = session_members(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"{what}: still running {within:.0f} s later; processes: {left}") from None
    deadline = time.monotonic() + GONE_SECONDS
    while (left := session_members(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.02)
    if left:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"{what}: processes of the run outlived it by {GONE_SECONDS:.0f} s: {left}")
    return proc.communicate(timeout=GONE_SECONDS)


def wait_for(marks: Path, cue: str, proc: subprocess.Popen) -> None:
    """Until record ``cue`` is read, or for WORKING until two processes other than the main one encode."""
    deadline = time.monotonic() + 30
    while not (len([m for m in marks.glob("encoder-*") if m.name != f"encoder-{proc.pid}"]) >= 2 if cue == WORKING
               else (marks / cue).exists()):
        assert proc.poll() is None, f"the run ended before {cue}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"{cue}: not within 30 s"
        time.sleep(0.002)


@scenario("9", "Ctrl-C (SIGINT to the whole process group, as a terminal sends it) during `prepare --workers 2` "
               "while the workers start, mid-conversion and during the last shard (MNIST resized to HDF5, Flowers to "
               "LMDB)",
          "the run ends within seconds with one line, exit status 130, no traceback from any process, no "
          "process left; the rerun resumes to the bytes of an uninterrupted run",
          "twice, a run interrupted at each point in turn (each resuming the last): exit 130 within 3 s, "
          "stderr exactly the one line, no process of the run's session left 3 s later, every shard under its "
          "final name recorded; then the rerun's files are byte-identical to an uninterrupted run's")
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
@pytest.mark.timeout(60)
def test_ctrl_c_with_workers_ends_quietly_and_resumes(case: str, mirror: Mirror, mirror_server: LoopbackServer,
                                                      tmp_path: Path) -> None:
    c = CASES[case]
    options = ConvertOptions(resize=c.resize)
    reference = thresher.prepare(c.name, root=tmp_path / "reference", format=c.fmt, shard_size=c.shard_size,
                                 options=options, mirror=mirror_server.url, offline=True,
                                 checksums=str(mirror.checksums[c.name]), progress=False)
    assert sum(len(s.shards) for s in reference.splits.values()) >= 4, "the signal should fall between shards"
    expected = tree_bytes(reference.directory)
    downloads, checksums = tmp_path / "reference" / c.name / "downloads", mirror.checksums[c.name]
    jitter = random.Random(case)
    for attempt in range(TRIES):
        root = tmp_path / f"run{attempt}"
        out_dir = root / c.name / c.fmt
        for point, (cue, most) in c.points.items():  # each run resumes what the one before left
            what = f"{case}, Ctrl-C {point} (try {attempt})"
            marks = tmp_path / f"marks{attempt}-{point}"
            proc = start(c, root, downloads, checksums, marks, DELAY)
            wait_for(marks, cue, proc)
            time.sleep(jitter.uniform(0, most))
            os.killpg(proc.pid, signal.SIGINT)
            _, err = ended(proc, EXIT_SECONDS, what)
            assert (proc.returncode, err) == (130, INTERRUPTED), f"{what}: exit {proc.returncode}, stderr:\n{err}"
            assert not (out_dir / "manifest.json").exists(), what
            check_interrupted_state(out_dir)
        rerun = start(c, root, downloads, checksums, None, 0)
        _, err = ended(rerun, 30, f"{case}, rerun (try {attempt})")
        assert rerun.returncode == 0 and not err, f"{case}, rerun (try {attempt}): exit {rerun.returncode}:\n{err}"
        assert tree_bytes(out_dir) == expected, f"{case} (try {attempt}): the rerun's output differs from an " \
                                                "uninterrupted run's"


def download_only(c: Case, mirror: Mirror, mirror_server: LoopbackServer, tmp_path: Path) -> Path:
    """The case's sources, fetched once from the loopback mirror: the runs under test only convert."""
    from thresher.acquire import download
    from thresher.registry import get_recipe

    downloads = tmp_path / "downloads"
    download(get_recipe(c.name), downloads, mirror=mirror_server.url, offline=True,
             checksums=Path(mirror.checksums[c.name]), progress=False)
    return downloads


@scenario("9", "the main process killed (SIGKILL) during `prepare --workers 2`",
          "its workers and the fork server notice and exit quietly within seconds instead of lingering",
          "no process of the run's session is left 3 s after the kill, and nothing was printed on stderr")
@pytest.mark.timeout(60)
def test_workers_of_a_killed_run_exit_quietly(mirror: Mirror, mirror_server: LoopbackServer, tmp_path: Path) -> None:
    c = CASES["flowers102-lmdb"]
    downloads = download_only(c, mirror, mirror_server, tmp_path)
    proc = start(c, tmp_path / "run", downloads, mirror.checksums[c.name], tmp_path / "marks", 0.2)
    wait_for(tmp_path / "marks", WORKING, proc)
    assert len(session_members(proc.pid)) >= 4, "main, fork server and two workers should be running"
    os.kill(proc.pid, signal.SIGKILL)
    _, err = ended(proc, EXIT_SECONDS, "killed run")
    assert err == ""


@scenario("9", "a Ctrl-C that Python swallows: KeyboardInterrupt raised inside a `__del__` or weakref callback, "
               "which Python only reports as 'Exception ignored' (seen once in twelve Ctrl-Cs with `--workers 2`)",
          "the run still stops, before the next unit, with the one line and status 130",
          "a unit's encoding sends SIGINT from a `__del__`; exit 130, stderr exactly the one line, no manifest")
@pytest.mark.timeout(60)
def test_a_swallowed_ctrl_c_still_ends_the_run(mirror: Mirror, mirror_server: LoopbackServer, tmp_path: Path) -> None:
    c = CASES["mnist-hdf5"]
    downloads = download_only(c, mirror, mirror_server, tmp_path)
    # One process, so that the unit is encoded where the Ctrl-C matters (workers ignore it).
    proc = start(c, tmp_path / "run", downloads, mirror.checksums[c.name], None, 0, workers=1,
                 THRESHER_TEST_SWALLOWED_AT="2")
    _, err = ended(proc, 30, "swallowed Ctrl-C")
    assert (proc.returncode, err) == (130, INTERRUPTED), f"exit {proc.returncode}, stderr:\n{err}"
    assert not (tmp_path / "run" / c.name / c.fmt / "manifest.json").exists()
