"""thresher mean: Caffe's mean.binaryproto checked against hand-built bytes, the mean against numpy."""

from __future__ import annotations

import io
import json
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from e2e import FORMAT_CODECS
from PIL import Image

import thresher
from thresher.cli import main
from thresher.mean import blob_proto
from thresher.options import ConvertOptions


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def hand_built_blob(mean_chw: np.ndarray) -> bytes:
    """BlobProto as caffe.proto numbers it: num=1 (tag 08), channels (10), height (18), width (20), then
    data=5 packed floats (tag 2a, byte length, little-endian float32s), as compute_image_mean writes it."""
    c, h, w = mean_chw.shape
    floats = struct.pack(f"<{mean_chw.size}f", *mean_chw.ravel().tolist())
    return (b"\x08\x01" + b"\x10" + varint(c) + b"\x18" + varint(h) + b"\x20" + varint(w)
            + b"\x2a" + varint(len(floats)) + floats)


def photos(folder: Path, count: int, size: tuple[int, int] = (6, 5), seed: int = 0) -> list[bytes]:
    """``count`` PNGs (lossless, so decoding gives back exactly these pixels) in one class folder."""
    rng = np.random.default_rng(seed)
    files = []
    for i in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(buffer, "PNG")
        (folder / "c").mkdir(parents=True, exist_ok=True)
        (folder / "c" / f"{i:06d}.png").write_bytes(buffer.getvalue())
        files.append(buffer.getvalue())
    return files


def numpy_mean_bgr_chw(files: list[bytes]) -> np.ndarray:
    """The mean as numpy computes it on PIL's decoding of the files, in Caffe's BGR C×H×W."""
    stack = np.stack([np.asarray(Image.open(io.BytesIO(f)).convert("RGB"), dtype=np.float64) for f in files])
    return stack.mean(axis=0)[..., ::-1].transpose(2, 0, 1)


def test_blob_proto_bytes_are_caffes() -> None:
    # num=1, channels=1, height=1, width=2, data=[1.0, 2.0], byte by byte.
    assert blob_proto(np.array([[[1.0, 2.0]]])) == bytes.fromhex("08 01 10 01 18 01 20 02 2a 08 00 00 80 3f 00 00 00 40")
    mean = np.arange(3 * 20 * 7, dtype=np.float32).reshape(3, 20, 7) / 3  # a length that needs a 2-byte varint
    assert blob_proto(mean) == hand_built_blob(mean)


@pytest.mark.parametrize(("fmt", "codec"), FORMAT_CODECS)
@pytest.mark.parametrize("encoding", ["asis", "raw"])
def test_mean_equals_numpy_in_every_format_and_codec(tmp_path: Path, fmt: str, codec: str | None,
                                                     encoding: str) -> None:
    files = photos(tmp_path / "pics", 7)
    # raw: decoded pixels (a resize to their own size, which hdf5 needs to know the shape, changes none)
    options = ConvertOptions(resize=(6, 5)) if encoding == "raw" else ConvertOptions()
    manifest = thresher.prepare("images", root=tmp_path / "out", format=fmt, codec=codec, progress=False,
                                options=options, arguments={"source": str(tmp_path / "pics")})
    assert manifest.schema["image"].is_encoded == (encoding == "asis")
    split = manifest.directory / "train"
    result = thresher.compute_mean(split)
    want = numpy_mean_bgr_chw(files)
    assert result.channel_order == "BGR" and result.records == 7 and result.mean.dtype == np.float32
    assert np.allclose(result.mean, want, rtol=0, atol=1e-4)
    assert (split / "mean.binaryproto").read_bytes() == hand_built_blob(want.astype(np.float32))
    assert np.array_equal(np.load(split / "mean.npy"), result.mean)
    facts = json.loads((split / "mean.json").read_text())
    assert facts["shape_chw"] == [3, 6, 5] and facts["channel_order"] == "BGR"
    assert np.allclose(facts["channel_means"], want.reshape(3, -1).mean(axis=1), atol=1e-4)


