"""Each feature kind on its own: validation, exact TensorProto bytes, HDF5 and JSON round trips."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage

from thresher.codecs import TensorProtosCodec, get_codec
from thresher.errors import UnsupportedCodecError
from thresher.features import (
    BoundingBoxes,
    Bytes,
    ClassLabel,
    Feature,
    Image,
    Integer,
    Mask,
    Schema,
    Sequence,
    Tensor,
    Text,
)
from thresher.formats import ShardContext, get_format
from thresher.transforms import ConvertOptions, apply, output_schema

TP: TensorProtosCodec = get_codec("tensorprotos")  # type: ignore[assignment]
BOXES = BoundingBoxes("objects", names=("cat", "dog", "car"), flags=("difficult",))


def box_value(boxes: list[list[float]], labels: list[int], difficult: list[bool]) -> dict[str, np.ndarray]:
    return {"boxes": np.array(boxes, np.float32).reshape(-1, 4), "labels": np.array(labels, np.int64),
            "difficult": np.array(difficult, bool)}


def palette_png(indexes: np.ndarray) -> bytes:
    """A palette PNG written by PIL directly: index i is drawn in colour (i, 255 - i, 7)."""
    img = PILImage.fromarray(indexes, mode="P")
    img.putpalette([c for i in range(256) for c in (i, 255 - i, 7)])
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


# One value per kind and its TensorProtos entry (tag 0a, length, TensorProto), worked out by hand
# from the field numbers and wire types of caffe2.proto: dims 08 (unpacked), data_type 10,
# float_data 1a, int32_data 22, byte_data 2a, string_data 32, double_data 4a, int64_data 52.
EXACT: list[tuple[Feature, Any, str]] = [
    # FLOAT dims [1, 1, 2] = [1.0, -2.5], like caffe2's lmdb_create_example
    (Tensor("x", shape=(1, 1, 2), dtype="float32"), np.array([[[1.0, -2.5]]], np.float32),
     "0a 12 08 01 08 01 08 02 10 01 1a 08 00 00 80 3f 00 00 20 c0"),
    # DOUBLE (13) dims [1] = [1.0]
    (Tensor("x", shape=(1,), dtype="float64"), np.array([1.0]), "0a 0e 08 01 10 0d 4a 08 00 00 00 00 00 00 f0 3f"),
    # INT64 (10) dims [1] = [5]
    (Tensor("x", shape=(1,), dtype="int64"), np.array([5], np.int64), "0a 07 08 01 10 0a 52 01 05"),
    # INT64 with a variable leading dimension: dims [2] = [-1, 300]; -1 is a 10-byte varint
    (Tensor("x", shape=(None,), dtype="int64"), np.array([-1, 300], np.int64),
     "0a 12 08 02 10 0a 52 0c ff ff ff ff ff ff ff ff ff 01 ac 02"),
    # multi-label: INT32 dims [3] = [1, 0, 1]
    (ClassLabel("attrs", names=("a", "b", "c"), multi=True), np.array([1, 0, 1], np.uint8),
     "0a 09 08 03 10 02 22 03 01 00 01"),
    # scalar class label: INT32 dims [1] = [2], as make_image_db writes labels
    (ClassLabel("label", names=("a", "b", "c")), 2, "0a 07 08 01 10 02 22 01 02"),
    # one box (1, 2, 3, 4), label 2, difficult: FLOAT dims [1, 6] = 1, 2, 3, 4, 2, 1
    (BOXES, box_value([[1, 2, 3, 4]], [2], [True]),
     "0a 20 08 01 08 06 10 01 1a 18 00 00 80 3f 00 00 00 40 00 00 40 40 00 00 80 40 00 00 00 40 00 00 80 3f"),
    # raw mask: BYTE dims [2, 2], indexes 0 1 255 2 (255 is VOC's boundary)
    (Mask("seg"), np.array([[0, 1], [255, 2]], np.uint8), "0a 0c 08 02 08 02 10 03 2a 04 00 01 ff 02"),
    # text: STRING dims [1] "hi"
    (Text("t"), "hi", "0a 08 08 01 10 04 32 02 68 69"),
    # bytes: STRING dims [1] 00 ff
    (Bytes("b"), b"\x00\xff", "0a 08 08 01 10 04 32 02 00 ff"),
    # sequence of ints with dims [1]: INT32 dims [2, 1] = [3, 300]
    (Sequence("ids", feature=Integer("ids")), [3, 300], "0a 0b 08 02 08 01 10 02 22 03 03 ac 02"),
    # sequence of text: STRING dims [2, 1], two strings
    (Sequence("words", feature=Text("words")), ["a", "bc"], "0a 0d 08 02 08 01 10 04 32 01 61 32 02 62 63"),
]


def same(a: Any, b: Any) -> bool:
    if isinstance(b, dict):
        return set(a) == set(b) and all(same(a[k], b[k]) for k in b)
    if isinstance(b, list):
        return isinstance(a, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize(("feature", "value", "hex_bytes"), EXACT, ids=lambda x: getattr(x, "kind", None))
def test_tensorprotos_bytes_are_exact_and_round_trip(feature: Feature, value: Any, hex_bytes: str) -> None:
    schema = Schema((feature,))
    record = {feature.name: value}
    encoded = TP.encode(record, schema, "RGB")
    assert encoded.hex(" ") == hex_bytes
    assert TP.encode_reference(record, schema, "RGB") == encoded  # protobuf agrees with the hand-written bytes
    assert same(TP.decode(encoded, schema, "RGB")[feature.name], value)


@pytest.mark.parametrize(("feature", "value", "problem"), [
    (Tensor("x", shape=(2,), dtype="float32"), np.zeros(3, np.float32), "expected a float32 array of shape 2"),
    (Tensor("x", shape=(None, 2), dtype="int64"), np.zeros((1, 2), np.float32), "expected a int64 array"),
    (ClassLabel("c", names=("a", "b")), 2, "out of range 0..1"),
    (ClassLabel("c", names=("a", "b"), multi=True), np.array([1, 2]), "2 values of 0 or 1"),
    (BOXES, box_value([[3, 2, 1, 4]], [0], [False]), "min <= max"),
    (BOXES, box_value([[1, 2, 3, 4]], [3], [False]), "label is outside 0..2"),
    (BOXES, {"boxes": np.zeros((1, 4))}, "expected a dict with keys"),
    (Mask("m"), np.zeros((2, 2, 3), np.uint8), "uint8 H×W array of class indexes"),
    (Mask("m", encoding="png"), b"\xff\xd8\xff", "expected PNG bytes"),
    (Text("t"), b"x", "expected text"),
    (Bytes("b"), "x", "expected bytes"),
    (Sequence("s", feature=Integer("s", maximum=5)), [1, 9], "item 1: value 9 is out of range"),
])
def test_validation_names_what_is_wrong(feature: Feature, value: Any, problem: str) -> None:
    got = feature.problem(value)
    assert got is not None and problem in got
    with pytest.raises(ValueError, match=f"field '{feature.name}'"):
        feature.check_value(value)


def test_manifest_json_round_trips_every_kind() -> None:
    schema = Schema((Image("photo", encoding="jpeg"), Mask("seg", encoding="png", names=("bg", "fg")), BOXES,
                     ClassLabel("attrs", names=("a", "b"), multi=True), Tensor("v", shape=(None, 3), dtype="float64"),
                     Text("t"), Bytes("b"), Sequence("s", feature=ClassLabel("s", names=("x", "y")))))
    assert Schema.from_json(schema.to_json()) == schema
    with pytest.raises(ValueError, match="unknown kind 'video'"):
        Schema.from_json([{"name": "v", "kind": "video"}])


HDF5_SCHEMA = Schema((Image("left", shape=(2, 2, 3)), Image("right", shape=(2, 2, 3)), Mask("seg", shape=(2, 2)),
                      BOXES, ClassLabel("attrs", names=("a", "b", "c"), multi=True),
                      Tensor("v", shape=(None, 2), dtype="float64"), Tensor("n", shape=(), dtype="int64"),
                      Text("t"), Bytes("b"), Sequence("ids", feature=Integer("ids"))))


def hdf5_records() -> list[dict[str, Any]]:
    rng = np.random.default_rng(3)
    return [{"left": rng.integers(0, 256, (2, 2, 3), dtype=np.uint8),
             "right": rng.integers(0, 256, (2, 2, 3), dtype=np.uint8),
             "seg": np.array([[0, 255], [i, 1]], np.uint8),
             "objects": box_value([[0.5, 1, 2, 3.25]] * i, [i % 3] * i, [bool(i % 2)] * i),
             "attrs": np.array([1, i % 2, 0], np.uint8), "v": np.arange(2 * i, dtype=np.float64).reshape(i, 2),
             "n": np.array(2**40 + i, np.int64), "t": f"zwölf {i}", "b": bytes([i, 0, 255]), "ids": list(range(i))}
            for i in range(3)]


@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_hdf5_round_trip_with_two_images_and_every_kind(tmp_path: Path, order: str) -> None:
    import h5py

    path = tmp_path / "s.h5"
    writer = get_format("hdf5").writer(path, ShardContext(HDF5_SCHEMA, order))
    records = hdf5_records()
    for r in records:
        writer.append(b"", r)
    writer.close()
    with h5py.File(path, "r") as f:
        assert sorted(f) == sorted(HDF5_SCHEMA.names)  # two images, two datasets: no "data" collision
        want_left = records[1]["left"][..., ::-1] if order == "BGR" else records[1]["left"]
        assert f["left"][1].transpose(1, 2, 0).tolist() == want_left.tolist()
        want_right = records[1]["right"][..., ::-1] if order == "BGR" else records[1]["right"]
        assert f["right"][1].transpose(1, 2, 0).tolist() == want_right.tolist()  # channel order on every image
        assert f["seg"].dtype == np.uint8 and f["seg"][0].tolist() == [[0, 255], [0, 1]]
    reader = get_format("hdf5").reader(path, ShardContext(HDF5_SCHEMA, order))
    try:
        back = [reader.read(i)[1] for i in range(len(reader))]
        columns = reader.columns(0, 3)
    finally:
        reader.close()
    for got, want in zip(back, records, strict=True):
        assert same(got, {**want, "n": want["n"]})
    assert same(columns["attrs"], np.stack([r["attrs"] for r in records]))


def test_hdf5_refuses_sequences_of_text() -> None:
    from thresher.formats.hdf5_format import check_schema

    with pytest.raises(UnsupportedCodecError, match="field 'w' holds str"):
        check_schema(Schema((Sequence("w", feature=Text("w")),)))


def test_resize_is_nearest_for_masks_and_keeps_the_palette() -> None:
    indexes = np.array([[0, 0, 15, 15], [0, 0, 15, 15], [255, 255, 1, 1], [255, 255, 1, 1]], np.uint8)
    source = Schema((Image("photo", shape=(4, 4, 3)), Mask("seg", encoding="png")))
    options = ConvertOptions(resize=(2, 2))
    target = output_schema(source, options)
    assert target["seg"] == Mask("seg", encoding="png", shape=(2, 2))
    record = {"photo": np.zeros((4, 4, 3), np.uint8), "seg": palette_png(indexes)}
    out = apply(record, source, target, options, "here")
    assert isinstance(out, dict)
    with PILImage.open(io.BytesIO(out["seg"])) as img:
        assert img.mode == "P"  # never converted to RGB or L
        assert np.asarray(img).tolist() == [[0, 15], [255, 1]]  # only indexes that were there
    assert target["seg"].decoded(out["seg"]).tolist() == [[0, 15], [255, 1]]


def test_mask_png_decodes_to_palette_indexes_not_colours() -> None:
    indexes = np.array([[0, 1, 2], [255, 254, 3]], np.uint8)
    got = Mask("seg", encoding="png").decoded(palette_png(indexes))
    assert got.dtype == np.uint8 and got.tolist() == indexes.tolist()


def test_datum_takes_a_class_label_but_not_a_multi_label() -> None:
    datum = get_codec("datum")
    datum.check(Schema((Image("image"), ClassLabel("label", names=("a", "b")))))
    with pytest.raises(UnsupportedCodecError, match="use --codec tensorprotos"):
        datum.check(Schema((Image("image"), ClassLabel("label", names=("a", "b"), multi=True))))


def test_manifests_written_before_feature_classes_still_load() -> None:
    # the schema JSON of an MNIST manifest as the Field dataclass wrote it (every key on every field)
    old = [{"name": "image", "kind": "image", "encoding": "raw", "shape": [28, 28, 1], "dims": [1], "minimum": None,
            "maximum": None, "description": "grey"},
           {"name": "label", "kind": "int", "encoding": "raw", "shape": None, "dims": [], "minimum": 0, "maximum": 9,
            "description": "the digit"}]
    assert Schema.from_json(old) == Schema((Image("image", description="grey", shape=(28, 28, 1)),
                                            Integer("label", description="the digit", dims=(), minimum=0, maximum=9)))
