"""A miniature ILSVRC2012 in the published layout, written with tarfile, PIL and scipy.io alone.

Five leaf classes (real WordNet ids and words) and one inner node in ``meta.mat``, numbered by
ILSVRC2012_ID in an order that is not the sorted one, so a label taken from the wrong order
shows. Train holds a CMYK JPEG and a PNG named ``.JPEG`` under their real names; validation is
written out of name order with its ground truth in name order, as the devkit gives it.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np

from thresher.recipe import Miniature, Record

TRAIN = "ILSVRC2012_img_train.tar"
VAL = "ILSVRC2012_img_val.tar"
TEST = "ILSVRC2012_img_test_v10102019.tar"
DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
DATA = "ILSVRC2012_devkit_t12/data"

# ILSVRC2012_ID (of this miniature), WordNet id, words, children (ILSVRC2012_IDs).
SYNSETS = (
    (1, "n02119789", "kit fox, Vulpes macrotis", ()),
    (2, "n02110185", "Siberian husky", ()),
    (3, "n02105855", "Shetland sheepdog, Shetland sheep dog, Shetland", ()),
    (4, "n01739381", "vine snake", ()),
    (5, "n01440764", "tench, Tinca tinca", ()),
    (6, "n02084071", "dog, domestic dog, Canis familiaris", (2, 3)),
)
TRAIN_IMAGES = {  # per class tar, in tar order; the odd ones under their real names
    "n01440764": ["n01440764_10026.JPEG", "n01440764_191.JPEG"],
    "n01739381": ["n01739381_1309.JPEG", "n01739381_24.JPEG"],  # the first is CMYK
    "n02105855": ["n02105855_2933.JPEG", "n02105855_1003.JPEG", "n02105855_77.JPEG"],  # the first is a PNG
    "n02110185": ["n02110185_5.JPEG"],
    "n02119789": ["n02119789_12.JPEG", "n02119789_4.JPEG"],
}
CMYK, PNG = "n01739381_1309.JPEG", "n02105855_2933.JPEG"
VAL_IDS = [3, 5, 1, 1, 4, 2, 5]  # ground truth of val images 1..7, as ILSVRC2012_IDs
VAL_ORDER = [4, 1, 7, 2, 6, 3, 5]  # the order the val tar holds them in
TEST_COUNT = 3


def photo(seed: int, size: tuple[int, int]) -> np.ndarray:
    """A smooth photo-like RGB picture: gradients, a blob and mild noise."""
    rng = np.random.default_rng(seed)
    height, width = size
    y, x = np.mgrid[0:height, 0:width]
    base = rng.integers(40, 200, 3)
    pixels = base + 50 * np.stack([x / width, y / height, (x + y) / (width + height)], -1)
    cy, cx = rng.integers(0, height), rng.integers(0, width)
    pixels += 60 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (0.1 * width * height))[..., None]
    pixels += rng.normal(0, 4, pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, kind: str = "JPEG", mode: str = "RGB") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").convert(mode).save(buffer, kind, **({"quality": 90} if kind == "JPEG" else {}))
    return buffer.getvalue()


def tar(members: dict[str, bytes], *, mode: str = "w", directories: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:  # type: ignore[call-overload]
        for name in directories:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_340_000_000
            archive.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_340_000_000
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def meta_mat(rows: tuple[tuple[int, str, str, tuple[int, ...]], ...] = SYNSETS,
             counts: dict[str, int] | None = None) -> bytes:
    """``meta.mat`` as the devkit has it: a (N, 1) struct array ``synsets`` of doubles and strings.

    ``rows`` are (ILSVRC2012_ID, WordNet id, words, children); ``counts`` the train images per WordNet id.
    """
    import scipy.io

    counts = {wnid: len(names) for wnid, names in TRAIN_IMAGES.items()} if counts is None else counts
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]
    synsets = np.zeros((len(rows), 1), dtype=[(f, object) for f in fields])
    for row, (ident, wnid, words, children) in enumerate(rows):
        count = counts.get(wnid, 0)
        synsets[row, 0] = (np.array([[ident]], float), wnid, words, f"the gloss of {words.split(',')[0]}",
                           np.array([[len(children)]], float), np.array([children], float).reshape(1, -1),
                           np.array([[1 if children else 0]], float), np.array([[count]], float))
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"synsets": synsets}, format="5")
    return buffer.getvalue()


def write(directory: Path) -> Miniature:
    """The four files and the records a correct conversion yields (images as published)."""
    sorted_wnids = sorted(wnid for _, wnid, _, children in SYNSETS if not children)
    label_of = {wnid: sorted_wnids.index(wnid) for wnid in sorted_wnids}
    wnid_of = {ident: wnid for ident, wnid, _, _ in SYNSETS}
    seed = 0
    train_records: list[Record] = []
    class_tars = {}
    for wnid, names in TRAIN_IMAGES.items():
        images = {}
        for name in names:
            seed += 1
            pixels = photo(seed, (30 + 3 * seed, 40 + 5 * (seed % 4)))
            images[name] = encode(pixels, "PNG") if name == PNG else encode(pixels, mode="CMYK" if name == CMYK else "RGB")
            train_records.append({"image": images[name], "label": label_of[wnid]})
        class_tars[f"{wnid}.tar"] = tar(images)
    (directory / TRAIN).write_bytes(tar(class_tars))

    val = {number: encode(photo(100 + number, (36, 48))) for number in range(1, len(VAL_IDS) + 1)}
    val_name = "ILSVRC2012_val_{:08d}.JPEG".format
    (directory / VAL).write_bytes(tar({val_name(n): val[n] for n in VAL_ORDER}))
    val_records: list[Record] = [{"image": val[n], "label": label_of[wnid_of[VAL_IDS[n - 1]]]} for n in sorted(val)]

    test = {f"ILSVRC2012_test_{n:08d}.JPEG": encode(photo(200 + n, (40, 30))) for n in range(1, TEST_COUNT + 1)}
    (directory / TEST).write_bytes(tar(test))
    test_records: list[Record] = [{"image": data} for data in test.values()]

    truth = "".join(f"{ident}\n" for ident in VAL_IDS).encode()
    devkit = {f"{DATA}/meta.mat": meta_mat(), f"{DATA}/ILSVRC2012_validation_ground_truth.txt": truth,
              "ILSVRC2012_devkit_t12/readme.txt": b"ILSVRC2012 development kit (miniature)\n"}
    (directory / DEVKIT).write_bytes(tar(devkit, mode="w:gz", directories=("ILSVRC2012_devkit_t12", DATA)))
    files = {name: directory / name for name in (TRAIN, VAL, DEVKIT, TEST)}
    return Miniature(files, {"train": train_records, "validation": val_records, "test": test_records})


# -- ImageNet-21k: one tar of per-synset tars, under the name of the release it stands for -----------

# Class tars in the outer tar's order (not sorted, so a label taken from tar order shows): WordNet
# id and photo count. 104 photos show the hold-out's cap, 7 and 3 its half, 1 a class with none held out.
CLASSES_21K = (("n02084071", 3), ("n00004475", 104), ("n01440764", 7), ("n00005787", 1))
PNG_21K = "n01440764_8.JPEG"  # a PNG under a .JPEG name, kept as published
HOLDOUT_21K, SEED_21K = 50, "imagenet21k-holdout-v1"


def holdout_21k(names: list[str]) -> set[str]:
    """The stated rule: the min(50, n // 2) names with the smallest SHA-256 of '<seed>/<name>'."""
    import hashlib

    ranked = sorted(names, key=lambda name: hashlib.sha256(f"{SEED_21K}/{name}".encode()).hexdigest())
    return set(ranked[:min(HOLDOUT_21K, len(names) // 2)])


def write_21k(directory: Path, filename: str) -> Miniature:
    """``filename`` (fall11_whole.tar, winter21_whole.tar or winter21_whole.tar.gz) and its records."""
    import gzip

    label_of = {wnid: i for i, wnid in enumerate(sorted(wnid for wnid, _ in CLASSES_21K))}
    records: dict[str, list[Record]] = {"train": [], "validation": []}
    class_tars, seed = {}, 300
    for wnid, count in CLASSES_21K:
        images = {}
        for k in range(count):
            seed += 1
            name = f"{wnid}_{7 * k + 8 - k % 3}.JPEG"
            pixels = photo(seed, (6 + seed % 9, 8 + seed % 5))
            images[name] = encode(pixels, "PNG") if name == PNG_21K else encode(pixels)
        held = holdout_21k(list(images))
        for name, data in images.items():
            records["validation" if name in held else "train"].append({"image": data, "label": label_of[wnid]})
        class_tars[f"{wnid}.tar"] = tar(images)
    data = tar(class_tars)
    path = directory / filename
    path.write_bytes(gzip.compress(data, mtime=0) if filename.endswith(".gz") else data)
    return Miniature({filename: path}, records)
