"""Full-size synthetic archives in the published layouts, made once per run and shared by benchmarks.

Each dataset is written as a mirror directory (``<mirror>/<recipe>/<filename>``, what
``--mirror`` accepts) plus a ``--checksums`` TSV, exactly as the end-to-end tests serve their
miniatures, so ``prepare`` runs its real download/verify path offline. ``Workspace`` caches
what it made (inputs, download directories, prepared outputs) for the rest of the run and
deletes everything on :meth:`Workspace.close`.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import struct
import tarfile
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import thresher
from benchmarks import synthetic
from thresher.acquire import download
from thresher.miniature import write_checksums, write_tar
from thresher.registry import get_recipe
from thresher.sources.idx import write_idx
from thresher.sources.matlab import save_mat

MNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
               "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
CIFAR_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR_FOLDER = "cifar-10-batches-bin"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FLOWERS_CLASSES = 102


@dataclass(frozen=True)
class Inputs:
    """One dataset's synthetic sources, served as a mirror directory with a checksums file."""

    recipe: str
    mirror: Path
    checksums: Path
    records: dict[str, int]
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def total_records(self) -> int:
        return sum(self.records.values())

    @property
    def source_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files.values())

    def fetch_options(self) -> dict[str, Any]:
        """The ``prepare`` keywords that make it fetch from this mirror, offline, verified."""
        return {"mirror": str(self.mirror), "offline": True, "checksums": self.checksums, "progress": False}


