"""Penn Treebank recipe: real lines, hand-worked ids, the vocabulary split, bad input named, end to end."""

from __future__ import annotations

import gzip
import tarfile
from pathlib import Path

import numpy as np
import pytest
from e2e import Mirror
from server import LoopbackServer

import thresher
from thresher.errors import CorruptArchiveError, MalformedDataError
from thresher.miniature import write_tar
from thresher.recipe import BadRecord, Miniature
from thresher.recipes.ptb import ARCHIVE, RECIPE
from thresher.sources.archive import walking_each_tar_once

TRAIN = "./simple-examples/data/ptb.train.txt"
VALID = "./simple-examples/data/ptb.valid.txt"
TEST = "./simple-examples/data/ptb.test.txt"
# The first two lines of ptb.train.txt and the first of ptb.valid.txt and ptb.test.txt, byte for byte:
# a space before the first word and after the last.
REAL_TRAIN = (b" aer banknote berlitz calloway centrust cluett fromstein gitano guterman hydro-quebec ipo kia "
              b"memotec mlx nahb punts rake regatta rubens sim snack-food ssangyong swapo wachter \n"
              b" pierre <unk> N years old will join the board as a nonexecutive director nov. N \n")
REAL_VALID = b" consumers may want to move their telephones a little closer to the tv set \n"
REAL_TEST = b" no it was n't black monday \n"


def write_tgz(path: Path, members: dict[str, bytes]) -> dict[str, Path]:
    """A gzip'd tar (written by tarfile), names as the real archive spells them ("./simple-examples/...")."""
    return {ARCHIVE: write_tar(path, members, compression="gz")}


def split_records(files: dict[str, Path], split: str) -> list:
    return list(RECIPE.records(split, files))


@pytest.fixture
def mini(tmp_path: Path) -> Miniature:
    return RECIPE.write_miniature(tmp_path)


def test_real_lines_give_hand_worked_ids(tmp_path: Path) -> None:
    files = write_tgz(tmp_path / ARCHIVE, {TRAIN: REAL_TRAIN, VALID: REAL_VALID, TEST: REAL_TEST})
    # Counts: <eos> 2 and N 2, every other word once; ties in code-point order ('<' < 'N' < 'a').
    words = ["<eos>", "N", "<unk>", "a", "aer", "as", "banknote", "berlitz", "board", "calloway", "centrust",
             "cluett", "director", "fromstein", "gitano", "guterman", "hydro-quebec", "ipo", "join", "kia",
             "memotec", "mlx", "nahb", "nonexecutive", "nov.", "old", "pierre", "punts", "rake", "regatta",
             "rubens", "sim", "snack-food", "ssangyong", "swapo", "the", "wachter", "will", "years"]
    vocabulary = split_records(files, "vocabulary")
    assert vocabulary == [{"word": word} for word in words]
    first, second = split_records(files, "train")
    assert first["text"] == ("aer banknote berlitz calloway centrust cluett fromstein gitano guterman hydro-quebec "
                             "ipo kia memotec mlx nahb punts rake regatta rubens sim snack-food ssangyong swapo "
                             "wachter")
    assert first["ids"].dtype == np.int32
    assert first["ids"].tolist() == [4, 6, 7, 9, 10, 11, 13, 14, 15, 16, 17, 19, 20, 21, 22, 27, 28, 29, 30, 31, 32,
                                     33, 34, 36, 0]
    assert second["text"] == "pierre <unk> N years old will join the board as a nonexecutive director nov. N"
    assert second["ids"].tolist() == [26, 2, 1, 38, 25, 37, 18, 35, 8, 5, 3, 23, 12, 24, 1, 0]


def test_a_word_missing_from_the_train_vocabulary_is_a_bad_record(tmp_path: Path) -> None:
    files = write_tgz(tmp_path / ARCHIVE, {TRAIN: REAL_TRAIN, VALID: REAL_VALID, TEST: b" the board \n" + REAL_TEST})
    (valid,) = split_records(files, "validation")
    assert isinstance(valid, BadRecord)
    assert (valid.source, valid.where) == (f"{ARCHIVE}:simple-examples/data/ptb.valid.txt", "line 1, word 1")
    assert valid.problem.startswith("'consumers' is not in the vocabulary of ptb.train.txt")
    good, bad = split_records(files, "test")
    assert good["ids"].tolist() == [35, 8, 0] and good["text"] == "the board"
    assert isinstance(bad, BadRecord) and bad.where == "line 2, word 1" and "'no'" in bad.problem


