"""CelebA: 202,599 aligned and cropped face photos with 40 binary attributes, identity and 5 landmarks.

``img_align_celeba.zip`` holds ``img_align_celeba/000001.jpg`` ... ``202599.jpg`` (178x218
JPEGs, stored as published, never re-encoded). The annotations are space-separated text:
``list_eval_partition.txt`` (``<image> <0|1|2>``: train, validation, test) gives the splits;
``identity_CelebA.txt`` (``<image> <identity>``); ``list_attr_celeba.txt`` (a count line, a line
of the 40 attribute names, then ``<image>`` and 40 values of -1 or 1);
``list_landmarks_align_celeba.txt`` (a count line, a line of 10 column names, then ``<image>`` and
10 pixel coordinates). The bounding boxes the publisher also ships describe the in-the-wild
photos, not these crops, so they are not downloaded.

Every file sits on Google Drive, which often refuses scripted downloads (quota); the download
screen then says which files to fetch in a browser and where to put them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from thresher.errors import MalformedDataError
from thresher.features import ClassLabel, Image, Integer, Schema, Tensor
from thresher.published import Contents, Count
from thresher.recipe import WHERE, BadRecord, Input, Miniature, Recipe, Record, Source, Split
from thresher.sources.extent import Extent, head

if TYPE_CHECKING:
    from thresher.sources.ziparchive import ZipMemberRef

IMAGES = "img_align_celeba.zip"
ATTRIBUTES = "list_attr_celeba.txt"
IDENTITIES = "identity_CelebA.txt"
LANDMARKS = "list_landmarks_align_celeba.txt"
PARTITION = "list_eval_partition.txt"
FOLDER = "img_align_celeba/"
DRIVE = "https://drive.google.com/uc?export=download&id="
PUBLISHED = "md5: torchvision celeba.py; size+sha256: TFDS celeb_a/checksums.tsv"
NUM_IMAGES = 202599
ZIP_BYTES = 1443490838
# No unpacked size is published; JPEGs barely compress, so the zip's own size stands in for it.
CONTENTS = Contents(total_size=ZIP_BYTES, members=NUM_IMAGES + 1)
LIMITS = CONTENTS.limits(max_member_size=16 << 20, max_read_size=16 << 20)

ATTRIBUTE_NAMES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open",
    "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)
LANDMARK_COLUMNS = ("lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y",
                    "leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y")
SPLIT_CODES = {"train": "0", "validation": "1", "test": "2"}


def member_name(image: str) -> str:
    """The zip member holding ``image`` (a name as the text files give it, e.g. ``000001.jpg``)."""
    return FOLDER + image


def _drive(filename: str, file_id: str, size: int, md5: str, sha256: str, contents: Contents | None = None
           ) -> Source:
    return Source(filename, (DRIVE + file_id,), size=size, md5=md5, sha256=sha256, checksum_source=PUBLISHED,
                  contents=contents)


@dataclass(frozen=True)
class _Image:
    """What one input needs, gathered in the main process: small and picklable."""

    image: str
    place: Extent | ZipMemberRef | None  # None: the zip lacks it
    attributes: bytes  # 40 values of 0 or 1
    identity: int
    landmarks: tuple[int, ...]  # 10: x, y of each point in LANDMARK_COLUMNS order


class CelebA(Recipe):
    name = "celeba"
    version = "1.0.0"
    title = "CelebFaces Attributes (CelebA), aligned and cropped"
    description = ("202,599 face photos of 10,177 celebrities, aligned on the eyes and cropped to 178x218, each "
                   "with 40 binary attributes, the person's identity number and 5 landmarks (eyes, nose, mouth "
                   "corners) in the aligned image. Splits as the publisher's list_eval_partition.txt gives them. "
                   "Images are the published JPEGs; attributes are 1 where the file says 1 and 0 where it "
                   "says -1.")
    homepage = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
    license = "non-commercial research and educational use only (the CelebA agreement on the homepage)"
    citation = ("@inproceedings{liu2015faceattributes, title={Deep Learning Face Attributes in the Wild}, "
                "author={Liu, Ziwei and Luo, Ping and Wang, Xiaogang and Tang, Xiaoou}, booktitle={Proceedings "
                "of International Conference on Computer Vision (ICCV)}, month={December}, year={2015}}")
    sources = (
        _drive(IMAGES, "0B7EVK8r0v71pZjFTYXZWM3FlRnM", ZIP_BYTES, "00d2c5bc6d35e252742224ab0c1e8fcb",
               "46fb89443c578308acf364d7d379fe1b9efb793042c0af734b6112e4fd3a8c74", contents=CONTENTS),
        _drive(ATTRIBUTES, "0B7EVK8r0v71pblRyaVFSWGxPY0U", 26721026, "75e246fa4810816ffd6ee81facbd244c",
               "f0e5da289d5ccf75ffe8811132694922b60f2af59256ed362afa03fefba324d0"),
        _drive(IDENTITIES, "1_ee_0u7vcNLOfNLegJRHmolfH5ICW-XS", 3424458, "32bd1bd63d3c78cd57e08160ec5ed1e2",
               "c6143857c3e2630ac2da9f782e9c1232e5e59be993a9d44e8a7916c78a6158c0"),
        _drive(LANDMARKS, "0B7EVK8r0v71pd0FJY3Blby1HUTQ", 12156055, "cc24ecafdb5b50baae59b03474781f8c",
               "6c02a87569907f6db2ba99019085697596730e8129f67a3d61659f198c48d43b"),
        _drive(PARTITION, "0B7EVK8r0v71pY0NSMzRuSXJEVkk", 2836386, "d32c9cbf5e040fd4025c592c306e6668",
               "fc955bcb3ef8fbdf7d5640d9a8693a8431b5f2ee291a5c1449a1549e7e073fe7"),
    )
    splits = (
        Split("train", 162770, f"{PARTITION} value 0"),
        Split("validation", 19867, f"{PARTITION} value 1"),
        Split("test", 19962, f"{PARTITION} value 2"),
    )
    schema = Schema((
        Image("image", encoding="jpeg", description="the published aligned-and-cropped JPEG bytes, 178x218"),
        ClassLabel("attributes", names=ATTRIBUTE_NAMES, multi=True,
                   description=f"the 40 attributes of {ATTRIBUTES} in its order: 1 for 1, 0 for -1"),
        Integer("identity", minimum=1, description=f"the person's number in {IDENTITIES}"),
        Tensor("landmarks", shape=(5, 2), dtype="int32",
               description="(x, y) pixels in the aligned image of: left eye, right eye, nose, left mouth "
                           f"corner, right mouth corner ({LANDMARKS})"),
    ))
    channel_order = "BGR"  # photos, as convert_imageset writes them
    manual_instructions = (
        "Google Drive often refuses scripted downloads of these files ('quota exceeded', or a sign-in page). "
        "Open each link below in a browser signed in to a Google account and save the file under the name "
        "shown (the homepage also links a Baidu copy)."
    )

    def inputs(self, split: str, files: Mapping[str, Path]) -> list[Input]:
        """One input per image of the split, in partition-file order.

        The zip's directory says where each JPEG lies (a stored one by its extent, a deflated one
        by name), so a worker reads its image without the others; the annotations travel in
        the input itself.
        """
        from thresher.sources.ziparchive import locate_zip_members
        images = read_partition(files[PARTITION])[split]
        attributes = read_table(files[ATTRIBUTES], ATTRIBUTES, header=ATTRIBUTE_NAMES, values=(-1, 1))
        identities = read_table(files[IDENTITIES], IDENTITIES, header=None, minimum=1)
        landmarks = read_table(files[LANDMARKS], LANDMARKS, header=LANDMARK_COLUMNS, minimum=0)
        places = locate_zip_members(files[IMAGES], limits=LIMITS, label=IMAGES)
        tables = {ATTRIBUTES: attributes, IDENTITIES: identities, LANDMARKS: landmarks}
        return [Input(member_name(image), 1, _entry(image, tables, places)) for image in images]

    def read(self, split: str, files: Mapping[str, Path], part: Input) -> Iterator[Record | BadRecord]:
        import numpy as np
        entry = part.where
        if isinstance(entry, BadRecord):
            yield entry
            return
        assert isinstance(entry, _Image)
        member = member_name(entry.image)
        if entry.place is None:
            yield BadRecord(IMAGES, member, f"image listed in {PARTITION} is missing from the archive")
            return
        data: bytes | Extent = entry.place if isinstance(entry.place, Extent) else entry.place.read()
        start = head(data, 8)
        if not start.startswith(b"\xff\xd8"):
            yield BadRecord(IMAGES, member, f"not a JPEG file (starts with {start.hex(' ') or 'nothing'})")
            return
        yield {
            "image": data,
            "attributes": np.frombuffer(entry.attributes, np.uint8).copy(),
            "identity": entry.identity,
            "landmarks": np.array(entry.landmarks, np.int32).reshape(5, 2),
            WHERE: f"{IMAGES}:{member}",
        }

    def stated_counts(self, split: str, files: Mapping[str, Path]) -> list[Count]:
        """How many images list_eval_partition.txt puts in the split."""
        images = read_partition(files[PARTITION])[split]
        return [Count(PARTITION, f"value {SPLIT_CODES[split]}", "images", len(images))]

    def locate(self, split: str, index: int) -> str:
        return f"{IMAGES} image number {index} of {split} in {PARTITION}"

    def write_miniature(self, directory: Path) -> Miniature:
        """Twelve 178x218 JPEGs in a zip (deflated and stored members, directory first) and the four
        text files as the publisher formats them: padded columns, a count line, a header line."""
        import io
        import zipfile

        import numpy as np
        from PIL import Image as PILImage

        from thresher.miniature import drawn_image

        rng = np.random.default_rng(202599)
        count = 12
        names = [f"{i:06d}.jpg" for i in range(1, count + 1)]
        codes = [0] * 6 + [1] * 3 + [2] * 3  # id order, train first, as published
        attributes = rng.choice([-1, 1], size=(count, len(ATTRIBUTE_NAMES)))
        attributes[0, :] = -1
        attributes[1, :] = 1
        identities = rng.integers(1, 10178, size=count)
        identities[3] = identities[0]  # one person, two photos
        points = np.stack([rng.integers(60, 80, count), rng.integers(105, 115, count),
                           rng.integers(100, 115, count), rng.integers(105, 115, count),
                           rng.integers(80, 100, count), rng.integers(125, 145, count),
                           rng.integers(65, 80, count), rng.integers(148, 156, count),
                           rng.integers(100, 112, count), rng.integers(148, 156, count)], axis=1)
        jpegs = []
        for i, identity in enumerate(identities):
            shade = (40 + int(identity) % 200, 90, 200 - int(identity) % 150)
            pixels = drawn_image(str(i + 1), (218, 178), background=shade, noise=25, seed=i)
            buffer = io.BytesIO()
            PILImage.fromarray(pixels, "RGB").save(buffer, "JPEG", quality=80 + i)
            jpegs.append(buffer.getvalue())

        zip_path = directory / IMAGES
        with zipfile.ZipFile(zip_path, "w") as archive:
            archive.writestr(zipfile.ZipInfo(FOLDER), b"")
            for i in (2, 0, 1, 5, 4, 3, 8, 6, 7, 11, 9, 10):  # not partition order
                method = zipfile.ZIP_STORED if i % 4 == 1 else zipfile.ZIP_DEFLATED
                archive.writestr(zipfile.ZipInfo(member_name(names[i]), (2015, 10, 1, 12, 0, 0)), jpegs[i],
                                 compress_type=method)

        def padded(values: Sequence[int], width: int) -> str:  # as published: "-1  1  1", "69  109   77"
            return str(int(values[0])) + "".join(f" {int(v):>{width}}" for v in values[1:])

        text = {
            PARTITION: "".join(f"{n} {c}\r\n" for n, c in zip(names, codes, strict=True)),
            IDENTITIES: "".join(f"{n} {int(p)}\r\n" for n, p in zip(names, identities, strict=True)),
            ATTRIBUTES: f"{count}\r\n" + " ".join(ATTRIBUTE_NAMES) + " \r\n"
            + "".join(f"{n} {padded(a, 2)}\r\n" for n, a in zip(names, attributes, strict=True)),
            LANDMARKS: f"{count}\r\n" + " ".join(LANDMARK_COLUMNS) + " \r\n"
            + "".join(f"{n} {padded(p, 4)}\r\n" for n, p in zip(names, points, strict=True)),
        }
        files = {IMAGES: zip_path}
        for filename, content in text.items():
            (directory / filename).write_bytes(content.encode("ascii"))
            files[filename] = directory / filename

        records: dict[str, list[Record]] = {split: [] for split in SPLIT_CODES}
        by_code = {int(code): split for split, code in SPLIT_CODES.items()}
        for i in range(count):
            records[by_code[codes[i]]].append({
                "image": jpegs[i],
                "attributes": (attributes[i] == 1).astype(np.uint8),
                "identity": int(identities[i]),
                "landmarks": points[i].astype(np.int32).reshape(5, 2),
            })
        return Miniature(files, records)


def _entry(image: str, tables: Mapping[str, Mapping[str, tuple[int, ...] | BadRecord]],
           places: Mapping[str, Extent | ZipMemberRef]) -> _Image | BadRecord:
    """What reading ``image`` needs, or why it cannot be read: the first file (in source order) without
    a usable line for it."""
    for source, table in tables.items():
        row = table.get(image)
        if row is None:
            return BadRecord(source, f"image {image}", f"no line for this image, which {PARTITION} lists")
        if isinstance(row, BadRecord):
            return row
    attributes, (identity,), landmarks = (tables[name][image] for name in (ATTRIBUTES, IDENTITIES, LANDMARKS))
    return _Image(image, places.get(member_name(image)), bytes(1 if v == 1 else 0 for v in attributes),  # type: ignore[union-attr]
                  identity, landmarks)  # type: ignore[arg-type]


def _lines(path: Path, source: str) -> Iterator[tuple[int, list[str]]]:
    """(1-based line number, whitespace-separated fields) of each non-blank line."""
    try:
        with open(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                try:
                    text = raw.decode("ascii")
                except UnicodeDecodeError:
                    raise MalformedDataError(source, f"line {number}",
                                             "is not plain text (an HTML page or a binary file?)") from None
                fields = text.split()
                if fields:
                    yield number, fields
    except OSError as exc:
        raise MalformedDataError(source, "", f"cannot be read ({exc.strerror or exc})") from None


def read_partition(path: Path) -> dict[str, list[str]]:
    """Image names per split, in file order. A bad line makes the split lists untrustworthy: it raises."""
    splits: dict[str, list[str]] = {split: [] for split in SPLIT_CODES}
    by_code = {code: split for split, code in SPLIT_CODES.items()}
    seen: set[str] = set()
    for number, fields in _lines(path, PARTITION):
        if len(fields) != 2 or fields[1] not in by_code or not fields[0].lower().endswith(".jpg"):
            raise MalformedDataError(PARTITION, f"line {number}",
                                     f"expected '<image>.jpg <0|1|2>', found {' '.join(fields)[:80]!r}")
        if fields[0] in seen:
            raise MalformedDataError(PARTITION, f"line {number}", f"image {fields[0]} is listed twice")
        seen.add(fields[0])
        splits[by_code[fields[1]]].append(fields[0])
    if not seen:
        raise MalformedDataError(PARTITION, "", "lists no images (empty file?)")
    return splits


def read_table(path: Path, source: str, *, header: tuple[str, ...] | None, values: tuple[int, ...] | None = None,
               minimum: int | None = None) -> dict[str, tuple[int, ...] | BadRecord]:
    """``<image> <int> ...`` lines by image; a bad line becomes a BadRecord for that image only.

    With ``header``, the file starts with a count line and a line of these column names
    (checked: a file with other columns would put values under the wrong names).
    """
    columns = len(header) if header is not None else 1
    table: dict[str, tuple[int, ...] | BadRecord] = {}
    lines = _lines(path, source)
    if header is not None:
        first = next(lines, None)
        if first is None or len(first[1]) != 1 or not first[1][0].isdigit():
            where = f"line {first[0]}" if first else "line 1"
            raise MalformedDataError(source, where, "expected the image count on the first line")
        second = next(lines, None)
        if second is None or tuple(second[1]) != header:
            where = f"line {second[0]}" if second else "line 2"
            found = " ".join(second[1])[:120] if second else "nothing"
            raise MalformedDataError(source, where, f"expected the {columns} column names "
                                                    f"{' '.join(header[:3])} ..., found {found!r}")
    for number, fields in lines:
        image = fields[0]
        problem = _row_problem(fields[1:], columns, values, minimum)
        if problem:
            table[image] = BadRecord(source, f"line {number} (image {image})", problem)
        elif image in table:
            table[image] = BadRecord(source, f"line {number} (image {image})", "a second line for this image")
        else:
            table[image] = tuple(int(v) for v in fields[1:])
    return table


def _row_problem(fields: list[str], columns: int, values: tuple[int, ...] | None, minimum: int | None) -> str:
    if len(fields) != columns:
        return f"expected {columns} values after the image name, found {len(fields)}"
    for at, text in enumerate(fields, 1):
        try:
            value = int(text)
        except ValueError:
            return f"value {at} is {text[:20]!r}, not an integer"
        if values is not None and value not in values:
            return f"value {at} is {value}, not one of {', '.join(map(str, values))}"
        if minimum is not None and value < minimum:
            return f"value {at} is {value}, below {minimum}"
    return ""


RECIPE = CelebA()
