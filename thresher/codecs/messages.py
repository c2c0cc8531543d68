"""Protobuf message classes for Caffe ``Datum`` (and the mean file's ``BlobProto``) and Caffe2 ``TensorProto(s)``.

The descriptors are built at import time from ``descriptor_pb2`` so there is no ``protoc`` step and
no generated file to keep in sync. Field numbers, types, defaults and packing follow
``caffe.proto`` (BVLC Caffe) / ``caffe2.proto`` (PyTorch's caffe2/proto) exactly, because packing
and defaults change the bytes on the wire. They live in a private descriptor pool so they can never
clash with another copy of ``caffe.proto`` imported into the same process.
"""

from __future__ import annotations

from enum import IntEnum

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto

POOL = descriptor_pool.DescriptorPool()


class DataType(IntEnum):
    """``caffe2.TensorProto.DataType`` (11 is unused upstream)."""

    UNDEFINED = 0
    FLOAT = 1
    INT32 = 2
    BYTE = 3
    STRING = 4
    BOOL = 5
    UINT8 = 6
    INT8 = 7
    UINT16 = 8
    INT16 = 9
    INT64 = 10
    FLOAT16 = 12
    DOUBLE = 13


def _add(
    message: descriptor_pb2.DescriptorProto,
    name: str,
    number: int,
    ftype: int,
    *,
    repeated: bool = False,
    required: bool = False,
    default: str | None = None,
    packed: bool = False,
    type_name: str | None = None,
) -> None:
    f = message.field.add(name=name, number=number, type=ftype)
    if repeated:
        f.label = _F.LABEL_REPEATED
    elif required:
        f.label = _F.LABEL_REQUIRED
    else:
        f.label = _F.LABEL_OPTIONAL
    if default is not None:
        f.default_value = default
    if packed:
        f.options.packed = True
    if type_name is not None:
        f.type_name = type_name


def _caffe_file() -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto(name="thresher/caffe.proto", package="caffe", syntax="proto2")
    datum = fd.message_type.add(name="Datum")
    _add(datum, "channels", 1, _F.TYPE_INT32)
    _add(datum, "height", 2, _F.TYPE_INT32)
    _add(datum, "width", 3, _F.TYPE_INT32)
    _add(datum, "data", 4, _F.TYPE_BYTES)
    _add(datum, "label", 5, _F.TYPE_INT32)
    _add(datum, "float_data", 6, _F.TYPE_FLOAT, repeated=True)  # proto2: NOT packed
    _add(datum, "encoded", 7, _F.TYPE_BOOL, default="false")

    # The mean file of compute_image_mean: the legacy 4-D shape fields and the data it writes.
    blob = fd.message_type.add(name="BlobProto")
    for number, dimension in enumerate(("num", "channels", "height", "width"), 1):
        _add(blob, dimension, number, _F.TYPE_INT32, default="0")
    _add(blob, "data", 5, _F.TYPE_FLOAT, repeated=True, packed=True)
    return fd


def _caffe2_file() -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto(name="thresher/caffe2.proto", package="caffe2", syntax="proto2")

    # Only the long-stable fields 1-4; TensorProto.device_detail is never written by thresher.
    device = fd.message_type.add(name="DeviceOption")
    _add(device, "device_type", 1, _F.TYPE_INT32, default="0")
    _add(device, "cuda_gpu_id", 2, _F.TYPE_INT32)
    _add(device, "random_seed", 3, _F.TYPE_UINT32)
    _add(device, "node_name", 4, _F.TYPE_STRING)

    tensor = fd.message_type.add(name="TensorProto")
    enum = tensor.enum_type.add(name="DataType")
    for member in DataType:
        enum.value.add(name=member.name, number=int(member))
    segment = tensor.nested_type.add(name="Segment")
    _add(segment, "begin", 1, _F.TYPE_INT64, required=True)
    _add(segment, "end", 2, _F.TYPE_INT64, required=True)

    _add(tensor, "dims", 1, _F.TYPE_INT64, repeated=True)  # NOT packed
    _add(tensor, "data_type", 2, _F.TYPE_ENUM, default="FLOAT", type_name=".caffe2.TensorProto.DataType")
    _add(tensor, "float_data", 3, _F.TYPE_FLOAT, repeated=True, packed=True)
    _add(tensor, "int32_data", 4, _F.TYPE_INT32, repeated=True, packed=True)
    _add(tensor, "byte_data", 5, _F.TYPE_BYTES)
    _add(tensor, "string_data", 6, _F.TYPE_BYTES, repeated=True)
    _add(tensor, "name", 7, _F.TYPE_STRING)
    _add(tensor, "device_detail", 8, _F.TYPE_MESSAGE, type_name=".caffe2.DeviceOption")
    _add(tensor, "double_data", 9, _F.TYPE_DOUBLE, repeated=True, packed=True)
    _add(tensor, "int64_data", 10, _F.TYPE_INT64, repeated=True, packed=True)
    _add(tensor, "segment", 11, _F.TYPE_MESSAGE, type_name=".caffe2.TensorProto.Segment")

    protos = fd.message_type.add(name="TensorProtos")
    _add(protos, "protos", 1, _F.TYPE_MESSAGE, repeated=True, type_name=".caffe2.TensorProto")
    return fd


POOL.Add(_caffe_file())
POOL.Add(_caffe2_file())

Datum = message_factory.GetMessageClass(POOL.FindMessageTypeByName("caffe.Datum"))
BlobProto = message_factory.GetMessageClass(POOL.FindMessageTypeByName("caffe.BlobProto"))
DeviceOption = message_factory.GetMessageClass(POOL.FindMessageTypeByName("caffe2.DeviceOption"))
TensorProto = message_factory.GetMessageClass(POOL.FindMessageTypeByName("caffe2.TensorProto"))
TensorProtos = message_factory.GetMessageClass(POOL.FindMessageTypeByName("caffe2.TensorProtos"))

__all__ = ["POOL", "BlobProto", "DataType", "Datum", "DeviceOption", "TensorProto", "TensorProtos"]
