"""Google Drive as it answers today, played by two loopback hosts: ``uc`` on one redirects to the other.

drive.google.com/uc?export=download&id=... answers 303 to drive.usercontent.google.com/download,
which serves the virus-scan warning form for a large file (absolute action, hidden id, export,
confirm and uuid), the quota page when the file was fetched too often, or redirects a login-only
file to the sign-in page. Pages are written from the structure of the real ones.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from server import DriveConfirm, DropAfter, HtmlPage, LoopbackServer, Redirect, Status

from thresher.acquire import download
from thresher.errors import DownloadError, HtmlInsteadOfDataError
from thresher.fetch import RetryPolicy, fetch_sources
from thresher.recipe import Source
from thresher.recipes.celeba import RECIPE

SIZE = 300_000
FILE_ID = "0B7EVK8r0v71pZjFTYXZWM3FlRnM"


@pytest.fixture
def usercontent(tmp_path: Path) -> Iterator[LoopbackServer]:
    """The host Drive's ``uc`` URLs redirect to (drive.usercontent.google.com)."""
    with LoopbackServer(tmp_path / "usercontent", name="usercontent") as srv:
        yield srv


def policy(attempts: int = 3) -> RetryPolicy:
    return RetryPolicy(attempts=attempts, backoff_base=0.01, backoff_cap=0.05, retry_after_cap=1.0,
                       connect_timeout=2.0, read_timeout=2.0)


def drive(server: LoopbackServer, usercontent: LoopbackServer, page: DriveConfirm | HtmlPage,
          data: bytes | None = None) -> str:
    """Lay out the two hosts; return the ``uc`` URL a recipe would list."""
    server.add_fault("/uc", Redirect(location=f"{usercontent.url}/download?id={FILE_ID}&export=download",
                                     code=303, times=None))
    if data is not None:
        usercontent.put("drive/img_align_celeba.zip", data)
    usercontent.add_fault("/download", page)
    return f"{server.url}/uc?export=download&id={FILE_ID}"


def source(url: str, data: bytes, *, published: bool = True) -> Source:
    facts = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "checksum_source": "test"}
    return Source("img_align_celeba.zip", (url,), **(facts if published else {}))


def fetch(src: Source, tmp_path: Path, attempts: int = 3) -> Path:
    return fetch_sources("celeba", [src], tmp_path / "dl", policy=policy(attempts), progress=False)[src.filename]


def blob() -> bytes:
    return random.Random(7).randbytes(SIZE)


def test_warning_form_on_the_usercontent_host_is_followed_to_the_file(
        server: LoopbackServer, usercontent: LoopbackServer, tmp_path: Path) -> None:
    data = blob()
    url = drive(server, usercontent, DriveConfirm(file="drive/img_align_celeba.zip", style="usercontent",
                                                  times=None), data)
    assert fetch(source(url, data), tmp_path).read_bytes() == data
    first, second = usercontent.hits("/download")
    assert "confirm" not in first.query
    assert f"id={FILE_ID}" in second.query and "confirm=t" in second.query and "uuid=Xy9_tok-3n" in second.query
    assert len(server.hits("/uc")) == 1  # the form's absolute action is used, not the uc URL again


def test_relative_form_action_is_taken_relative_to_the_page_after_the_redirect(
        server: LoopbackServer, usercontent: LoopbackServer, tmp_path: Path) -> None:
    data = blob()
    url = drive(server, usercontent, DriveConfirm(file="drive/img_align_celeba.zip", style="form", times=None),
                data)
    assert fetch(source(url, data), tmp_path).read_bytes() == data
    assert len(usercontent.hits("/download")) == 2 and server.hits("/download") == []


def test_a_cut_download_resumes_with_range_on_the_confirmed_url(
        server: LoopbackServer, usercontent: LoopbackServer, tmp_path: Path) -> None:
    data = blob()
    url = drive(server, usercontent, DriveConfirm(file="drive/img_align_celeba.zip", style="usercontent",
                                                  times=None), data)
    usercontent.add_fault("/drive/img_align_celeba.zip", DropAfter(fraction=0.4))
    assert fetch(source(url, data), tmp_path).read_bytes() == data
    gets = usercontent.hits("/download")
    assert [g.range for g in gets] == [None, None, f"bytes={int(SIZE * 0.4)}-"]
    assert [g.status for g in gets] == [200, 200, 206]
    assert "uuid=" in gets[2].query  # straight back to the file, no second warning page
    assert usercontent.bytes_sent("/download") < 1.1 * SIZE + 10_000


