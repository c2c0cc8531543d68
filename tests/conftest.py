"""Shared fixtures. ``server`` is the loopback HTTP server every end-to-end test downloads from."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e import Mirror, build_mirror
from server import LoopbackServer


def _bypass_proxies_for_loopback() -> None:
    """A proxy set in the environment must not swallow requests to 127.0.0.1."""
    for name in ("NO_PROXY", "no_proxy"):
        current = os.environ.get(name, "")
        if "127.0.0.1" not in current.split(","):
            os.environ[name] = ",".join(x for x in (current, "127.0.0.1", "localhost") if x)


_bypass_proxies_for_loopback()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LoopbackServer]:
    """A LoopbackServer named ``origin`` serving ``tmp_path/www``; see tests/server.py for faults."""
    with LoopbackServer(tmp_path / "www", name="origin") as srv:
        yield srv


@pytest.fixture(scope="session")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Mirror:
    """Every recipe's miniature laid out as ``<root>/<name>/<file>``, with --checksums files."""
    return build_mirror(tmp_path_factory.mktemp("mirror") / "files")


@pytest.fixture(scope="session")
def mirror_server(mirror: Mirror) -> Iterator[LoopbackServer]:
    """The miniatures served over HTTP on 127.0.0.1, as an internal mirror would serve them."""
    with LoopbackServer(mirror.root, name="mirror") as srv:
        yield srv
