"""LSUN scenes: ten scene categories, each published as zips holding an LMDB of encoded photos.

``<category>_<train|val>_lmdb.zip`` holds ``<category>_<train|val>_lmdb/data.mdb`` (and
``lock.mdb``); each record's key is the image id (40 hex digits) and its value the image file,
JPEG by the README but WebP in some copies, so the bytes are sniffed, never assumed. An LMDB
cannot be read inside a zip: ``data.mdb`` is extracted next to the download (atomically, re-used
on later runs) and read by thresher's own bounds-checked page walker, not liblmdb.

Inputs: runs of consecutive leaf pages of the LMDB's B-tree, listed from the branch pages and
leaf headers alone, so each worker or Dask task reads only its own pages. Records come in key
order, as liblmdb iterates. ``lsun/all`` chains the ten categories (label = category) and adds
the unlabelled test set, whose records keep their image id for challenge submissions.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from thresher.features import ClassLabel, Image, Schema, Text
from thresher.recipe import WHERE, BadRecord, Input, Miniature, Recipe, Record, Source, Split, Variant
from thresher.sources.archive import Limits

CATEGORIES = ("bedroom", "bridge", "church_outdoor", "classroom", "conference_room", "dining_room", "kitchen",
              "living_room", "restaurant", "tower")  # alphabetical, as torchvision and TFDS number them
BASE = "http://dl.yf.io/lsun/scenes/"
PUBLISHED = "size+sha256: TFDS url_checksums/lsun.txt (no md5 is published)"
TEST_ZIP = "test_lmdb.zip"
# (size, sha256) of each zip as TFDS publishes them.
ZIPS = {
    "bedroom_train_lmdb.zip": (45922737680, "a15644c2e7153106867f0adb3491fc41224102d1f01b24494fb47d9f5d1f174e"),
    "bedroom_val_lmdb.zip": (4670661, "5d022e781b241c25ec2e1f1f769afcdb8091d7fd58362667aec03137b8114b12"),
    "bridge_train_lmdb.zip": (16478644518, "2701b2d421bbc4d8a5e9b0652ff7c3b57cd6495da8e0e85c39533275b5a925a3"),
    "bridge_val_lmdb.zip": (6176834, "83216a2974d6068c2e1d18086006e7380ff58540216f955ce87fe049b460cb0d"),
    "church_outdoor_train_lmdb.zip": (2448463466,
                                      "91128ae026840ac0c5982b4445ab5fc4e092d6847cca76793b2b1a0815c2e74a"),
    "church_outdoor_val_lmdb.zip": (5957308, "34635b7547a3e51a15f942a4a4082dd6bc9cca381a953515cb2275c0eed50584"),
    "classroom_train_lmdb.zip": (3279497022, "73a8a3e318819e1cc602f229673c3f51a68f3ece61e3764ce22df6abea4d0873"),
    "classroom_val_lmdb.zip": (5880261, "5e0e9a375d94091dfe1fa3be87d4a92f41c03f1c0b8e376acc7e05651de512d7"),
    "conference_room_train_lmdb.zip": (4048461633,
                                       "fa0a4cf72e7acfb103392eaf33640d5508a728e971f31877b01d64e1bde6068c"),
    "conference_room_val_lmdb.zip": (5316084, "927c94df52e10b9b374748c2b83b28b5860e946b3186dfd587985e274834650f"),
    "dining_room_train_lmdb.zip": (11592966936, "e4ee24c7c309360c3bf019123ce5bbf17434b2ba33abec2b0b07cfae715a52cb"),
    "dining_room_val_lmdb.zip": (5301030, "bd604d4b91bb5a9611d4e0b85475efd20758390d1a4eb57b53973fcbb5aa8ab6"),
    "kitchen_train_lmdb.zip": (35791384987, "b1993cf639aece5d207a27eb9ff872bcca9dff6472d8227a052c79d40ee753c4"),
    "kitchen_val_lmdb.zip": (4867891, "329165f35ec61c4cf49f809246de300b8baad3ffcbda1ac30c27bdd32c84369a"),
    "living_room_train_lmdb.zip": (22792405188, "bd2c52b812c80f73ce3062a221396d13a52b5cce2f813b4cdf61937651281d7a"),
    "living_room_val_lmdb.zip": (5167755, "30a23d9a3db5414e9c97865f60ffb2ee973bfa658a23dbca7188ea514c97c9fc"),
    "restaurant_train_lmdb.zip": (13489345463, "11a0a924b960cd0900e9b7477d684fb338bd99cc5f72db1caac592e4f497e09a"),
    "restaurant_val_lmdb.zip": (6232385, "efaa7bcb898ad6cb73b07b89fec3a9c670f4622912eea22fab3986c2cf9a1c20"),
    "tower_train_lmdb.zip": (12010237081, "440caec74c9641cb51fd235a5970c8e4931c3af875aeb044a8bcca956e106309"),
    "tower_val_lmdb.zip": (5223709, "7f5257847bc01f4e40d4a1b3e24dd8fcd37063f12ca8cf31e726c2ee0b1ae104"),
}
# No record count is published for LSUN (per category, validation or test). These are as commonly
# quoted for the release (TFDS's catalogue; 300 validation images a category, 10,000 test images),
# shown in progress only: the recipe states no counts (stated_counts stays the default, none), so
# the files' own counts are never compared with them.
TRAIN_COUNTS = {"bedroom": 3033042, "bridge": 818687, "church_outdoor": 126227, "classroom": 168103,
                "conference_room": 229069, "dining_room": 657571, "kitchen": 2212277, "living_room": 1315802,
                "restaurant": 626331, "tower": 708264}
VAL_COUNT = 300  # per category
TEST_COUNT = 10000
SPLIT_WORD = {"train": "train", "validation": "val"}
RECORDS_PER_INPUT = 1024  # an input is the fewest whole leaf pages holding at least this many records
EXTRACTED_SLACK = 64 << 20


def zip_name(category: str, split: str) -> str:
    return f"{category}_{SPLIT_WORD[split]}_lmdb.zip"


def lmdb_member(zip_filename: str) -> str:
    """The data file inside a zip: ``<zip name without .zip>/data.mdb``."""
    return f"{zip_filename.removesuffix('.zip')}/data.mdb"


def sniff(data: bytes) -> str | None:
    """``jpeg`` or ``webp`` from the magic bytes, None for anything else."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _zip_source(filename: str) -> Source:
    size, sha256 = ZIPS[filename]
    return Source(filename, (BASE + filename,), size=size, sha256=sha256, checksum_source=PUBLISHED)