@pytest.mark.parametrize("published", [True, False])
def test_a_later_run_resumes_through_redirect_and_warning_page(
        server: LoopbackServer, usercontent: LoopbackServer, tmp_path: Path, published: bool) -> None:
    """The next run starts again at ``uc``; its Range goes through the 303 and the warning page to the file.

    Without a published checksum only the file's validator makes the kept bytes safe to continue,
    and it must still count for the same ``uc`` URL although the confirmed URL differs.
    """
    data = blob()
    url = drive(server, usercontent, DriveConfirm(file="drive/img_align_celeba.zip", style="usercontent",
                                                  times=None), data)
    usercontent.add_fault("/drive/img_align_celeba.zip", DropAfter(fraction=0.6))
    usercontent.add_fault("/drive/img_align_celeba.zip", Status(503))
    with pytest.raises(DownloadError):
        fetch(source(url, data, published=published), tmp_path, attempts=1)
    cut = int(SIZE * 0.6)
    assert (tmp_path / "dl" / "img_align_celeba.zip.part").stat().st_size == cut
    assert fetch(source(url, data, published=published), tmp_path).read_bytes() == data
    last_page, last = usercontent.hits("/download")[-2:]
    assert last_page.range == f"bytes={cut}-" and last_page.status == 200  # the warning page, whole
    assert last.range == f"bytes={cut}-" and last.status == 206 and "If-Range" in last.headers
    assert server.hits("/uc")[-1].range == f"bytes={cut}-"
    assert usercontent.bytes_sent("/download") < 1.1 * SIZE + 20_000


@pytest.mark.parametrize(
    ("kind", "phrases"),
    [
        # reported as a quota page, with the by-hand download as the way out
        ("drive-quota", ["quota exceeded", "Google Drive - Quota exceeded", "by hand"]),
        # a login-only file: no confirm=t guess at a page that is no warning, the existing clear error
        ("drive-signin", ["login page", "Sign in - Google Accounts"]),
    ],
)
def test_quota_and_sign_in_pages_are_reported_after_one_request(
        server: LoopbackServer, usercontent: LoopbackServer, tmp_path: Path, kind: str, phrases: list[str]) -> None:
    url = drive(server, usercontent, HtmlPage(kind=kind, times=None))
    with pytest.raises(HtmlInsteadOfDataError) as caught:
        fetch(source(url, blob()), tmp_path)
    for phrase in phrases:
        assert phrase in str(caught.value)
    assert len(usercontent.hits("/download")) == 1
    dl = tmp_path / "dl"
    assert not (dl / "img_align_celeba.zip").exists() and not (dl / "img_align_celeba.zip.part").exists()


def test_quota_on_celeba_ends_in_the_by_hand_screen(
        server: LoopbackServer, usercontent: LoopbackServer, tmp_path: Path) -> None:
    """What a user of ``thresher prepare celeba`` reads when Drive refuses: every file, its size and
    checksum, the directory to put it in, and that Drive's quota is why."""
    url = drive(server, usercontent, HtmlPage(kind="drive-quota", times=None))
    recipe = copy.copy(RECIPE)
    recipe.sources = tuple(dataclasses.replace(s, urls=(url,)) for s in RECIPE.sources)  # type: ignore[misc]
    with pytest.raises(HtmlInsteadOfDataError) as caught:
        download(recipe, tmp_path / "dl", progress=False)
    screen = str(caught.value)
    assert "quota" in screen and "in a browser" in screen
    assert f"Put these files in {(tmp_path / 'dl').absolute()}/" in screen
    for s in RECIPE.sources:
        assert f"  {s.filename}  {s.size:,} bytes" in screen and f"sha256 {s.sha256}" in screen
    assert "thresher prepare celeba" in screen
    assert "list_bbox_celeba.txt" not in screen
