"""Photos through OpenCV (``--resampler opencv``): the decode, resize and encode of Caffe's convert_imageset.

cv2 decodes to BGR, resizes with INTER_LINEAR (2×2 samples, no antialiasing) and encodes with
libjpeg, as ``convert_imageset --resize_* --encoded`` does. OpenCV is an optional extra and is
imported on first use. Its own thread pool is switched off: worker processes are the
parallelism, and extra threads per worker only contend for the same cores.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from thresher.lazy import np

_CV2: Any = None


def cv2() -> Any:
    global _CV2
    if _CV2 is None:
        try:
            import cv2 as module
        except ImportError:
            raise ImportError("--resampler opencv needs OpenCV: pip install 'thresher[opencv]'") from None
        module.setNumThreads(1)
        _CV2 = module
    return _CV2


def convert_photo(value: Any, channels: int, size_for: Callable[[int, int], tuple[int, int]],
                  encoding: str, quality: int) -> Any:
    """Encoded bytes or an RGB array to the resized photo: encoded bytes, or an RGB (or grey) HWC array."""
    cv = cv2()
    if isinstance(value, bytes | bytearray | memoryview):
        flag = cv.IMREAD_GRAYSCALE if channels == 1 else cv.IMREAD_COLOR
        pixels = cv.imdecode(np.frombuffer(value, np.uint8), flag | cv.IMREAD_IGNORE_ORIENTATION)
        if pixels is None:
            raise ValueError("OpenCV cannot decode this image")
    else:
        array = np.asarray(value, np.uint8)
        pixels = array[:, :, 0] if array.shape[2] == 1 else np.ascontiguousarray(array[:, :, ::-1])
    height, width = pixels.shape[:2]
    target = size_for(height, width)
    if target != (height, width):
        pixels = cv.resize(pixels, (target[1], target[0]), interpolation=cv.INTER_LINEAR)
    if encoding in ("jpeg", "png"):
        extension, params = (".jpg", [cv.IMWRITE_JPEG_QUALITY, quality]) if encoding == "jpeg" else (".png", [])
        ok, buffer = cv.imencode(extension, pixels, params)
        if not ok:
            raise ValueError(f"OpenCV could not encode the image as {encoding}")
        return buffer.tobytes()
    if pixels.ndim == 2:
        return pixels[:, :, None]
    return np.ascontiguousarray(pixels[:, :, ::-1])  # records hold RGB; the codec stores the dataset's order
