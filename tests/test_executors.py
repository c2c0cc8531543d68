"""The ordered worker pool: results in input order, and a dead worker is an error, not a hang."""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from reliability_matrix import scenario

from thresher.conversion.executors import PIPE_BYTES, OrderedPool
from thresher.conversion.heap import keep_freed_memory
from thresher.errors import WorkerDied

POISON = 40  # far enough in that a worker, not the main process helping at the start, gets it


def slow_square(item: tuple[int, int | None]) -> int:
    """index², slowly; at POISON, kills the worker computing it (never the main process, ``main_pid``)."""
    index, main_pid = item
    time.sleep(0.01)
    if index == POISON and main_pid is not None and os.getpid() != main_pid:
        os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would
    return index * index


def test_results_come_back_in_input_order() -> None:
    items: list[tuple[int, int | None]] = [(i, None) for i in range(60)]
    with OrderedPool(slow_square, 2) as pool:
        assert list(pool.map(items)) == [i * i for i, _ in items]
        assert list(pool.map(items[:5])) == [0, 1, 4, 9, 16]  # the same pool serves a second split


@scenario("9", "an encoding worker killed mid-conversion (`--workers 2`; the out-of-memory killer's SIGKILL)",
          "a clear error within seconds, never a hang (multiprocessing.Pool silently loses that worker's unit)",
          "WorkerDied saying a rerun resumes; results before it came back in order; under 60 s")
@pytest.mark.timeout(60)
def test_a_killed_worker_raises_instead_of_waiting_forever() -> None:
    items: list[tuple[int, int | None]] = [(i, os.getpid()) for i in range(80)]
    pool = OrderedPool(slow_square, 2)
    got: list[int] = []
    with pytest.raises(WorkerDied, match="ended mid-conversion.*running the same command again resumes"):
        for value in pool.map(items):
            got.append(value)
    pool.terminate()
    assert got == [i * i for i in range(len(got))] and len(got) <= POISON


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning")
def test_workers_can_keep_their_heap_on_glibc() -> None:
    if not os.confstr("CS_GNU_LIBC_VERSION"):
        pytest.skip("not glibc")
    # A silent no-op would bring back ~400,000 page faults per thousand photos in each worker.
    assert keep_freed_memory()


@pytest.mark.skipif(not hasattr(fcntl, "F_GETPIPE_SZ"), reason="pipe sizes are a Linux feature")
def test_result_pipes_hold_a_whole_unit() -> None:
    if int(Path("/proc/sys/fs/pipe-max-size").read_text()) < PIPE_BYTES:
        pytest.skip("this system caps pipes below 1 MiB")
    with OrderedPool(slow_square, 2) as pool:
        assert list(pool.map([(i, None) for i in range(12)])) == [i * i for i in range(12)]
        assert pool.pool is not None
        if pool.starting is not None:  # the main process may have encoded all twelve before the workers ran
            pool.starting.result()
        pipes = pool.pool.connections()
        assert len(pipes) == 4  # a task and a result pipe per worker
        for pipe in pipes:
            assert fcntl.fcntl(pipe.fileno(), fcntl.F_GETPIPE_SZ) >= PIPE_BYTES


CHILDREN_AFTER_PREPARE = """
import glob, json, sys
import thresher
from e2e import write_mnist_mirror

def children():
    found = []
    for path in glob.glob("/proc/self/task/*/children"):
        found += open(path).read().split()
    return found

if __name__ == "__main__":
    root = sys.argv[1]
    kwargs = write_mnist_mirror(__import__("pathlib").Path(root) / "mirror", train=600, test=100)
    plain = thresher.prepare("mnist", root=root + "/plain", workers=2, **kwargs)
    after_plain = children()
    resized = thresher.prepare("mnist", root=root + "/resized", workers=2,
                               options=thresher.ConvertOptions(resize=(20, 20)), **kwargs)
    print(json.dumps({"after_plain": after_plain, "after_resized": children()}))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads a process's children from /proc")
def test_workers_start_only_for_work_worth_shipping(tmp_path: Path) -> None:
    """MNIST as published needs only its codec: shipping its units made 2 workers slower than one
    (docs/performance.md), so nothing starts; resized, the units go to worker processes."""
    import json
    import subprocess

    script = tmp_path / "children.py"
    script.write_text(CHILDREN_AFTER_PREPARE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["after_plain"] == []  # no fork server, no resource tracker, no worker
    assert seen["after_resized"]  # the fork server (and the resource tracker) outlive the call


UNGUARDED = """
import sys
import thresher

options = thresher.ConvertOptions(resize=(256, 256), image_encoding="jpeg")
thresher.prepare("mnist", root=sys.argv[1], workers=2, options=options,
                 **{kwargs!r})  # at the top level: every worker runs this line as it imports the script
"""


@scenario("16", "`thresher.prepare(..., workers=2)` at the top level of a script, without "
                '`if __name__ == "__main__":`',
          "a clear error naming the script and the fix; never a hang (each worker, importing the script, "
          "started a prepare of its own that waited on the main run's lock) nor a blame on the out-of-memory killer",
          "the script exits 1 within 100 s; a worker's UnguardedScriptError names the script and the guard; the "
          "main process's WorkerDied says a worker ended as it started and names the guard (the old code hung)")
@pytest.mark.timeout(120)
def test_a_script_without_a_main_guard_gets_told_so(tmp_path: Path) -> None:
    """Workers import the script that started them; a top-level prepare there made each worker
    start a prepare of its own, which waited forever on the main run's lock."""
    import subprocess

    from e2e import write_mnist_mirror

    script = tmp_path / "unguarded.py"
    # Seconds of encoding, so that the workers get some: the main process encodes while they start.
    script.write_text(UNGUARDED.format(kwargs=write_mnist_mirror(tmp_path / "mirror", train=6000, test=100)))
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=100, check=False)
    assert proc.returncode == 1
    guard = 'put the call under `if __name__ == "__main__":`'
    assert f"UnguardedScriptError: {script}: thresher.prepare ran while a worker process imported this script" \
        in proc.stderr and guard in proc.stderr  # from a worker, on its stderr
    last = proc.stderr.strip().splitlines()[-1]  # the main process's own error
    assert last.startswith("thresher.errors.WorkerDied: an encoding worker process ended as it started"), last
    assert 'keep thresher.prepare(...) under `if __name__ == "__main__":`' in last
    assert "out-of-memory" not in last and "RuntimeError" not in proc.stderr
