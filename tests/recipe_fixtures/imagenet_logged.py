"""ImageNet with each input's read logged (split, input, process), to count what workers and Dask tasks read."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from thresher.recipe import BadRecord, Input, Record
from thresher.recipes.imagenet import TRAIN, ImageNet


class LoggedImageNet(ImageNet):
    name = "imagenet_logged"

    def read(self, split: str, files: Mapping[str, Path], part: Input) -> Iterator[Record | BadRecord]:
        with open(Path(files[TRAIN]).with_name("reads.log"), "a") as log:
            log.write(f"{split} {part.name} {os.getpid()}\n")
        yield from super().read(split, files, part)


RECIPE = LoggedImageNet()
