"""A split may hold other fields than its recipe's: a labelled train split beside an unlabelled test split.

The recipe lives here; its source is a JSON file written with json directly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest
from e2e import assert_same_value, serving

import thresher
from thresher.features import ClassLabel, Schema, Tensor
from thresher.manifest import Manifest
from thresher.recipe import Miniature, Recipe, Record, Source, Split

SOURCE = "points.json"
POINT = Tensor("point", shape=(2,), dtype="float32")
LABELLED = Schema((POINT, ClassLabel("side", names=("left", "right"))))
UNLABELLED = Schema((POINT,))
POINTS = {"train": [[-1.5, 0.25], [2.0, 1.0], [0.5, -3.0]], "test": [[4.0, 4.5], [-0.125, 9.0]]}


class SplitSchemas(Recipe):
    name = "splitschemas-test"
    title = "a test split without labels (test only)"
    sources = (Source(SOURCE, ("https://thresher.invalid/points.json",)),)
    splits = (Split("train", 3), Split("test", 2, "no labels", schema=UNLABELLED))
    schema = LABELLED

    def records(self, split: str, files: Mapping[str, Path]) -> Iterator[Record]:
        for x, y in json.loads(files[SOURCE].read_text())[split]:
            point = {"point": np.array([x, y], np.float32)}
            yield point if split == "test" else {**point, "side": int(x > 0)}

    def write_miniature(self, directory: Path) -> Miniature:
        (directory / SOURCE).write_text(json.dumps(POINTS))
        records = {split: [{"point": np.array(p, np.float32), **({"side": int(p[0] > 0)} if split == "train" else {})}
                           for p in points] for split, points in POINTS.items()}
        return Miniature({SOURCE: directory / SOURCE}, records)


RECIPE = SplitSchemas()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Miniature, Path]]:
    with serving(RECIPE, tmp_path_factory.mktemp("splitschemas")) as served:
        yield served


@pytest.mark.parametrize(("fmt", "codec"), [("lmdb", "tensorprotos"), ("minidb", "tensorprotos"), ("hdf5", None)])
def test_each_split_reads_back_with_its_own_fields(served, tmp_path: Path, fmt: str, codec: str | None) -> None:
    url, miniature, checksums = served
    result = thresher.prepare(RECIPE.name, root=tmp_path, format=fmt, codec=codec, mirror=url, offline=True,
                              checksums=checksums, progress=False)
    on_disk = Manifest.read(result.directory)
    assert on_disk.schema.names == ("point", "side")
    assert on_disk.schema_of("test").names == ("point",) and on_disk.schema_of("train").names == ("point", "side")
    for split, want in miniature.records.items():
        with thresher.open(result.directory / split) as ds:
            assert ds.schema.names == tuple(want[0])
            assert len(ds) == len(want)
            for i, record in enumerate(want):
                assert_same_value(ds[i], record, f"{fmt} {split} record {i}")
                assert set(ds[i]) == set(record)


def test_a_later_split_joins_the_same_output(served, tmp_path: Path) -> None:
    """The split schemas are facts of the recipe: preparing one split, then another, keeps the first."""
    url, _, checksums = served
    common = {"root": tmp_path, "format": "hdf5", "mirror": url, "offline": True, "checksums": checksums,
              "progress": False}
    first = thresher.prepare(RECIPE.name, splits=["train"], **common)
    second = thresher.prepare(RECIPE.name, splits=["test"], **common)
    assert first.generation == second.generation and set(second.splits) == {"train", "test"}


def test_info_shows_the_fields_of_a_split_that_differs(served) -> None:
    from thresher.cli import info_text

    text = info_text(RECIPE)
    assert "schema of test:" in text
    assert text.index("schema of test:") > text.index("schema:")


def test_a_manifest_without_split_schemas_keeps_its_bytes(tmp_path: Path) -> None:
    """Recipes whose splits share one schema write no ``split_schemas`` key (their generations stay)."""
    manifest = Manifest(recipe="x", recipe_version="1", format="hdf5", codec=None, channel_order="NONE",
                        layout="CHW", key_format="%08d", options={}, schema=UNLABELLED, sources=[], splits={})
    assert "split_schemas" not in manifest.to_json() and "split_schemas" not in manifest.fingerprint
    manifest.split_schemas = {"test": UNLABELLED}
    assert "split_schemas" in manifest.to_json() and "split_schemas" in manifest.fingerprint

