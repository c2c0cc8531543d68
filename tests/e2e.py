"""Shared by the end-to-end tests: miniatures on a loopback mirror, and exact record comparison."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from thresher.conversion.progress import PROGRESS_NAME
from thresher.miniature import write_checksums
from thresher.recipe import Miniature, Recipe
from thresher.registry import all_recipes
from thresher.schema import Schema
from thresher.sources.idx import write_idx

# Every format and the codec values it is prepared with (hdf5 stores arrays, no codec).
FORMAT_CODECS = [("lmdb", "datum"), ("lmdb", "tensorprotos"), ("minidb", "datum"), ("minidb", "tensorprotos"),
                 ("hdf5", None)]


@dataclass
class Mirror:
    """Miniatures of every recipe laid out as ``<root>/<name>/<file>``, as ``--mirror`` expects."""

    root: Path
    miniatures: dict[str, Miniature]
    checksums: dict[str, Path]


def build_mirror(root: Path) -> Mirror:
    miniatures, checksums = {}, {}
    for name, recipe in sorted(all_recipes().items()):
        target = root / name
        target.mkdir(parents=True)
        miniatures[name] = recipe.write_miniature(target)
        checksums[name] = write_checksums(miniatures[name].files, root.parent / f"{name}.checksums.tsv")
    return Mirror(root, miniatures, checksums)


def assert_same_records(got: list[dict[str, Any]], want: list[dict[str, Any]], schema: Schema, where: str) -> None:
    """Field by field, exactly: arrays equal in dtype, shape and values; bytes, ints and text equal."""
    assert len(got) == len(want), f"{where}: {len(got)} records read back, {len(want)} written"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert set(g) == set(schema.names), f"{where}[{i}]: fields {sorted(g)}"
        for name in schema.names:
            assert_same_value(g[name], w[name], f"{where}[{i}].{name}")


def assert_same_value(a: Any, b: Any, where: str) -> None:
    """Arrays equal in dtype, shape and values; dicts (boxes) and lists item by item; else equal and same type."""
    if isinstance(b, dict):
        assert isinstance(a, dict) and set(a) == set(b), f"{where}: {a!r:.60}"
        for key in b:
            assert_same_value(a[key], b[key], f"{where}.{key}")
    elif isinstance(b, np.ndarray):
        assert isinstance(a, np.ndarray), f"{where}: {type(a).__name__}"
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
        assert np.array_equal(a, b), f"{where}: values differ"
    else:
        assert type(a) is type(b) and a == b, f"{where}: {a!r:.60} != {b!r:.60}"


def recipe_supports(recipe: Recipe, codec: str | None) -> bool:
    return codec != "datum" or recipe.default_codec == "datum"


def in_generation(out: Path, relative: str) -> Path:
    """``out/<split>/<rest>`` as the manifest and errors name it: inside the split's generation directory."""
    split, rest = relative.split("/", 1)
    return out / os.readlink(out / split) / rest


def tree_bytes(directory: Path) -> dict[str, bytes]:
    """Every output file's bytes, but the lock (the last holder's pid) and the stamps (file times).

    HDF5 list files hold absolute paths, so they are compared relative to the directory.
    Split links are compared by their targets.
    """
    out = {}
    for p in sorted(directory.rglob("*")):
        name = str(p.relative_to(directory))
        if p.is_symlink():
            out[name] = os.readlink(p).encode()
        elif p.is_file() and not p.name.endswith(".lock") and p.name != ".stamps.json":
            out[name] = p.read_bytes().replace(str(directory.resolve()).encode(), b"<root>")
    return out


def write_mnist_mirror(root: Path, train: int, test: int, seed: int = 0) -> dict[str, Any]:
    """MNIST's four IDX files with ``train`` and ``test`` images (a random patch each), as a file:// mirror."""
    rng = np.random.default_rng(seed)
    from thresher.recipes.mnist import FILES

    folder = root / "mnist"
    folder.mkdir(parents=True)
    files = {}
    for (images, labels), count in zip((FILES["train"], FILES["test"]), (train, test), strict=True):
        pixels = np.zeros((count, 28, 28), dtype=np.uint8)  # mostly background, so it compresses like MNIST
        pixels[:, 10:18, 10:18] = rng.integers(0, 256, (count, 8, 8), dtype=np.uint8)
        write_idx(folder / images, pixels)
        write_idx(folder / labels, rng.integers(0, 10, count, dtype=np.uint8))
        files.update({images: folder / images, labels: folder / labels})
    checksums = write_checksums(files, root / "mnist.checksums.tsv")
    return {"mirror": root.as_uri(), "offline": True, "checksums": str(checksums), "progress": False}


def check_interrupted_state(out_dir: Path) -> None:
    """What a kill leaves: every shard under a final name is recorded, progress lists a contiguous run."""
    for split_dir in out_dir.glob("gen-*/*"):
        try:
            recorded = json.loads((split_dir / PROGRESS_NAME).read_text())["shards"]
        except FileNotFoundError:
            recorded = []
        names = [Path(s["path"]).name for s in recorded]
        assert names == [f"shard-{i:05d}" + Path(n).suffix for i, n in enumerate(names)], names
        for shard in split_dir.glob("shard-*"):
            manifest = out_dir / "manifest.json"
            listed = manifest.exists() and shard.name in manifest.read_text()
            assert shard.name in names or listed, f"{shard} is under its final name but was never recorded"


@contextlib.contextmanager
def serving(recipe: Recipe, root: Path) -> Iterator[tuple[str, Miniature, Path]]:
    """A recipe that lives in a test, registered while its miniature is served from 127.0.0.1:
    the mirror URL, the miniature and a --checksums file for it."""
    from server import LoopbackServer

    (root / "files" / recipe.name).mkdir(parents=True)
    miniature = recipe.write_miniature(root / "files" / recipe.name)
    checksums = write_checksums(miniature.files, root / "checksums.tsv")
    all_recipes()[recipe.name] = recipe
    try:
        with LoopbackServer(root / "files") as server:
            yield server.url, miniature, checksums
    finally:
        del all_recipes()[recipe.name]