def test_miniature_ids_are_the_hand_worked_ones(mini: Miniature) -> None:
    # train: <eos> 3, the 3, cat 2, sat 2, then once each <unk>, a, dog, mat, on
    words = ["<eos>", "the", "cat", "sat", "<unk>", "a", "dog", "mat", "on"]
    assert [r["word"] for r in split_records(dict(mini.files), "vocabulary")] == words
    test = split_records(dict(mini.files), "test")
    assert [r["ids"].tolist() for r in test] == [[5, 6, 3, 8, 1, 4, 0], [1, 7, 0]]
    for split in RECIPE.split_names:
        got = split_records(dict(mini.files), split)
        want = mini.records[split]
        assert len(got) == len(want) > 0
        if split == "vocabulary":
            assert got == want
            continue
        for record, expected in zip(got, want, strict=True):
            assert record["ids"].dtype == expected["ids"].dtype == np.int32
            assert record["ids"].tolist() == expected["ids"].tolist() and record["text"] == expected["text"]
        assert all(" ".join(words[i] for i in r["ids"]) == f"{r['text']} <eos>" for r in got)  # ids spell the text


def test_miniature_is_in_the_published_layout(mini: Miniature) -> None:
    path = mini.files[ARCHIVE]
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    with tarfile.open(path) as tar:
        names = tar.getnames()
        texts = {name: tar.extractfile(name).read() for name in (TRAIN, VALID, TEST)}  # type: ignore[union-attr]
    assert set(names) >= {TRAIN, VALID, TEST, "./simple-examples/data/ptb.char.train.txt"}
    for text in texts.values():
        lines = text.split(b"\n")
        assert lines[-1] == b"" and all(line.startswith(b" ") and line.endswith(b" ") for line in lines[:-1])


def test_published_metadata() -> None:
    (source,) = RECIPE.sources
    assert source.filename == "simple-examples.tgz"
    assert source.urls == ("http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz",)
    assert (source.size, source.md5, source.sha256) == (34_869_662, None, None)
    assert source.checksum_source.startswith("none published") and not source.manual
    assert [(s.name, s.num_records) for s in RECIPE.splits] == [("train", 42068), ("validation", 3370),
                                                                  ("test", 3761), ("vocabulary", 10000)]
    ids, text = RECIPE.schema
    assert (ids.kind, ids.shape, ids.dtype) == ("tensor", (None,), "int32")
    assert text.kind == "str" and RECIPE.default_codec == "tensorprotos"
    assert list(RECIPE.split_schema("vocabulary").names) == ["word"]
    assert "LDC" in RECIPE.license and "Marcus" in RECIPE.citation and "Mikolov" in RECIPE.citation
    assert RECIPE.citation.count("{") == RECIPE.citation.count("}")


def test_a_missing_text_file_is_named(tmp_path: Path) -> None:
    files = write_tgz(tmp_path / ARCHIVE, {TRAIN: REAL_TRAIN, VALID: REAL_VALID})
    assert len(split_records(files, "validation")) == 1
    with pytest.raises(MalformedDataError, match=r"simple-examples.tgz \(member 'simple-examples/data/ptb.test.txt'\)"):
        split_records(files, "test")


def test_a_line_that_is_not_utf8_is_a_bad_record_naming_line_and_byte(tmp_path: Path) -> None:
    files = write_tgz(tmp_path / ARCHIVE, {TRAIN: REAL_TRAIN + b" the caf\xe9 board \n", VALID: b"", TEST: b""})
    *good, bad = split_records(files, "train")
    assert len(good) == 2 and isinstance(bad, BadRecord)
    assert (bad.source, bad.where) == (f"{ARCHIVE}:simple-examples/data/ptb.train.txt", "line 3, byte 8")
    assert "not UTF-8" in bad.problem
    assert "caf" not in [r["word"] for r in split_records(files, "vocabulary")]  # a bad line counts no words


