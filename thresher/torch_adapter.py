"""A thin ``torch.utils.data.Dataset`` over a thresher Dataset; torch is an optional extra."""

from __future__ import annotations

from typing import Any

try:
    import torch
    from torch.utils.data import Dataset as _TorchBase
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError("ds.torch() needs PyTorch: pip install 'thresher[torch]'") from exc

import numpy as np


class TorchDataset(_TorchBase):
    """Arrays become tensors, ints stay ints; each DataLoader worker reopens shards itself."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.dataset[index]
        return {k: torch.from_numpy(np.array(v)) if isinstance(v, np.ndarray) else v for k, v in record.items()}