TEST_SOURCE = Source(TEST_ZIP, (BASE + TEST_ZIP,),
                     checksum_source="none published (TFDS lists no test zip); the sha256 of the first download "
                                     "is recorded and verified after")
IMAGE = Image("image", encoding="jpeg or webp", description="the published file bytes (sniffed: JPEG or WebP)")
TEST_SCHEMA = Schema((IMAGE, Text("id", description="the image id (the LMDB key), as submissions name it")))


def _category_variant(category: str) -> Variant:
    return Variant(
        category, f"the {category.replace('_', ' ')} scenes",
        sources=tuple(_zip_source(zip_name(category, split)) for split in SPLIT_WORD),
        splits=(Split("train", TRAIN_COUNTS[category], f"{zip_name(category, 'train')}, in image id order"),
                Split("validation", VAL_COUNT, f"{zip_name(category, 'validation')}, in image id order")),
    )


ALL = Variant(
    "all", "the ten categories one after another (label = category), and the unlabelled test set",
    sources=(*(_zip_source(zip_name(c, s)) for c in CATEGORIES for s in SPLIT_WORD), TEST_SOURCE),
    splits=(Split("train", sum(TRAIN_COUNTS.values()), "every category's train zip, in category order"),
            Split("validation", VAL_COUNT * len(CATEGORIES), "every category's val zip, in category order"),
            Split("test", TEST_COUNT, f"{TEST_ZIP}: no labels; each record keeps its image id", TEST_SCHEMA)),
)


class Lsun(Recipe):
    name = "lsun"
    version = "1.0.0"
    title = "LSUN scenes (Large-scale Scene UNderstanding)"
    description = ("About ten million photos of ten scene categories (bedroom, bridge, church outdoor, classroom, "
                   "conference room, dining room, kitchen, living room, restaurant, tower), labelled by a "
                   "deep-learning-assisted human labelling loop; 300 validation images per category and a "
                   "10,000-image test set without labels. Images are resized so the shorter side is 256 and "
                   "kept as published (JPEG or WebP bytes). Choose a category as lsun/<category>, or lsun/all.")
    homepage = "https://github.com/fyu/lsun"
    license = "not stated by the publisher (the download code is MIT-licensed)"
    citation = ("@article{yu15lsun, title={{LSUN}: Construction of a Large-scale Image Dataset using Deep "
                "Learning with Humans in the Loop}, author={Yu, Fisher and Zhang, Yinda and Song, Shuran and "
                "Seff, Ari and Xiao, Jianxiong}, journal={arXiv preprint arXiv:1506.03365}, year={2015}}")
    variants = (*(_category_variant(c) for c in CATEGORIES), ALL)
    sources = variants[0].sources or ()
    splits = variants[0].splits or ()
    schema = Schema((IMAGE, ClassLabel("label", names=CATEGORIES, description="the scene category")))
    channel_order = "BGR"  # photos, as convert_imageset writes them

    @property
    def categories(self) -> tuple[str, ...]:
        chosen = self.variant or CATEGORIES[0]
        return CATEGORIES if chosen == "all" else (chosen,)

    def zips(self, split: str) -> list[str]:
        return [TEST_ZIP] if split == "test" else [zip_name(c, split) for c in self.categories]

    def inputs(self, split: str, files: Mapping[str, Path]) -> Sequence[Input]:
        """Runs of leaf pages of each zip's LMDB (extracted first, once), zips in category order."""
        from thresher.sources import lmdbfile
        found = []
        for filename in self.zips(split):
            path, label = _extracted(files, filename)
            for part in lmdbfile.parts(path, label, RECORDS_PER_INPUT):
                found.append(Input(f"{label} leaf pages {part.pages[0]}..{part.pages[-1]}", part.records,
                                   (filename, part.pages)))
        return found

    def read(self, split: str, files: Mapping[str, Path], part: Input) -> Iterator[Record | BadRecord]:
        from thresher.sources import lmdbfile
        filename, pages = part.where
        path, label = _extracted(files, filename)
        category = _category(filename)
        for key, value in lmdbfile.items(path, label, pages):
            yield _record(key, value, category, label)

    def write_miniature(self, directory: Path) -> Miniature:
        """Each zip of the variant: a py-lmdb LMDB of small JPEGs and WebPs (one past a page), zipped."""
        files: dict[str, Path] = {}
        records: dict[str, list[Record]] = {split: [] for split in self.split_names}
        for split in self.split_names:
            for number, filename in enumerate(self.zips(split)):
                images = _miniature_images(filename, 3 + (number + len(split)) % 4)
                files[filename] = write_lmdb_zip(directory / filename, lmdb_member(filename), images)
                category = _category(filename)
                records[split] += [_expected(key, value, category) for key, value in sorted(images.items())]
        return Miniature(files, records)