def test_a_truncated_archive_is_named(tmp_path: Path) -> None:
    files = write_tgz(tmp_path / ARCHIVE, {TRAIN: REAL_TRAIN * 50, VALID: REAL_VALID, TEST: REAL_TEST})
    data = files[ARCHIVE].read_bytes()
    files[ARCHIVE].write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptArchiveError, match="simple-examples.tgz"):
        split_records(files, "train")


def test_a_file_that_is_not_an_archive_is_named(tmp_path: Path) -> None:
    path = tmp_path / ARCHIVE
    path.write_bytes(gzip.compress(REAL_TRAIN))  # the text gzip'd on its own, not a tar of it
    with pytest.raises(MalformedDataError, match="simple-examples.tgz"):
        split_records({ARCHIVE: path}, "train")


def bytes_read() -> int:
    """Everything this process has passed to read() so far (``rchar``): the archive's bytes and any other file's."""
    return int(next(line for line in Path("/proc/self/io").read_text().splitlines()
                    if line.startswith("rchar:")).split()[1])


def test_all_splits_of_one_prepare_read_the_archive_once(tmp_path: Path) -> None:
    """Every split needs train's text; within a prepare the tgz is inflated once for the four splits.

    The texts are random words, so the archive barely compresses and its size dominates what is read;
    train comes last in it, so a walk for train reads all of it.
    """
    rng = np.random.default_rng(7)
    words = np.array([f"w{i}" for i in range(3000)])
    def text(lines: int) -> bytes:
        return "".join(" " + " ".join(rng.choice(words, 20)) + " \n" for _ in range(lines)).encode()
    files = write_tgz(tmp_path / ARCHIVE, {TEST: text(1500), VALID: text(1500), TRAIN: text(20000)})
    size = files[ARCHIVE].stat().st_size
    assert size > 500_000
    splits = ("train", "validation", "test", "vocabulary")
    alone = {split: split_records(files, split) for split in splits}  # outside a prepare: a walk each

    before = bytes_read()
    with walking_each_tar_once():  # what prepare runs its splits in
        together = {split: split_records(files, split) for split in splits}
    read = bytes_read() - before
    assert read < 1.5 * size, f"read {read:,} bytes of a {size:,}-byte archive for {len(splits)} splits"
    for split in splits:
        assert [r["text"] if "text" in r else r["word"] for r in together[split]] == \
            [r["text"] if "text" in r else r["word"] for r in alone[split]]
        assert all(np.array_equal(a["ids"], b["ids"]) for a, b in zip(together[split], alone[split], strict=True)
                   if "ids" in a)


def test_locate_names_the_line() -> None:
    assert RECIPE.locate("validation", 9) == "simple-examples.tgz:simple-examples/data/ptb.valid.txt line 10"
    assert RECIPE.locate("vocabulary", 3) == "vocabulary word 3"


@pytest.mark.parametrize(("fmt", "codec"), [("lmdb", "tensorprotos"), ("minidb", "tensorprotos"), ("hdf5", None)])
def test_a_user_maps_ids_back_to_words_with_the_vocabulary_split(fmt: str, codec: str | None, mirror: Mirror,
                                                                 mirror_server: LoopbackServer, tmp_path: Path) -> None:
    thresher.prepare("ptb", root=tmp_path, mirror=mirror_server.url, offline=True, checksums=mirror.checksums["ptb"],
                     progress=False, format=fmt, codec=codec)
    with thresher.open(tmp_path / "ptb" / fmt / "vocabulary") as vocabulary:
        assert list(vocabulary.schema.names) == ["word"]
        words = [r["word"] for r in vocabulary]
    test = thresher.open(tmp_path / "ptb" / fmt / "test")
    assert [" ".join(words[i] for i in r["ids"]) for r in test] == [f"{r['text']} <eos>" for r in test]
    (batch,) = test.batches(8, shuffle=False)
    assert isinstance(batch["ids"], list) and [b.tolist() for b in batch["ids"]] == [[5, 6, 3, 8, 1, 4, 0], [1, 7, 0]]
