"""`--resize short=N` and `--resampler opencv`: sizes as torchvision computes them, OpenCV output equal to a
plain OpenCV loop with the same settings, and the manifest saying which resampler and filter made the bytes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from e2e import Mirror
from server import LoopbackServer

import thresher
from thresher.errors import UnsupportedCodecError
from thresher.inputs import parse_resize
from thresher.manifest import Manifest
from thresher.transforms import ConvertOptions

cv2 = pytest.importorskip("cv2", reason="the opencv extra is not installed")


@pytest.mark.parametrize(("size", "short", "want"), [
    ((375, 500), 256, (256, 341)),  # 256 * 500 / 375 = 341.33: truncated, as torchvision's Resize(256)
    ((500, 375), 256, (341, 256)),
    ((300, 300), 224, (224, 224)),
    ((1, 9), 3, (3, 27)),
])
def test_the_shorter_side_is_n_and_the_longer_truncated(size, short, want) -> None:
    assert ConvertOptions(resize_short=short).size_for(*size) == want


def test_resize_text_forms() -> None:
    assert parse_resize("256x128") == (256, 128)
    assert parse_resize("short=256") == 256
    for bad in ("short=0", "short=x", "short=99999", "256"):
        with pytest.raises(ValueError, match="short=N"):
            parse_resize(bad)
    with pytest.raises(ValueError, match="not both"):
        ConvertOptions(resize=(4, 4), resize_short=4)


def common(mirror: Mirror, server: LoopbackServer) -> dict:
    return {"mirror": server.url, "offline": True, "checksums": mirror.checksums["flowers102"], "progress": False}


def test_opencv_output_equals_a_plain_opencv_loop(mirror: Mirror, mirror_server: LoopbackServer,
                                                  tmp_path: Path) -> None:
    options = ConvertOptions(resize=(20, 16), image_encoding="jpeg", resampler="opencv", jpeg_quality=90)
    result = thresher.prepare("flowers102", root=tmp_path, format="lmdb", codec="tensorprotos", options=options,
                              **common(mirror, mirror_server))
    want = mirror.miniatures["flowers102"].records["train"]
    with thresher.open(result.directory / "train", decode=False) as ds:
        for i, record in enumerate(want):
            photo = cv2.imdecode(np.frombuffer(record["image"], np.uint8), cv2.IMREAD_COLOR)
            small = cv2.resize(photo, (16, 20), interpolation=cv2.INTER_LINEAR)
            ok, jpeg = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 90])
            assert ok and ds[i]["image"] == jpeg.tobytes(), f"record {i}"
    pillow = thresher.prepare("flowers102", root=tmp_path / "pillow", format="lmdb", codec="tensorprotos",
                              options=ConvertOptions(resize=(20, 16), image_encoding="jpeg", jpeg_quality=90),
                              **common(mirror, mirror_server))
    with thresher.open(pillow.directory / "train", decode=False) as a, \
            thresher.open(result.directory / "train", decode=False) as b:
        assert a[0]["image"] != b[0]["image"], "the resampler must change the bytes"
    options_json = Manifest.read(result.directory).options
    assert options_json["resampler"] == "opencv" and "INTER_LINEAR" in options_json["filter"]
    assert Manifest.read(pillow.directory).options["resampler"] == "pillow"


def test_short_side_resize_keeps_each_aspect(mirror: Mirror, mirror_server: LoopbackServer, tmp_path: Path) -> None:
    options = ConvertOptions(resize_short=12, image_encoding="raw")
    result = thresher.prepare("flowers102", root=tmp_path, format="lmdb", options=options,
                              **common(mirror, mirror_server))
    import io

    from PIL import Image as PILImage

    want = mirror.miniatures["flowers102"].records["test"]
    with thresher.open(result.directory / "test") as ds:
        for i, record in enumerate(want):
            width, height = PILImage.open(io.BytesIO(record["image"])).size
            assert ds[i]["image"].shape[:2] == options.size_for(height, width), f"record {i}"
            assert min(ds[i]["image"].shape[:2]) == 12
    with pytest.raises(UnsupportedCodecError, match="every image needs the same size"):
        thresher.prepare("flowers102", root=tmp_path / "h5", format="hdf5", options=options,
                         **common(mirror, mirror_server))


def test_outputs_without_a_resize_keep_their_options_json() -> None:
    """New options appear in the manifest only when used: existing outputs keep their generation."""
    assert set(ConvertOptions().to_json()) == {"image_encoding", "resize", "audio_encoding", "channel_order",
                                                "jpeg_quality"}


def test_the_cli_takes_short_and_opencv(mirror: Mirror, mirror_server: LoopbackServer, tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "thresher.cli", "prepare", "flowers102", "--root", str(tmp_path),
                          "--mirror", mirror_server.url, "--offline", "--checksums",
                          str(mirror.checksums["flowers102"]), "--resize", "short=10", "--resampler", "opencv",
                          "--image-encoding", "png", "--format", "hdf5"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    options = Manifest.read(tmp_path / "flowers102" / "hdf5").options
    assert options["resize_short"] == 10 and options["resampler"] == "opencv"