def test_rgb_data_keeps_rgb_order_and_grey_has_one_channel(mirror, mirror_server, tmp_path: Path) -> None:
    """CIFAR-10 is stored RGB (as convert_cifar_data does), MNIST grey: the mean follows the stored order."""
    for name, order, channels in (("cifar10", "RGB", 3), ("mnist", "GRAY", 1)):
        manifest = thresher.prepare(name, root=tmp_path, mirror=mirror_server.url, offline=True,
                                    checksums=mirror.checksums[name], progress=False)
        ds = thresher.open(manifest.directory / "test")
        want = np.mean([ds[i]["image"].astype(np.float64) for i in range(len(ds))], axis=0).transpose(2, 0, 1)
        result = thresher.compute_mean(manifest.directory / "test", output=tmp_path / f"{name}-mean")
        assert result.channel_order == order and result.mean.shape[0] == channels
        assert np.allclose(result.mean, want, atol=1e-4)


def test_images_of_different_sizes_are_refused_naming_the_first_odd_record(tmp_path: Path) -> None:
    photos(tmp_path / "pics", 2, size=(6, 5))
    odd = io.BytesIO()
    Image.new("RGB", (5, 7)).save(odd, "PNG")
    (tmp_path / "pics" / "c" / "000001x.png").write_bytes(odd.getvalue())  # sorts between the two others
    manifest = thresher.prepare("images", root=tmp_path / "out", progress=False,
                                arguments={"source": str(tmp_path / "pics")})
    with pytest.raises(ValueError, match=r"record 2 of split 'train' is 7x5 with 3 channels, but record 0 is 6x5 "
                                         r"with 3 channels; .* \(prepare with --resize HxW\)"):
        thresher.compute_mean(manifest.directory / "train")
    assert not (manifest.directory / "train" / "mean.binaryproto").exists()
    resized = thresher.prepare("images", root=tmp_path / "out", progress=False, options=ConvertOptions(resize=(4, 4)),
                               arguments={"source": str(tmp_path / "pics")})
    assert thresher.compute_mean(resized.directory / "train").mean.shape == (3, 4, 4)


def test_memory_does_not_grow_with_the_split(tmp_path: Path) -> None:
    splits = []
    for count in (40, 400):  # 400 raw 32x32 images hold 1.2 MB of pixels
        photos(tmp_path / f"p{count}", count, size=(32, 32), seed=count)
        manifest = thresher.prepare("images", root=tmp_path / "out", progress=False, shard_size=256 << 10,
                                    options=ConvertOptions(image_encoding="raw"),
                                    arguments={"source": str(tmp_path / f"p{count}")})
        splits.append(manifest.directory / "train")
    thresher.compute_mean(splits[0])  # first use imports modules; that is not the split's memory
    peaks = []
    for split in splits:
        tracemalloc.start()
        thresher.compute_mean(split)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.2 * peaks[0], peaks  # ten times the images, about the same peak


def test_cli_prints_channel_means_and_writes_the_files(tmp_path: Path, capsys) -> None:
    files = photos(tmp_path / "pics", 3)
    manifest = thresher.prepare("images", root=tmp_path / "out", progress=False, format="minidb",
                                arguments={"source": str(tmp_path / "pics")})
    assert main(["mean", str(manifest.directory / "train"), "-o", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    b, g, r = numpy_mean_bgr_chw(files).reshape(3, -1).mean(axis=1)
    assert f"mean of 3 images of 3x6x5 (BGR): B {b:.4f}, G {g:.4f}, R {r:.4f}" in out
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["mean.binaryproto", "mean.json", "mean.npy"]
    assert main(["mean", str(tmp_path / "nothing")]) == 1
    assert "no manifest.json here or in the parent" in capsys.readouterr().err