class Workspace:
    """A temporary directory for one run, and the inputs and outputs benchmarks share within it."""

    def __init__(self, scale: float, parent: str | None = None) -> None:
        self.scale = scale
        self.root = Path(tempfile.mkdtemp(prefix="thresher-bench-", dir=parent))
        self._inputs: dict[tuple[Any, ...], Inputs] = {}
        self._downloads: dict[Path, Path] = {}
        self._prepared: dict[tuple[Path, str], Path] = {}
        self._counter = 0

    def scaled(self, n: int) -> int:
        return max(1, round(n * self.scale))

    def fresh(self, name: str) -> Path:
        """A new empty directory that no earlier call returned."""
        self._counter += 1
        path = self.root / f"{self._counter:03d}-{name}"
        path.mkdir(parents=True)
        return path

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # -- datasets --------------------------------------------------------------------------

    def mnist(self, train: int | None = None, test: int | None = None) -> Inputs:
        """MNIST's four idx.gz files; default sizes are the real 60,000 + 10,000 (times the scale)."""
        train = self.scaled(60_000) if train is None else train
        test = self.scaled(10_000) if test is None else test
        key = ("mnist", train, test)
        if key not in self._inputs:
            directory, mirror = self._mirror_dir("mnist", f"{train}-{test}")
            files = {}
            for split, count, seed in (("train", train, 1), ("test", test, 2)):
                images_name, labels_name = MNIST_FILES[split]
                labels = write_mnist_images(directory / images_name, count, seed)
                write_idx(directory / labels_name, labels)
                files[images_name], files[labels_name] = directory / images_name, directory / labels_name
            self._inputs[key] = self._finish("mnist", mirror, files, {"train": train, "test": test})
        return self._inputs[key]

    def cifar10(self) -> Inputs:
        """``cifar-10-binary.tar.gz``: five train batches and a test batch of 3,073-byte records."""
        per_batch = self.scaled(10_000)
        key = ("cifar10", per_batch)
        if key not in self._inputs:
            directory, mirror = self._mirror_dir("cifar10", str(per_batch))
            rng = np.random.default_rng(10)
            members: dict[str, bytes | None] = {
                CIFAR_FOLDER: None,
                f"{CIFAR_FOLDER}/batches.meta.txt": "".join(f"{c}\n" for c in CIFAR_CLASSES).encode(),
            }
            names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
            for name in names:
                labels, planes = synthetic.cifar_block(per_batch, rng)
                rows = np.concatenate([labels[:, None], planes.reshape(per_batch, -1)], axis=1)
                members[f"{CIFAR_FOLDER}/{name}"] = rows.tobytes()
            members[f"{CIFAR_FOLDER}/readme.html"] = b"<html>synthetic CIFAR-10 for benchmarks</html>\n"
            path = write_tar(directory / CIFAR_ARCHIVE, members, compression="gz")
            self._inputs[key] = self._finish("cifar10", mirror, {CIFAR_ARCHIVE: path},
                                             {"train": 5 * per_batch, "test": per_batch})
        return self._inputs[key]

    def flowers(self, count: int | None = None) -> Inputs:
        """Flowers-style: JPEG photos in an uncompressed ``102flowers.tgz``, labels and splits in MAT files."""
        count = self.scaled(5_000) if count is None else count
        key = ("flowers102", count)
        if key not in self._inputs:
            directory, mirror = self._mirror_dir("flowers102", str(count))
            jpegs = _make_photos(count)
            members: dict[str, bytes | None] = {"jpg": None}
            members.update({f"jpg/image_{i:05d}.jpg": data for i, data in enumerate(jpegs, 1)})
            write_tar(directory / "102flowers.tgz", members)
            rng = np.random.default_rng(102)
            labels = rng.integers(1, FLOWERS_CLASSES + 1, count).astype(np.float64)
            order = rng.permutation(np.arange(1, count + 1))
            per_set = min(round(count * 1_020 / 5_000), count // 3)
            # Sorted within each split: the conversion's cost, not the recipe's reorder buffer, is measured.
            sets = {"trnid": np.sort(order[:per_set]), "valid": np.sort(order[per_set:2 * per_set]),
                    "tstid": np.sort(order[2 * per_set:])}
            save_mat(directory / "imagelabels.mat", {"labels": labels.reshape(1, -1)})
            save_mat(directory / "setid.mat", {k: v.astype(np.float64).reshape(1, -1) for k, v in sets.items()})
            files = {name: directory / name for name in ("102flowers.tgz", "imagelabels.mat", "setid.mat")}
            records = {"train": per_set, "validation": per_set, "test": count - 2 * per_set}
            self._inputs[key] = self._finish("flowers102", mirror, files, records)
        return self._inputs[key]

    def imagenet(self, classes: int = 50, per_class: int | None = None, *, tiny: bool = False) -> Inputs:
        """ImageNet-layout: a train tar of class tars of photos, a small val and test tar, a devkit.

        The files lie where ``prepare(download_dir=...)`` finds manual downloads: ``inputs.mirror``.
        ``tiny``: every photo the same small JPEG (96×96, a few kB: 10,000 of them already fill more
        than one LMDB commit), for counts where only the number of records matters.
        """
        per_class = self.scaled(100) if per_class is None else per_class
        key = ("imagenet", classes * per_class, tiny)
        if key not in self._inputs:
            from thresher.recipes import _imagenet_miniature as layout

            directory, mirror = self._mirror_dir("imagenet", f"{classes * per_class}{'-tiny' if tiny else ''}")
            wnids = [f"n{10_000_000 + 7919 * c:08d}" for c in range(classes)]
            count = classes * per_class + classes + 10
            photos = iter([layout.encode(layout.photo(0, (96, 96)))] * count if tiny else _make_photos(count))
            with tarfile.open(directory / layout.TRAIN, "w") as train:
                for wnid in wnids:
                    inner = layout.tar({f"{wnid}_{i}.JPEG": next(photos) for i in range(per_class)})
                    info = tarfile.TarInfo(f"{wnid}.tar")
                    info.size = len(inner)
                    train.addfile(info, io.BytesIO(inner))
            val_name = "ILSVRC2012_val_{:08d}.JPEG".format
            (directory / layout.VAL).write_bytes(layout.tar({val_name(n): next(photos) for n in range(1, classes + 1)}))
            (directory / layout.TEST).write_bytes(layout.tar({f"ILSVRC2012_test_{n:08d}.JPEG": next(photos)
                                                               for n in range(1, 11)}))
            rows = tuple((c + 1, wnid, f"class {c}", ()) for c, wnid in enumerate(wnids))
            truth = "".join(f"{c + 1}\n" for c in range(classes)).encode()
            devkit = {f"{layout.DATA}/meta.mat": layout.meta_mat(rows, dict.fromkeys(wnids, per_class)),
                      f"{layout.DATA}/ILSVRC2012_validation_ground_truth.txt": truth}
            (directory / layout.DEVKIT).write_bytes(layout.tar(devkit, mode="w:gz"))
            files = {name: directory / name for name in (layout.TRAIN, layout.VAL, layout.DEVKIT, layout.TEST)}
            records = {"train": classes * per_class, "validation": classes, "test": 10}
            self._inputs[key] = self._finish("imagenet", directory, files, records)
        return self._inputs[key]

    def discard(self, inputs: Inputs) -> None:
        """Delete a dataset's sources, download directory and prepared outputs (big one-off inputs)."""
        for key, value in list(self._inputs.items()):
            if value is inputs:
                del self._inputs[key]
        self.release_prepared(inputs)
        downloads = self._downloads.pop(inputs.mirror, None)
        if downloads is not None:
            shutil.rmtree(downloads, ignore_errors=True)
        shutil.rmtree(inputs.mirror, ignore_errors=True)

    # -- derived --------------------------------------------------------------------------

    def downloads(self, inputs: Inputs) -> Path:
        """A download directory holding the verified sources, for ``prepare(download_dir=...)``."""
        if inputs.mirror not in self._downloads:
            directory = self.fresh(f"{inputs.recipe}-downloads")
            download(get_recipe(inputs.recipe), directory, mirror=str(inputs.mirror), offline=True,
                     checksums=inputs.checksums, progress=False)
            self._downloads[inputs.mirror] = directory
        return self._downloads[inputs.mirror]

    def prepared(self, inputs: Inputs, fmt: str) -> Path:
        """The format directory of ``inputs`` prepared as ``fmt`` (made once, then reused)."""
        key = (inputs.mirror, fmt)
        if key not in self._prepared:
            root = self.fresh(f"{inputs.recipe}-{fmt}")
            manifest = thresher.prepare(inputs.recipe, root=root, format=fmt, download_dir=self.downloads(inputs),
                                        **inputs.fetch_options())
            self._prepared[key] = manifest.directory
        return self._prepared[key]

    def release_prepared(self, inputs: Inputs) -> None:
        """Delete prepared outputs of ``inputs`` (they can be large) but keep its sources."""
        for key in [k for k in self._prepared if k[0] == inputs.mirror]:
            shutil.rmtree(self._prepared.pop(key).parent.parent, ignore_errors=True)

    def _mirror_dir(self, recipe: str, tag: str) -> tuple[Path, Path]:
        mirror = self.fresh(f"{recipe}-{tag}-mirror")
        directory = mirror / recipe
        directory.mkdir()
        return directory, mirror

    def _finish(self, recipe: str, mirror: Path, files: dict[str, Path], records: dict[str, int]) -> Inputs:
        checksums = write_checksums(files, mirror / f"{recipe}.checksums.tsv")
        return Inputs(recipe, mirror, checksums, records, files)


def write_mnist_images(path: Path, count: int, seed: int) -> np.ndarray:
    """Stream an idx3 images file through gzip block by block; return the labels of the digits drawn."""
    labels = []
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as out:
        out.write(struct.pack(">HBBIII", 0, 0x08, 3, count, synthetic.MNIST_SIDE, synthetic.MNIST_SIDE))
        for images, block_labels in synthetic.mnist_blocks(count, seed):
            out.write(images.tobytes())
            labels.append(block_labels)
    return np.concatenate(labels)


def _make_photos(count: int) -> list[bytes]:
    """Photos on every core: JPEG encoding dominates making the Flowers input."""
    step = 250
    runs = [range(start, min(start + step, count + 1)) for start in range(1, count + 1, step)]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return [jpeg for run in pool.map(synthetic.photo_jpegs, runs) for jpeg in run]
