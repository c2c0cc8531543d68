"""docs/reliability.md is generated from the tests that prove each row, so it cannot drift."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from reliability_matrix import SCENARIOS, render

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
MODULES = ("test_fetch", "test_fetch_processes", "test_fetch_tls_proxy", "test_archive", "test_reliability",
           "test_executors", "test_cli_input", "test_data_loss", "test_damaged_shards", "test_published_limits",
           "test_kill_fuzz", "test_interrupt")
ISSUE_ROWS = {str(n) for n in range(1, 16)}


def hostile_inputs() -> list[str]:
    archive = importlib.import_module("test_archive")
    server = importlib.import_module("server")
    items = [f"tar member `{member}` ({case.replace('_', ' ')}): refused, naming it ({problem})"
             for case, (_, member, problem) in archive.HOSTILE.items()]
    items += [
        "a tar with more members than the limit; a huge pax header; a member or a whole archive expanding "
        "past its limits (gzip bomb); an absurd compression ratio",
        "truncated tar, tar.gz, tar.bz2 and tar.xz archives, and a tar without its end marker",
        "HTML served instead of data: " + ", ".join(sorted(server.HTML_PAGES)) + " pages",
        "IDX files with a wrong magic number, truncated IDX data, a label out of range, a truncated CIFAR "
        "batch, a corrupt JPEG in the Flowers tar",
        "shards with a flipped byte, a truncated minidb, a missing LMDB shard, a value that does not decode",
    ]
    return items


def test_reliability_doc_matches_the_tests() -> None:
    for name in MODULES:
        importlib.import_module(name)
    missing = ISSUE_ROWS - {s.number for s in SCENARIOS.values()}
    assert not missing, f"no test proves matrix rows {sorted(missing, key=int)}"
    text = render(hostile_inputs())
    if os.environ.get("THRESHER_WRITE_DOCS"):
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(text)
    assert DOC.exists() and DOC.read_text() == text, (
        "docs/reliability.md is out of date; regenerate it with THRESHER_WRITE_DOCS=1 make test"
    )
