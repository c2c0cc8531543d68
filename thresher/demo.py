"""``make demo``: the whole pipeline, offline, on every recipe's miniature served from 127.0.0.1.

Writes each miniature in its real layout under ``<dir>/mirror/<name>/``, serves that folder
over HTTP on loopback, and prepares every recipe in every format through ``--mirror`` and
``--offline`` (so no other host is contacted), then verifies it and draws its contact sheet.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

from thresher.conversion.upfront import prepare
from thresher.formats import FORMATS
from thresher.miniature import write_checksums
from thresher.reader import open as open_split
from thresher.registry import all_recipes
from thresher.show import contact_sheet
from thresher.verify import verify


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """A plain static file server on an ephemeral loopback port; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def run(directory: Path) -> list[Path]:
    mirror_dir = directory / "mirror"
    sheets = []
    checksums, arguments = {}, {}
    for name, recipe in sorted(all_recipes().items()):
        target = mirror_dir / name
        target.mkdir(parents=True, exist_ok=True)
        miniature = recipe.write_miniature(target)
        checksums[name] = write_checksums(miniature.files, directory / f"{name}.checksums.tsv")
        arguments[name] = miniature.arguments  # a recipe that reads your own files: its folder
    with serve(mirror_dir) as url:
        print(f"serving miniatures from {url}")
        for name, recipe in sorted(all_recipes().items()):
            for fmt in FORMATS:
                manifest = prepare(name, root=directory / "datasets", format=fmt, mirror=url, offline=True,
                                 checksums=checksums[name], progress=False, arguments=arguments[name])
                report = verify(manifest.directory)
                print(f"  {manifest.summary()} verify: {'OK' if report.ok else report.problems}")
            split = recipe.split_names[0]
            sheet = directory / "sheets" / f"{name}-{split}.png"
            lmdb = directory / "datasets" / recipe.with_variant(None).with_arguments(arguments[name]).directory / "lmdb"
            sheets.append(contact_sheet(open_split(lmdb / split), sheet))
    print("contact sheets:", *sheets, sep="\n  ")
    return sheets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("directory", type=Path, nargs="?", default=Path("demo"))
    run(parser.parse_args().directory)


if __name__ == "__main__":
    main()
