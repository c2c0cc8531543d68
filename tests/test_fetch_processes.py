"""Downloads in separate processes: the per-file lock, and a disk that fills up mid-download."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

from reliability_matrix import scenario
from server import LoopbackServer, Stall

SCRIPT = textwrap.dedent(
    """
    import json, logging, os, resource, signal, sys
    from pathlib import Path
    from thresher.errors import DiskSpaceError
    from thresher.fetch import RetryPolicy, fetch_sources
    from thresher.recipe import Source

    url, dl, size, sha256, fsize_limit = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    logging.basicConfig(level=logging.INFO, format="%(process)d %(message)s")
    if fsize_limit:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of dying
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit, fsize_limit))
    policy = RetryPolicy(attempts=2, backoff_base=0.01, backoff_cap=0.05, connect_timeout=5, read_timeout=10)
    source = Source("big.bin", (url,), size=size, sha256=sha256)
    try:
        out = fetch_sources("demo", [source], dl, policy=policy, progress=False)
    except DiskSpaceError as e:
        print(json.dumps({"error": "DiskSpaceError", "message": str(e)}))
        sys.exit(3)
    print(json.dumps({"path": str(out["big.bin"])}))
    """
)


def _spawn(url: str, dl: Path, data: bytes, fsize_limit: int = 0) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["NO_PROXY"] = "127.0.0.1,localhost"
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, url, str(dl), str(len(data)), hashlib.sha256(data).hexdigest(),
         str(fsize_limit)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


@scenario('10', 'two processes download the same file at once',
          'one download; both succeed (per-file lock)',
          'one GET on the server; both processes return the verified file; one of them waited on the lock')
def test_two_processes_same_file_one_download(server: LoopbackServer, tmp_path: Path) -> None:
    data = random.Random(7).randbytes(300_000)
    url = server.put("demo/big.bin", data)
    # Slow enough that the second process arrives while the first is still downloading.
    server.add_fault("/demo/big.bin", Stall(after=10_000, seconds=2.0))
    dl = tmp_path / "dl"
    procs = [_spawn(url, dl, data) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert str(dl / "big.bin") in out
    gets = server.hits("/demo/big.bin")
    assert len(gets) == 1, [(g.range, g.status) for g in gets]
    assert (dl / "big.bin").read_bytes() == data
    # The processes really overlapped: one of them waited on the lock while the other downloaded.
    assert any("waiting for" in err and "big.bin.lock" in err for _, err in outs), outs


@scenario('11', 'disk full during a download (RLIMIT_FSIZE in a subprocess)',
          'DiskSpaceError naming the path; nothing under the final name',
          'the error text names the path; no final file; no retry loop')
def test_disk_full_during_download(server: LoopbackServer, tmp_path: Path) -> None:
    data = random.Random(8).randbytes(400_000)
    url = server.put("demo/big.bin", data)
    dl = tmp_path / "dl"
    proc = _spawn(url, dl, data, fsize_limit=150_000)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, (out, err)
    assert "DiskSpaceError" in out
    assert str(dl / "big.bin") in out  # names the file it was writing
    assert not (dl / "big.bin").exists()
    assert len(server.hits("/demo/big.bin")) == 1  # a full disk is not a reason to retry or try mirrors
