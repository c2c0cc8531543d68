"""Early writeback really reaches the kernel (Python's os module has no sync_file_range)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from thresher.writeback import start_writeback


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux-only")
def test_the_kernel_takes_the_request_for_a_file_and_refuses_a_bad_descriptor(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    with open(path, "wb") as f:
        f.write(os.urandom(1 << 20))
        f.flush()
        assert start_writeback(f.fileno())  # a silent no-op would make the final fsync wait again
    read_end, write_end = os.pipe()
    os.close(write_end)
    try:
        assert not start_writeback(read_end)  # a pipe is not a file: ESPIPE, reported as False
    finally:
        os.close(read_end)
    assert path.read_bytes() and path.stat().st_size == 1 << 20
