"""Iris recipe: real lines decode as written, the miniature converts exactly, bad lines are named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from e2e import Mirror
from PIL import Image as PILImage
from server import LoopbackServer

import thresher
from thresher.conversion.convert import validate
from thresher.errors import MalformedDataError
from thresher.recipe import BadRecord, Miniature
from thresher.recipes.iris import DATA, RECIPE

# The first two lines, lines 35 and 38 (kept as published, not as iris.names corrects them) and
# the last line of UCI's iris.data, then the blank line it ends with.
REAL = (b"5.1,3.5,1.4,0.2,Iris-setosa\n4.9,3.0,1.4,0.2,Iris-setosa\n4.9,3.1,1.5,0.1,Iris-setosa\n"
        b"4.9,3.1,1.5,0.1,Iris-setosa\n7.0,3.2,4.7,1.4,Iris-versicolor\n5.9,3.0,5.1,1.8,Iris-virginica\n\n")


@pytest.fixture
def mini(tmp_path: Path) -> Miniature:
    return RECIPE.write_miniature(tmp_path)


def read(tmp_path: Path, data: bytes) -> list:
    path = tmp_path / "given" / DATA
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    files = {DATA: path}
    got = list(RECIPE.records("train", files))
    (part,) = RECIPE.inputs("train", files)
    assert part.records == len(got)  # the count a shard task relies on, BadRecords included
    return got


def test_real_lines_decode_to_float32_vectors_and_species(tmp_path: Path) -> None:
    got = read(tmp_path, REAL)
    assert len(got) == 6
    want = [([5.1, 3.5, 1.4, 0.2], 0), ([4.9, 3.0, 1.4, 0.2], 0), ([4.9, 3.1, 1.5, 0.1], 0),
            ([4.9, 3.1, 1.5, 0.1], 0), ([7.0, 3.2, 4.7, 1.4], 1), ([5.9, 3.0, 5.1, 1.8], 2)]
    for record, (features, label) in zip(got, want, strict=True):
        assert record["features"].dtype == np.float32 and record["features"].shape == (4,)
        assert record["features"].tolist() == np.array(features, np.float32).tolist()
        assert type(record["label"]) is int and record["label"] == label
        assert validate(dict(record), RECIPE.schema, "iris") is None
    assert RECIPE.schema["label"].names == ("Iris-setosa", "Iris-versicolor", "Iris-virginica")


def test_miniature_records_match_exactly(mini: Miniature) -> None:
    got = list(RECIPE.records("train", mini.files))
    want = mini.records["train"]
    assert len(got) == len(want) == 9
    for record, expected in zip(got, want, strict=True):
        assert record["features"].tobytes() == expected["features"].tobytes() and record["label"] == expected["label"]
    assert sorted(r["label"] for r in want) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_miniature_is_written_as_uci_writes_iris_data(mini: Miniature) -> None:
    text = mini.files[DATA].read_bytes()
    assert text.endswith(b"\n\n") and b"\r" not in text
    lines = text.decode("ascii").split("\n")[:-2]
    assert len(lines) == 9 and lines[0] == "5.1,3.5,1.4,0.2,Iris-setosa"
    for line in lines:
        *numbers, species = line.split(",")
        assert len(numbers) == 4 and all(len(n) == 3 and n[1] == "." for n in numbers)
        assert species.startswith("Iris-")


def test_published_metadata() -> None:
    (source,) = RECIPE.sources
    assert source.filename == "iris.data"
    assert source.urls == ("https://archive.ics.uci.edu/ml/machine-learning-databases/iris/iris.data",)
    assert (source.size, source.md5) == (4551, None)
    assert source.sha256 == "6f608b71a7317216319b4d27b4d9bc84e6abd734eda7872b71a458569e2656c0"
    assert "TFDS" in source.checksum_source and not source.manual
    assert [(s.name, s.num_records) for s in RECIPE.splits] == [("train", 150)]
    assert "no split" in RECIPE.splits[0].description and "no split" in RECIPE.description
    assert "35" in RECIPE.description and "38" in RECIPE.description  # the erratum is stated
    features, label = RECIPE.schema
    assert (features.kind, features.shape, features.dtype) == ("tensor", (4,), "float32")
    assert (label.kind, label.name) == ("class_label", "label")
    assert RECIPE.default_codec == "tensorprotos"
    assert "Fisher" in RECIPE.citation and RECIPE.citation.count("{") == RECIPE.citation.count("}")
    assert RECIPE.homepage.startswith("https://archive.ics.uci.edu/")


@pytest.mark.parametrize(("line", "where", "problem"), [
    (b"5.1,3.5,1.4,O.2,Iris-setosa", "line 2, column 4 (petal_width)", "'O.2' is not a number"),
    (b"5.1,3.5,1.4,Iris-setosa", "line 2", "has 4 columns, expected 5"),
    (b"5.1,3.5,1.4,0.2,Iris-germanica", "line 2, column 5 (class)", "'Iris-germanica' is not one of Iris-setosa"),
])
def test_a_bad_line_is_a_bad_record_naming_file_line_and_column(tmp_path: Path, line: bytes, where: str,
                                                                 problem: str) -> None:
    got = read(tmp_path, b"4.9,3.0,1.4,0.2,Iris-setosa\n" + line + b"\n7.0,3.2,4.7,1.4,Iris-versicolor\n\n")
    assert len(got) == 3 and got[2]["label"] == 1
    bad = got[1]
    assert isinstance(bad, BadRecord) and bad.source == DATA and bad.where == where
    assert bad.problem.startswith(problem)


def test_data_after_a_blank_line_is_malformed(tmp_path: Path) -> None:
    with pytest.raises(MalformedDataError, match=r"iris.data \(line 3\): data after the blank line 2"):
        read(tmp_path, b"4.9,3.0,1.4,0.2,Iris-setosa\n\n7.0,3.2,4.7,1.4,Iris-versicolor\n")


def test_bytes_that_are_not_text_are_malformed(tmp_path: Path) -> None:
    with pytest.raises(MalformedDataError, match=r"iris.data \(line 1, byte 1\): is not utf-8 text"):
        read(tmp_path, b"\x1f\x8b\x08\x00compressed")


def test_locate_names_the_data_line() -> None:
    assert RECIPE.locate("train", 34) == "iris.data data line 35"


def test_show_draws_a_line_of_values_per_flower_and_inspect_names_the_species(
        mirror: Mirror, mirror_server: LoopbackServer, tmp_path: Path) -> None:
    from thresher.show import TEXT_LINE, contact_sheet
    from thresher.verify import inspect_text

    result = thresher.prepare("iris", root=tmp_path, mirror=mirror_server.url, offline=True,
                              checksums=mirror.checksums["iris"], progress=False, format="hdf5")
    ds = thresher.open(result.directory / "train")
    try:
        sheet = contact_sheet(ds, tmp_path / "iris.png")
    finally:
        ds.close()
    with PILImage.open(sheet) as img:
        pixels = np.asarray(img.convert("L"))
    assert pixels.shape == (9 * TEXT_LINE[1], TEXT_LINE[0])
    for line in range(9):  # every record's line has text on it
        assert (pixels[line * TEXT_LINE[1]:(line + 1) * TEXT_LINE[1]] < 128).any()
    text = inspect_text(result.directory)
    assert "label: class_label, 3 classes: Iris-setosa, Iris-versicolor, Iris-virginica" in text
    assert "features: tensor, float32, 4" in text