def _category(filename: str) -> int | None:
    """The label of the records of zip ``filename``: its category's index; None for the test zip."""
    if filename == TEST_ZIP:
        return None
    return CATEGORIES.index(filename.rsplit("_", 2)[0])


def _extracted(files: Mapping[str, Path], filename: str) -> tuple[Path, str]:
    """The LMDB data file of zip ``filename``, extracted beside it, and its name for messages."""
    from thresher.sources.extract import extract_member
    archive = files[filename]
    member = lmdb_member(filename)
    cap = archive.stat().st_size * 4 + EXTRACTED_SLACK
    limits = Limits(max_members=16, max_member_size=cap, max_total_size=cap, max_ratio=50.0,
                    basis=" (four times the downloaded zip: photos barely compress)")
    path = extract_member(archive, member, archive.parent / member, limits=limits, label=filename)
    return path, f"{filename}:{member}"


def _record(key: bytes, value: bytes, category: int | None, label: str) -> Record | BadRecord:
    name = key.decode("ascii", "backslashreplace")
    if sniff(value) is None:
        return BadRecord(label, f"key {name}", f"value is neither JPEG nor WebP (starts with {value[:12].hex(' ')})")
    record: Record = {"image": value, WHERE: f"{label} key {name}"}
    if category is None:
        record["id"] = name
    else:
        record["label"] = category
    return record


def _expected(key: bytes, value: bytes, category: int | None) -> Record:
    return {"image": value, "id": key.decode()} if category is None else {"image": value, "label": category}


def _miniature_images(filename: str, count: int) -> dict[bytes, bytes]:
    """``count`` small photos keyed by 40-hex ids: JPEGs and WebPs (by content only), one bigger than a page."""
    import hashlib
    import io

    from PIL import Image as Picture

    from thresher.miniature import drawn_image
    images = {}
    for i in range(count):
        key = hashlib.sha1(f"{filename}/{i}".encode()).hexdigest().encode()
        size = (48, 64) if i else (96, 128)  # the first is noisy enough to need overflow pages
        pixels = drawn_image(str(i), size, background=(30 * i % 256, 90, 200 - 20 * i), noise=40 if not i else 8,
                             seed=len(filename) + i)
        buffer = io.BytesIO()
        Picture.fromarray(pixels, "RGB").save(buffer, "WEBP" if i % 2 else "JPEG", quality=75)
        images[key] = buffer.getvalue()
    return images


def write_lmdb_zip(path: Path, member: str, items: Mapping[bytes, bytes]) -> Path:
    """A zip as LSUN publishes one: ``<name>/`` holding an LMDB written by py-lmdb, and its lock file."""
    import tempfile
    import zipfile

    import lmdb
    with tempfile.TemporaryDirectory() as scratch:
        env = lmdb.open(scratch, map_size=64 << 20, lock=False)
        with env.begin(write=True) as txn:
            for key in sorted(items, key=lambda k: k[::-1]):  # not in key order: LMDB sorts them
                txn.put(key, items[key])
        env.close()
        data = (Path(scratch) / "data.mdb").read_bytes()
    folder = member.rsplit("/", 1)[0]
    with zipfile.ZipFile(path, "w") as archive:
        stamp = (2015, 6, 1, 0, 0, 0)
        archive.writestr(zipfile.ZipInfo(folder + "/", stamp), b"")
        for name, content in ((member, data), (f"{folder}/lock.mdb", bytes(8192))):
            info = zipfile.ZipInfo(name, stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, content)
    return path


RECIPE = Lsun()
