"""Helpers for recipes' miniature writers: archives in the real layout, byte-for-byte repeatable."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Mapping
from pathlib import Path

from thresher.fetch.checksums import format_checksums
from thresher.hashing import hash_file

FIXED_MTIME = 1243728000  # any constant: miniatures must not change from run to run


def write_tar(path: Path, members: Mapping[str, bytes | None], *, compression: str = "") -> Path:
    """Write ``members`` (name → bytes, or None for a directory, in order) as a tar.

    ``compression`` is "", "gz", "bz2" or "xz"; gzip gets a zero timestamp so the bytes repeat.
    """
    mode = f"w:{compression}" if compression else "w"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.mtime = FIXED_MTIME
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    if not compression:
        path.write_bytes(raw.getvalue())
    elif compression == "gz":
        import gzip

        path.write_bytes(gzip.compress(raw.getvalue(), compresslevel=6, mtime=0))
    else:
        with tarfile.open(path, mode) as out, tarfile.open(fileobj=io.BytesIO(raw.getvalue())) as src:
            for info in src.getmembers():
                out.addfile(info, src.extractfile(info))
    return path


def write_checksums(files: Mapping[str, Path], path: Path) -> Path:
    """A ``--checksums`` file for the miniature, as a private mirror's operator would write one."""
    rows = [(name, p.stat().st_size, hash_file(p).sha256) for name, p in sorted(files.items())]
    path.write_text(format_checksums(rows))
    return path


def drawn_image(text: str, size: tuple[int, int], *, background: tuple[int, int, int] = (0, 0, 0),
                foreground: tuple[int, int, int] = (255, 255, 255), noise: int = 0, seed: int = 0):
    """A uint8 H×W×3 picture of ``text``, so a contact sheet shows at a glance what is where.

    Colours make a swapped channel order visible; a little seeded noise keeps pixels varied.
    """
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    height, width = size
    img = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=max(8, int(height * 0.8)))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    draw.text(((width - (right - left)) / 2 - left, (height - (bottom - top)) / 2 - top), text,
              fill=foreground, font=font)
    pixels = np.asarray(img, dtype=np.int16)
    if noise:
        pixels = pixels + np.random.default_rng(seed).integers(-noise, noise + 1, pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)
