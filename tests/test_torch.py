"""``ds.torch()`` inside real DataLoader worker processes (PyTorch is an optional extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from e2e import build_mirror
from server import LoopbackServer

import thresher

torch = pytest.importorskip("torch", reason="PyTorch is an optional extra (pip install 'thresher[torch]')")


@pytest.mark.parametrize("context", ["fork", "spawn"])
@pytest.mark.parametrize("fmt", ["lmdb", "hdf5"])
def test_dataloader_workers_read_every_record(context: str, fmt: str, tmp_path: Path) -> None:
    mirror = build_mirror(tmp_path / "mirror" / "files")
    with LoopbackServer(mirror.root) as server:
        result = thresher.prepare("cifar10", root=tmp_path, format=fmt, mirror=server.url, offline=True,
                                  checksums=mirror.checksums["cifar10"], progress=False)
    ds = thresher.open(result.directory / "train")
    ds[0]  # the parent has open handles before the workers start
    loader = torch.utils.data.DataLoader(ds.torch(), batch_size=4, num_workers=2, multiprocessing_context=context)
    batches = list(loader)
    images = torch.cat([b["image"] for b in batches]).numpy()
    labels = torch.cat([b["label"] for b in batches]).tolist()
    want = mirror.miniatures["cifar10"].records["train"]
    assert images.dtype == np.uint8 and images.shape == (len(want), 32, 32, 3)
    assert labels == [r["label"] for r in want]
    assert all(np.array_equal(images[i], r["image"]) for i, r in enumerate(want))
