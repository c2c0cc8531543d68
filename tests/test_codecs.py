"""Codecs: byte-exact against hand-checked hex examples (protoc --encode), fast path == protobuf path, round trips."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from thresher.codecs import CODECS, get_codec
from thresher.codecs.base import varint
from thresher.codecs.messages import DataType, Datum, TensorProto, TensorProtos
from thresher.codecs.tensorprotos import pack_varints, unpack_varints
from thresher.errors import CorruptShardError, UnsupportedCodecError
from thresher.schema import Field, Schema

DATUM = get_codec("datum")
TP = get_codec("tensorprotos")


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def image_schema(shape=None, dims=(1,), encoding="raw") -> Schema:
    return Schema((Field("image", "image", encoding=encoding, shape=shape), Field("label", "int", dims=dims)))


AN4 = Schema(
    (
        Field("audio", "audio"),
        Field("sample_rate", "int"),
        Field("transcript", "str"),
        Field("speaker", "str"),
    )
)
A_IMAGE = np.array([0, 1, 2, 3], np.uint8).reshape(2, 2, 1)


def assert_records_equal(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key in a:
        if isinstance(a[key], np.ndarray):
            assert isinstance(b[key], np.ndarray) and a[key].dtype == b[key].dtype
            np.testing.assert_array_equal(a[key], b[key])
        else:
            assert type(a[key]) is type(b[key]) and a[key] == b[key]


# --------------------------------------------------------------------------- registry


def test_get_codec_names_and_unknown():
    assert CODECS == ("datum", "tensorprotos")
    assert get_codec("datum").name == "datum" and get_codec("tensorprotos").name == "tensorprotos"
    with pytest.raises(ValueError, match="datum, tensorprotos"):
        get_codec("hdf5")


def test_codecs_pickle_to_the_shared_instance():
    assert pickle.loads(pickle.dumps(DATUM)) is DATUM
    assert pickle.loads(pickle.dumps(TP)) is TP


# --------------------------------------------------------------------------- messages


def test_message_descriptors_follow_the_protos():
    datum = Datum.DESCRIPTOR.fields_by_name
    assert [f.number for f in Datum.DESCRIPTOR.fields] == [1, 2, 3, 4, 5, 6, 7]
    assert not datum["float_data"].is_packed
    assert datum["encoded"].default_value is False
    tensor = TensorProto.DESCRIPTOR.fields_by_name
    assert not tensor["dims"].is_packed
    for name in ("float_data", "int32_data", "double_data", "int64_data"):
        assert tensor[name].is_packed, name
    assert tensor["data_type"].default_value == DataType.FLOAT
    segment = TensorProto.Segment(begin=1)
    assert not segment.IsInitialized()  # begin and end are required
    segment.end = 2
    assert segment.IsInitialized() and segment.SerializeToString() == h("08 01 10 02")
    assert {f.name: f.number for f in TensorProto.DESCRIPTOR.fields} == {
        "dims": 1, "data_type": 2, "float_data": 3, "int32_data": 4, "byte_data": 5, "string_data": 6,
        "name": 7, "device_detail": 8, "double_data": 9, "int64_data": 10, "segment": 11,
    }  # fmt: skip
    enum = TensorProto.DESCRIPTOR.enum_types_by_name["DataType"]
    assert {v.name: v.number for v in enum.values} == {
        "UNDEFINED": 0, "FLOAT": 1, "INT32": 2, "BYTE": 3, "STRING": 4, "BOOL": 5, "UINT8": 6, "INT8": 7,
        "UINT16": 8, "INT16": 9, "INT64": 10, "FLOAT16": 12, "DOUBLE": 13,
    }  # fmt: skip
    assert TensorProtos.DESCRIPTOR.fields_by_name["protos"].number == 1


def test_message_bytes_match_formats_examples():
    float_datum = Datum(channels=1, height=1, width=2, label=3)
    float_datum.float_data.extend([1.0, -2.5])
    assert float_datum.SerializeToString() == h("08 01 10 01 18 02 28 03 35 00 00 80 3f 35 00 00 20 c0")
    packed = Datum.FromString(h("08 01 32 08 00 00 80 3f 00 00 20 c0"))
    assert packed.channels == 1 and list(packed.float_data) == [1.0, -2.5]
    image = TensorProto(dims=[2, 2, 1], data_type=DataType.BYTE, byte_data=h("00 01 02 03"))
    assert image.SerializeToString() == h("08 02 08 02 08 01 10 03 2a 04 00 01 02 03")
    assert TensorProto(data_type=DataType.INT32, int32_data=[7]).SerializeToString() == h("10 02 22 01 07")
    assert TensorProto(dims=[1], data_type=2, int32_data=[7]).SerializeToString() == h("08 01 10 02 22 01 07")
    assert TensorProto(data_type=2, int32_data=[1, 300]).SerializeToString() == h("10 02 22 03 01 ac 02")
    assert TensorProto(data_type=DataType.INT64, int64_data=[5]).SerializeToString() == h("10 0a 52 01 05")
    assert TensorProto(data_type=1, float_data=[7.0]).SerializeToString() == h("10 01 1a 04 00 00 e0 40")
    assert TensorProto(data_type=3, byte_data=b"").SerializeToString() == h("10 03 2a 00")


# --------------------------------------------------------------------------- datum, hex examples


@pytest.mark.parametrize("path", ["encode", "encode_reference"])
def test_datum_a_with_explicit_encoded_false(path):
    value = getattr(DATUM, path)({"image": A_IMAGE, "label": 7}, image_schema((2, 2, 1)), "GRAY")
    assert value == h("08 01 10 02 18 02 22 04 00 01 02 03 28 07 38 00")
    assert len(value) == 16


@pytest.mark.parametrize("path", ["encode", "encode_reference"])
def test_datum_label_zero_is_still_written(path):
    value = getattr(DATUM, path)({"image": A_IMAGE, "label": 0}, image_schema(), "RGB")
    assert value == h("08 01 10 02 18 02 22 04 00 01 02 03 28 00 38 00")


def test_datum_a_without_encoded_decodes_as_raw_like_caffe():
    schema = image_schema((2, 2, 1))
    for _ in range(2):  # second time the value meets a warm fast-path cache
        record = DATUM.decode(h("08 01 10 02 18 02 22 04 00 01 02 03 28 07"), schema, "GRAY")
        assert_records_equal(record, {"image": A_IMAGE, "label": 7})


@pytest.mark.parametrize("path", ["encode", "encode_reference"])
def test_datum_encoded(path):
    schema = image_schema(encoding="jpeg")
    value = getattr(DATUM, path)({"image": h("ff d8 ff d9"), "label": 5}, schema, "RGB")
    assert value == h("22 04 ff d8 ff d9 28 05 38 01")
    assert DATUM.decode(value, schema, "RGB") == {"image": h("ff d8 ff d9"), "label": 5}


@pytest.mark.parametrize("path", ["encode", "encode_reference"])
def test_datum_three_channels_negative_label(path):
    planes = h("01 02 03 04 05 06")
    rgb = np.frombuffer(planes, np.uint8).reshape(3, 1, 2).transpose(1, 2, 0).copy()  # CHW -> HWC
    expected = h("08 03 10 01 18 02 22 06 01 02 03 04 05 06 28 ff ff ff ff ff ff ff ff ff 01 38 00")
    assert getattr(DATUM, path)({"image": rgb, "label": -1}, image_schema((1, 2, 3)), "RGB") == expected
    # The same stored bytes with BGR order come from the record whose R and B planes are swapped.
    bgr_record = {"image": rgb[..., ::-1].copy(), "label": -1}
    assert getattr(DATUM, path)(bgr_record, image_schema(), "BGR") == expected
    assert_records_equal(DATUM.decode(expected, image_schema((1, 2, 3)), "BGR"), bgr_record)


def test_datum_mnist_and_cifar_layout():
    rng = np.random.default_rng(1)
    mnist = rng.integers(0, 256, (28, 28, 1), dtype=np.uint8)
    value = DATUM.encode({"image": mnist, "label": 9}, image_schema((28, 28, 1)), "GRAY")
    assert len(value) == 797
    assert value[:9] == h("08 01 10 1c 18 1c 22 90 06")
    assert value[9:793] == mnist.tobytes() and value[793:] == h("28 09 38 00")

    cifar = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    value = DATUM.encode({"image": cifar, "label": 3}, image_schema((32, 32, 3)), "RGB")
    assert len(value) == 3085
    assert value[:9] == h("08 03 10 20 18 20 22 80 18") and value[-4:] == h("28 03 38 00")
    assert value[9:3081] == cifar.transpose(2, 0, 1).tobytes()  # planar R, G, B like convert_cifar_data


def test_datum_packed_float_data_is_refused_clearly():
    for value in (h("08 01 32 08 00 00 80 3f 00 00 20 c0"), h("08 01 10 01 18 02 28 03 35 00 00 80 3f 35 00 00 20 c0")):
        with pytest.raises(CorruptShardError, match="float_data"):
            DATUM.decode(value, image_schema(), "RGB")


def test_datum_data_size_mismatch():
    with pytest.raises(CorruptShardError, match=r"3 bytes .*784|3 bytes"):
        DATUM.decode(h("08 01 10 1c 18 1c 22 03 00 01 02 28 07 38 00"), image_schema(), "GRAY")
    with pytest.raises(CorruptShardError, match="schema"):
        DATUM.decode(h("08 01 10 02 18 02 22 04 00 01 02 03 28 07 38 00"), image_schema((2, 3, 1)), "GRAY")


def test_datum_raw_and_encoded_mismatch():
    with pytest.raises(CorruptShardError, match="encoded"):
        DATUM.decode(h("22 04 ff d8 ff d9 28 05 38 01"), image_schema(), "RGB")
    with pytest.raises(CorruptShardError, match="raw pixels"):
        DATUM.decode(h("08 01 10 02 18 02 22 04 00 01 02 03 28 07 38 00"), image_schema(encoding="png"), "RGB")


def test_datum_check():
    DATUM.check(image_schema())
    with pytest.raises(UnsupportedCodecError) as err:
        DATUM.check(AN4)
    assert "audio, sample_rate, transcript, speaker" in str(err.value)
    assert "tensorprotos" in str(err.value)
    with pytest.raises(UnsupportedCodecError, match="an4 has audio"):
        DATUM.check(AN4, dataset="an4")
    extra = Schema((*image_schema().fields, Field("caption", "str")))
    with pytest.raises(UnsupportedCodecError, match="has caption;"):
        DATUM.check(extra)
    two_labels = Schema((*image_schema().fields, Field("fine", "int"), Field("coarse", "str")))
    with pytest.raises(UnsupportedCodecError, match="has label, fine, coarse;"):
        DATUM.check(two_labels)
    with pytest.raises(UnsupportedCodecError, match="no integer label"):
        DATUM.check(Schema((Field("image", "image"),)))
    wide = Schema((Field("image", "image"), Field("label", "int", maximum=2**40)))
    with pytest.raises(UnsupportedCodecError, match="int32"):
        DATUM.check(wide)
    with pytest.raises(UnsupportedCodecError):
        DATUM.encode({"audio": np.zeros(3, np.int16)}, AN4, "RGB")


def test_labels_must_fit_int32():
    for codec in (DATUM, TP):
        with pytest.raises(UnsupportedCodecError, match="int32"):
            codec.encode({"image": A_IMAGE, "label": 2**31}, image_schema(), "GRAY")
        with pytest.raises(ValueError):
            codec.encode({"image": A_IMAGE, "label": 1.5}, image_schema(), "GRAY")


# --------------------------------------------------------------------------- tensorprotos, hex examples


@pytest.mark.parametrize("path", ["encode", "encode_reference"])
def test_tensorprotos_image_and_label_without_dims(path):
    value = getattr(TP, path)({"image": A_IMAGE, "label": 7}, image_schema((2, 2, 1), dims=()), "GRAY")
    assert value == h("0a 0e 08 02 08 02 08 01 10 03 2a 04 00 01 02 03 0a 05 10 02 22 01 07")
    assert len(value) == 23


@pytest.mark.parametrize("path", ["encode", "encode_reference"])
def test_tensorprotos_label_dims_one(path):
    value = getattr(TP, path)({"image": A_IMAGE, "label": 7}, image_schema(dims=(1,)), "GRAY")
    assert value.endswith(h("0a 07 08 01 10 02 22 01 07"))


@pytest.mark.parametrize("path", ["encode", "encode_reference"])
def test_tensorprotos_encoded(path):
    schema = image_schema(encoding="jpeg", dims=(1,))
    value = getattr(TP, path)({"image": h("ff d8 ff d9"), "label": 7}, schema, "RGB")
    assert value == h("0a 0a 08 01 10 04 32 04 ff d8 ff d9 0a 07 08 01 10 02 22 01 07")
    assert len(value) == 21
    assert TP.decode(value, schema, "RGB") == {"image": h("ff d8 ff d9"), "label": 7}


def test_tensorprotos_string_without_dims_is_read():
    # image_input_op_test.py style: STRING with no dims.
    value = h("0a 08 10 04 32 04 ff d8 ff d9 0a 05 10 02 22 01 07")
    assert TP.decode(value, image_schema(encoding="png"), "RGB") == {"image": h("ff d8 ff d9"), "label": 7}


@pytest.mark.parametrize("path", ["encode", "encode_reference"])
def test_tensorprotos_mnist_and_cifar_layout(path):
    rng = np.random.default_rng(2)
    mnist = rng.integers(0, 256, (28, 28, 1), dtype=np.uint8)
    value = getattr(TP, path)({"image": mnist, "label": 4}, image_schema((28, 28, 1), dims=()), "GRAY")
    assert len(value) == 805
    assert value[:14] == h("0a 9b 06 08 1c 08 1c 08 01 10 03 2a 90 06")
    assert value[14:798] == mnist.tobytes() and value[798:] == h("0a 05 10 02 22 01 04")

    cifar = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    value = getattr(TP, path)({"image": cifar, "label": 6}, image_schema((32, 32, 3), dims=(1,)), "RGB")
    assert len(value) == 3095
    assert value[:14] == h("0a 8b 18 08 20 08 20 08 03 10 03 2a 80 18")
    assert value[14:3086] == cifar.tobytes()  # interleaved HWC RGB like make_cifar_db
    assert value[3086:] == h("0a 07 08 01 10 02 22 01 06")
    bgr = getattr(TP, path)({"image": cifar, "label": 6}, image_schema((32, 32, 3), dims=(1,)), "BGR")
    assert bgr[14:3086] == cifar[..., ::-1].tobytes()


@pytest.mark.parametrize("path", ["encode", "encode_reference"])
def test_tensorprotos_negative_label(path):
    value = getattr(TP, path)({"image": A_IMAGE, "label": -1}, image_schema(dims=()), "GRAY")
    assert value.endswith(h("0a 0e 10 02 22 0a ff ff ff ff ff ff ff ff ff 01"))
    assert TP.decode(value, image_schema(dims=()), "GRAY")["label"] == -1


def test_tensorprotos_check():
    TP.check(AN4)
    TP.check(image_schema())
    with pytest.raises(UnsupportedCodecError, match="dims"):
        TP.check(Schema((Field("label", "int", dims=(2,)),)))
    with pytest.raises(UnsupportedCodecError, match="int32"):
        TP.check(Schema((Field("n", "int", minimum=-(2**33)),)))
    with pytest.raises(UnsupportedCodecError):
        TP.check(Schema(()))


def test_tensorprotos_decode_validates_against_schema():
    schema = image_schema((2, 2, 1), dims=())
    good = h("0a 0e 08 02 08 02 08 01 10 03 2a 04 00 01 02 03 0a 05 10 02 22 01 07")
    cases = {
        "1 tensors": h("0a 0e 08 02 08 02 08 01 10 03 2a 04 00 01 02 03"),
        "FLOAT, expected BYTE": h("0a 0c 08 02 08 02 08 01 2a 04 00 01 02 03 0a 05 10 02 22 01 07"),
        "byte_data holds 3 bytes": h("0a 0d 08 02 08 02 08 01 10 03 2a 03 00 01 02 0a 05 10 02 22 01 07"),
        "INT64, expected INT32": h("0a 0e 08 02 08 02 08 01 10 03 2a 04 00 01 02 03 0a 05 10 0a 52 01 07"),
        "2 values": h("0a 0e 08 02 08 02 08 01 10 03 2a 04 00 01 02 03 0a 06 10 02 22 02 07 07"),
    }
    assert TP.decode(good, schema, "GRAY")["label"] == 7
    for message, value in cases.items():
        with pytest.raises(CorruptShardError, match=message):
            TP.decode(value, schema, "GRAY")
        with pytest.raises(CorruptShardError, match=message):
            TP.decode_batch([good, value], schema, "GRAY")


# --------------------------------------------------------------------------- fast path == protobuf path

LABELS = [0, 1, 7, 127, 128, 300, 16383, 16384, -1, -128, 2**31 - 1, -(2**31), 123456789]


def random_records(rng, shape, n, labels=LABELS):
    return [
        {"image": rng.integers(0, 256, shape, dtype=np.uint8), "label": int(labels[i % len(labels)])}
        for i in range(n)
    ]


@pytest.mark.parametrize("codec", [DATUM, TP], ids=["datum", "tensorprotos"])
@pytest.mark.parametrize(
    "shape,order,dims",
    [((28, 28, 1), "GRAY", ()), ((5, 7, 3), "RGB", (1,)), ((5, 7, 3), "BGR", ()), ((3, 4, 1), "BGR", (1,))],
)
def test_fast_path_matches_protobuf(codec, shape, order, dims):
    rng = np.random.default_rng(hash((shape, order)) % 2**32)
    records = random_records(rng, shape, 200) + random_records(rng, shape, 200, rng.integers(-(2**31), 2**31, 50))
    for schema in (image_schema(shape, dims=dims), image_schema(None, dims=dims)):
        values = []
        for record in records:
            fast, slow = codec.encode(record, schema, order), codec.encode_reference(record, schema, order)
            assert fast == slow
            values.append(fast)
            assert_records_equal(codec.decode(fast, schema, order), record)
            assert_records_equal(codec.decode_reference(fast, schema, order), record)
            assert_records_equal(codec.decode(fast, schema, order), record)  # warm cache
        batch = codec.decode_batch(values, schema, order)
        assert batch["image"].shape == (len(records), *shape) and batch["image"].flags.c_contiguous
        np.testing.assert_array_equal(batch["image"], np.stack([r["image"] for r in records]))
        np.testing.assert_array_equal(batch["label"], [r["label"] for r in records])


@pytest.mark.parametrize("codec", [DATUM, TP], ids=["datum", "tensorprotos"])
def test_decode_batch_same_length_values(codec):
    rng = np.random.default_rng(5)
    schema = image_schema((28, 28, 1), dims=())
    records = random_records(rng, (28, 28, 1), 300, list(range(10)))
    values = [codec.encode(r, schema, "GRAY") for r in records]
    assert len({len(v) for v in values}) == 1
    batch = codec.decode_batch(values, schema, "GRAY")
    np.testing.assert_array_equal(batch["image"], np.stack([r["image"] for r in records]))
    np.testing.assert_array_equal(batch["label"], [r["label"] for r in records])
    batch["image"][0, 0, 0, 0] ^= 1  # the result is a writable array of its own


def test_decode_batch_takes_foreign_but_valid_values():
    schema = image_schema((2, 2, 1))
    values = [
        h("08 01 10 02 18 02 22 04 00 01 02 03 28 07 38 00"),
        h("08 01 10 02 18 02 22 04 00 01 02 03 28 07"),  # convert_mnist_data: no encoded field
        h("08 01 10 02 18 02 22 04 00 01 02 03 28 87 00 38 00"),  # non-canonical varint 7
        h("28 07 08 01 10 02 18 02 22 04 00 01 02 03"),  # fields out of order
        h("08 01 10 02 18 02 22 04 00 01 02 03 28 ff ff ff ff 0f 38 00"),  # 5-byte int32 -1
    ]
    batch = DATUM.decode_batch(values, schema, "GRAY")
    np.testing.assert_array_equal(batch["label"], [7, 7, 7, 7, -1])
    np.testing.assert_array_equal(batch["image"], np.stack([A_IMAGE] * 5))
    with pytest.raises(CorruptShardError):
        DATUM.decode_batch([*values, h("08 01 10 02 18 02 22 03 00 01 02 28 07 38 00")], schema, "GRAY")


def test_decode_batch_other_schemas_stack_columns():
    rng = np.random.default_rng(6)
    records = [
        {
            "audio": rng.integers(-32768, 32768, int(rng.integers(0, 50)), dtype=np.int16),
            "sample_rate": 16000,
            "transcript": "ünïcode ✓",
            "speaker": f"s{i}",
        }
        for i in range(20)
    ]
    batch = TP.decode_batch([TP.encode(r, AN4, "RGB") for r in records], AN4, "RGB")
    assert batch["sample_rate"].dtype == np.int64 and batch["sample_rate"].tolist() == [16000] * 20
    assert batch["audio"].dtype == object and len(batch["audio"]) == 20
    for got, record in zip(batch["audio"], records, strict=True):
        np.testing.assert_array_equal(got, record["audio"])
    assert list(batch["speaker"]) == [r["speaker"] for r in records]
    enc = image_schema(encoding="png")
    batch = DATUM.decode_batch([DATUM.encode({"image": b"\x89PNG", "label": 2}, enc, "RGB")], enc, "RGB")
    assert batch["image"][0] == b"\x89PNG" and batch["label"].tolist() == [2]


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_round_trip_colour_and_grey(order):
    rng = np.random.default_rng(7)
    colour = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (6, 5, 1), dtype=np.uint8)
    for codec in (DATUM, TP):
        for img in (colour, grey):
            record = {"image": img, "label": 3}
            value = codec.encode(record, image_schema(), order)
            assert_records_equal(codec.decode(value, image_schema(), order), record)
    rgb = TP.encode({"image": colour, "label": 3}, image_schema(), "RGB")
    bgr = TP.encode({"image": colour, "label": 3}, image_schema(), "BGR")
    assert rgb != bgr
    assert TP.encode({"image": colour[..., ::-1], "label": 3}, image_schema(), "BGR") == rgb


def test_round_trip_gray_order_rejects_colour():
    with pytest.raises(ValueError, match="GRAY"):
        DATUM.encode({"image": np.zeros((2, 2, 3), np.uint8), "label": 0}, image_schema(), "GRAY")


def test_round_trip_every_kind_tensorprotos():
    schema = Schema(
        (
            Field("image", "image", encoding="jpeg"),
            Field("pixels", "image", shape=(2, 3, 3)),
            Field("audio", "audio"),
            Field("flac", "audio", encoding="flac"),
            Field("label", "int", dims=()),
            Field("count", "int"),
            Field("text", "str"),
        )
    )
    rng = np.random.default_rng(8)
    record = {
        "image": b"\xff\xd8jpeg\xff\xd9",
        "pixels": rng.integers(0, 256, (2, 3, 3), dtype=np.uint8),
        "audio": np.array([0, 1, -1, 127, 128, -32768, 32767, 16384, -129], np.int16),
        "flac": b"fLaC\x00\x00\x00\x22",
        "label": -5,
        "count": 2**31 - 1,
        "text": "Grüße, 世界 — ✓",
    }
    for order in ("RGB", "BGR"):
        value = TP.encode(record, schema, order)
        assert value == TP.encode_reference(record, schema, order)
        assert_records_equal(TP.decode(value, schema, order), record)
    protos = TensorProtos.FromString(TP.encode(record, schema, "RGB")).protos
    assert [p.data_type for p in protos] == [4, 3, 9, 4, 2, 2, 4]
    assert all(not p.HasField("name") for p in protos)
    assert [list(p.dims) for p in protos] == [[1], [2, 3, 3], [9], [1], [], [1], [1]]
    assert list(protos[2].int32_data) == record["audio"].tolist()  # Caffe2 reads INT16 from int32_data


def test_round_trip_empty_audio_and_all_int16():
    schema = Schema((Field("audio", "audio"),))
    everything = np.arange(-32768, 32768, dtype=np.int16)
    for samples in (np.zeros(0, np.int16), everything):
        value = TP.encode({"audio": samples}, schema, "RGB")
        assert value == TP.encode_reference({"audio": samples}, schema, "RGB")
        np.testing.assert_array_equal(TP.decode(value, schema, "RGB")["audio"], samples)
    assert TP.encode({"audio": np.zeros(0, np.int16)}, schema, "RGB") == h("0a 04 08 00 10 09")


def test_pack_varints_matches_protobuf():
    rng = np.random.default_rng(9)
    values = np.concatenate([[0, 1, -1, 2**31 - 1, -(2**31)], rng.integers(-(2**31), 2**31, 1000)])
    expected = TensorProto(int32_data=values.tolist()).SerializeToString()
    packed = pack_varints(values)
    assert expected == b"\x22" + varint(len(packed)) + packed
    np.testing.assert_array_equal(unpack_varints(packed), values)
    with pytest.raises(ValueError):
        unpack_varints(b"\x80")


# --------------------------------------------------------------------------- corruption


@pytest.mark.parametrize("codec", [DATUM, TP], ids=["datum", "tensorprotos"])
def test_corrupt_bytes_raise_corrupt_shard_error(codec):
    rng = np.random.default_rng(10)
    schema = image_schema((4, 4, 3))
    record = {"image": rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), "label": 300}
    value = codec.encode(record, schema, "BGR")
    for cut in range(len(value)):  # truncations either fail cleanly or still mean the same record
        try:
            got = codec.decode(value[:cut], schema, "BGR")
        except CorruptShardError:
            continue
        assert_records_equal(got, record)
    for garbage in (b"\xff" * 12, b"\x0a\xff\xff\xff\xff\x0f", bytes(rng.integers(0, 256, 64, dtype=np.uint8))):
        with pytest.raises(CorruptShardError):
            codec.decode(garbage, schema, "BGR")
        with pytest.raises(CorruptShardError):
            codec.decode_batch([value, garbage], schema, "BGR")


@pytest.mark.parametrize("codec", [DATUM, TP], ids=["datum", "tensorprotos"])
@pytest.mark.parametrize("encoding", ["raw", "png"])
def test_every_flipped_byte_fast_path_agrees_with_protobuf(codec, encoding):
    schema = image_schema((2, 2, 3) if encoding == "raw" else None, dims=(), encoding=encoding)
    image = np.arange(12, dtype=np.uint8).reshape(2, 2, 3) if encoding == "raw" else b"\x89PNG\r\n"
    value = codec.encode({"image": image, "label": 130}, schema, "BGR")
    for pos in range(len(value)):
        for flip in (0x01, 0x80, 0xFF):
            bad = bytearray(value)
            bad[pos] ^= flip
            bad = bytes(bad)
            try:
                expected = codec.decode_reference(bad, schema, "BGR")
            except CorruptShardError:
                with pytest.raises(CorruptShardError):
                    codec.decode(bad, schema, "BGR")
                with pytest.raises(CorruptShardError):
                    codec.decode_batch([value, bad], schema, "BGR")
                continue
            assert_records_equal(codec.decode(bad, schema, "BGR"), expected)
            batch = codec.decode_batch([bad, value], schema, "BGR")
            np.testing.assert_array_equal(batch["label"], [expected["label"], 130])


def test_fast_path_does_not_trust_tails_that_override_the_pixels():
    schema = image_schema((2, 2, 1))
    # Valid header and pixels, then a second `data` field: protobuf keeps the last one.
    value = h("08 01 10 02 18 02 22 04 00 01 02 03 28 07 22 04 09 09 09 09 38 00")
    for _ in range(3):
        record = DATUM.decode(value, schema, "GRAY")
        np.testing.assert_array_equal(record["image"].ravel(), [9, 9, 9, 9])
    np.testing.assert_array_equal(DATUM.decode_batch([value], schema, "GRAY")["image"].ravel(), [9, 9, 9, 9])


def test_equal_schemas_share_one_plan_and_unhashable_fields_work():
    assert DATUM._plans.get(image_schema((2, 2, 1)), "GRAY") is DATUM._plans.get(image_schema((2, 2, 1)), "GRAY")
    assert TP._plans.get(image_schema(), "RGB") is not TP._plans.get(image_schema(), "BGR")
    listy = Schema((Field("image", "image", shape=[2, 2, 1]), Field("label", "int")))  # type: ignore[arg-type]
    value = DATUM.encode({"image": A_IMAGE, "label": 7}, listy, "GRAY")
    assert value == h("08 01 10 02 18 02 22 04 00 01 02 03 28 07 38 00")
    assert DATUM.decode(value, listy, "GRAY")["label"] == 7


def test_same_schema_object_with_changing_channel_order():
    from thresher.codecs import Codec

    schema = image_schema((1, 2, 3))
    record = {"image": np.arange(6, dtype=np.uint8).reshape(1, 2, 3), "label": 1}
    for codec in (DATUM, TP):
        assert isinstance(codec, Codec)
        rgb, bgr, rgb_again = (codec.encode(record, schema, order) for order in ("RGB", "BGR", "RGB"))
        assert rgb == rgb_again != bgr
        assert codec.encode({"image": record["image"][..., ::-1], "label": 1}, schema, "BGR") == rgb
        for value, order in ((rgb, "RGB"), (bgr, "BGR")):
            assert_records_equal(codec.decode(value, schema, order), record)


@pytest.mark.parametrize("codec_name", ["datum", "tensorprotos"])
@pytest.mark.parametrize(("shape", "order"), [((28, 28, 1), "GRAY"), ((32, 32, 3), "RGB"), ((5, 3, 3), "BGR")])
def test_encode_batch_is_byte_identical_to_encoding_each_record(codec_name: str, shape: tuple, order: str) -> None:
    rng = np.random.default_rng(7)
    schema = Schema((Field("image", "image", shape=shape), Field("label", "int", dims=())))
    images = rng.integers(0, 256, (300, *shape), dtype=np.uint8)
    labels = np.concatenate([[0, -1, 127, 128, 2**31 - 1, -(2**31)], rng.integers(-5000, 5000, 294)])
    codec = get_codec(codec_name)
    batch = codec.encode_batch({"image": images, "label": labels}, schema, order)
    assert batch == [codec.encode_reference({"image": i, "label": int(v)}, schema, order)
                     for i, v in zip(images, labels, strict=True)]


def test_encode_batch_falls_back_for_other_layouts() -> None:
    schema = Schema((Field("transcript", "str"), Field("speaker", "int")))
    codec = get_codec("tensorprotos")
    columns = {"transcript": ["A B", "ÉTÉ"], "speaker": [3, -4]}
    assert codec.encode_batch(columns, schema, "NONE") == [
        codec.encode_reference({"transcript": t, "speaker": s}, schema, "NONE") for t, s in zip(*columns.values(), strict=True)]


@pytest.mark.parametrize("shape", [(7, 3, 5, 4), (2, 4, 3, 3), (3, 1, 2, 2), (0, 3, 2, 2)])
def test_interleave_equals_the_transposed_copy_in_any_channel_order(shape: tuple[int, int, int, int]) -> None:
    from thresher.codecs.base import interleave, swapped_order

    planar = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    channels = shape[1]
    for order in (list(range(channels)), swapped_order(channels), list(range(channels - 1, -1, -1))):
        got = interleave(planar, order)
        assert got.flags.c_contiguous
        assert np.array_equal(got, planar[:, order].transpose(0, 2, 3, 1))
