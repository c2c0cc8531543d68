"""AN4 recipe: the miniature converts exactly, nothing published is claimed, malformed input named."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from thresher.conversion.convert import validate
from thresher.errors import MalformedDataError
from thresher.recipe import BadRecord, Miniature
from thresher.recipes.an4 import ARCHIVE, RECIPE
from thresher.sources.archive import iter_tar

TRAIN_IDS = "an4/etc/an4_train.fileids"
TRAIN_TEXT = "an4/etc/an4_train.transcription"


@pytest.fixture
def mini(tmp_path: Path) -> Miniature:
    return RECIPE.write_miniature(tmp_path)


def read_tar(path: Path) -> dict[str, bytes]:
    return {m.name: m.read() for m in iter_tar(path)}


def rewrite(mini: Miniature, change: dict[str, bytes | None]) -> dict[str, Path]:
    """The miniature archive with members replaced (or removed, for None), as a new .tar.gz."""
    members = read_tar(mini.files[ARCHIVE])
    for name, data in change.items():
        if data is None:
            del members[name]
        else:
            members[name] = data
    path = mini.files[ARCHIVE].parent / "broken" / ARCHIVE
    path.parent.mkdir(exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return {ARCHIVE: path}


def text_lines(mini: Miniature, name: str) -> list[str]:
    return read_tar(mini.files[ARCHIVE])[name].decode().splitlines()


def joined(lines: list[str]) -> bytes:
    return "".join(f"{line}\n" for line in lines).encode()


# -- the miniature converts exactly ----------------------------------------------------------------


def test_miniature_records_match_exactly(mini: Miniature) -> None:
    assert set(mini.records) == {"train", "test"}
    for split in RECIPE.split_names:
        got = list(RECIPE.records(split, mini.files))
        expected = mini.records[split]
        assert len(got) == len(expected) >= 3
        for record, want in zip(got, expected, strict=True):
            assert not isinstance(record, BadRecord), record
            audio = record["audio"]
            assert audio.dtype == np.int16 and audio.dtype.isnative and audio.ndim == 1
            assert np.array_equal(audio, want["audio"])
            assert record["sample_rate"] == want["sample_rate"] == 16000
            assert record["transcript"] == want["transcript"]
            assert record["speaker"] == want["speaker"]
            assert record["__where__"].startswith(f"{ARCHIVE}:an4/wav/")
            assert validate(dict(record), RECIPE.schema, record["__where__"]) is None
        assert len({r["speaker"] for r in got}) >= 2


def test_records_follow_fileids_order_and_read_big_endian(mini: Miniature) -> None:
    members = read_tar(mini.files[ARCHIVE])
    for split in ("train", "test"):
        fileids = members[f"an4/etc/an4_{split}.fileids"].decode().split()
        assert fileids != sorted(fileids), "miniature fileids should not be in archive order"
        got = list(RECIPE.records(split, mini.files))
        assert [r["__where__"] for r in got] == [f"{ARCHIVE}:an4/wav/{f}.raw" for f in fileids]
        assert [r["speaker"] for r in got] == [f.split("/")[1] for f in fileids]
        for fileid, record in zip(fileids, got, strict=True):
            raw = members[f"an4/wav/{fileid}.raw"]
            assert record["audio"].tolist() == [int.from_bytes(raw[i:i + 2], "big", signed=True)
                                                for i in range(0, len(raw), 2)]


def test_miniature_is_in_the_published_layout(mini: Miniature) -> None:
    assert mini.files[ARCHIVE].read_bytes()[:2] == b"\x1f\x8b"
    names = list(read_tar(mini.files[ARCHIVE]))
    assert all(n.startswith("an4/") for n in names)
    for name in ("an4/etc/an4_train.fileids", "an4/etc/an4_train.transcription", "an4/etc/an4_test.fileids",
                 "an4/etc/an4_test.transcription", "an4/etc/an4.dic"):
        assert name in names
    assert any(n.startswith("an4/wav/an4_clstk/") for n in names)
    assert any(n.startswith("an4/wav/an4test_clstk/") for n in names)
    train_line = text_lines(mini, TRAIN_TEXT)[0]
    assert train_line == "<s> RUBOUT G M E F THREE NINE </s> (an251-fash-b)"
    assert mini.records["train"][0]["transcript"] == "RUBOUT G M E F THREE NINE"
    everything = np.concatenate([r["audio"] for split in mini.records.values() for r in split])
    assert everything.min() == -32768 and everything.max() == 32767 and (everything < 0).mean() > 0.2
    assert {len(r["audio"]) % 2 for split in mini.records.values() for r in split} == {0, 1}


# -- published facts -------------------------------------------------------------------------------


def test_published_metadata_claims_no_checksum() -> None:
    (source,) = RECIPE.sources
    assert source.filename == "an4_raw.bigendian.tar.gz"
    assert source.urls == ("http://www.speech.cs.cmu.edu/databases/an4/an4_raw.bigendian.tar.gz",)
    assert (source.size, source.sha256, source.md5) == (None, None, None)
    assert not source.has_published_checksum and RECIPE.download_size is None
    assert source.checksum_source.startswith("none published") and "first download" in source.checksum_source
    assert [(s.name, s.num_records) for s in RECIPE.splits] == [("train", 948), ("test", 130)]
    assert RECIPE.schema.names == ("audio", "sample_rate", "transcript", "speaker")
    assert [f.kind for f in RECIPE.schema] == ["audio", "int", "str", "str"]
    assert RECIPE.schema["audio"].encoding == "raw"
    assert RECIPE.default_codec == "tensorprotos"
    assert RECIPE.homepage == "http://www.speech.cs.cmu.edu/databases/an4/"
    assert RECIPE.license == "not stated by the publisher"
    assert "948" in RECIPE.description and "130" in RECIPE.description and "16 kHz" in RECIPE.description
    assert "Acero" in RECIPE.citation and RECIPE.citation.count("{") == RECIPE.citation.count("}")


# -- malformed input -------------------------------------------------------------------------------


def test_odd_byte_count_is_a_bad_record_naming_the_member(mini: Miniature) -> None:
    fileid = text_lines(mini, TRAIN_IDS)[1]
    member = f"an4/wav/{fileid}.raw"
    files = rewrite(mini, {member: read_tar(mini.files[ARCHIVE])[member] + b"\x01"})
    got = list(RECIPE.records("train", files))
    assert isinstance(got[1], BadRecord)
    assert got[1].source == ARCHIVE and got[1].where == member and "16-bit" in got[1].problem
    assert f"{ARCHIVE} ({member})" in str(got[1].error())
    for i in (0, 2, 3):
        assert np.array_equal(got[i]["audio"], mini.records["train"][i]["audio"])


@pytest.mark.parametrize(
    "line",
    [
        "RUBOUT G M E F THREE NINE (an86-mblw-b)",  # no <s> ... </s>
        "<s> ENTER FOUR FIVE </s>",  # no utterance id
        "<s> ENTER FOUR FIVE </s> (cen3-mblw-b",  # unclosed
        "<s> ENTER </s> FOUR </s> (cen3-mblw-b)",  # stray marker
    ],
)
def test_transcription_line_that_does_not_parse_names_the_line(mini: Miniature, line: str) -> None:
    lines = text_lines(mini, TRAIN_TEXT)
    lines[1] = line
    got = list(RECIPE.records("train", rewrite(mini, {TRAIN_TEXT: joined(lines)})))
    assert isinstance(got[1], BadRecord)
    assert got[1].where == f"{TRAIN_TEXT} line 2"
    assert not any(isinstance(r, BadRecord) for i, r in enumerate(got) if i != 1)


def test_transcript_id_that_does_not_match_its_fileid(mini: Miniature) -> None:
    lines = text_lines(mini, TRAIN_TEXT)
    lines[2] = "<s> P I T T S B U R G H </s> (cen8-fash-b)"
    got = list(RECIPE.records("train", rewrite(mini, {TRAIN_TEXT: joined(lines)})))
    assert isinstance(got[2], BadRecord)
    assert got[2].where == f"{TRAIN_TEXT} line 3" and "cen8-fash-b" in got[2].problem
    assert "cen7-fash-b" in got[2].problem


def test_speaker_folder_and_utterance_id_must_agree(mini: Miniature) -> None:
    fileids = text_lines(mini, TRAIN_IDS)
    lines = text_lines(mini, TRAIN_TEXT)
    old = fileids[0]
    fileids[0] = "an4_clstk/fbbh/an251-fash-b"
    members = {TRAIN_IDS: joined(fileids), TRAIN_TEXT: joined(lines),
               f"an4/wav/{fileids[0]}.raw": read_tar(mini.files[ARCHIVE])[f"an4/wav/{old}.raw"]}
    got = list(RECIPE.records("train", rewrite(mini, members)))
    assert isinstance(got[0], BadRecord) and got[0].where == f"{TRAIN_TEXT} line 1" and "fbbh" in got[0].problem


def test_fileid_without_transcript_line(mini: Miniature) -> None:
    lines = text_lines(mini, TRAIN_TEXT)[:-1]
    got = list(RECIPE.records("train", rewrite(mini, {TRAIN_TEXT: joined(lines)})))
    assert len(got) == len(mini.records["train"])
    last = got[-1]
    assert isinstance(last, BadRecord) and last.where == f"{TRAIN_IDS} line {len(got)}"
    assert "no line" in last.problem and TRAIN_TEXT in last.problem


def test_fileid_without_audio_member(mini: Miniature) -> None:
    fileid = text_lines(mini, TRAIN_IDS)[3]
    member = f"an4/wav/{fileid}.raw"
    got = list(RECIPE.records("train", rewrite(mini, {member: None})))
    assert isinstance(got[3], BadRecord) and got[3].where == member and "missing" in got[3].problem
    assert f"{TRAIN_IDS} line 4" in got[3].problem


def test_blank_lines_and_crlf_are_tolerated_and_counted(mini: Miniature) -> None:
    lines = text_lines(mini, TRAIN_TEXT)
    lines.insert(0, "")
    lines[2] = "<s> ENTER FOUR FIVE </s> (wrong-mblw-b)"
    text = "".join(f"{line}\r\n" for line in lines).encode()
    got = list(RECIPE.records("train", rewrite(mini, {TRAIN_TEXT: text})))
    assert got[0]["transcript"] == "RUBOUT G M E F THREE NINE"
    assert isinstance(got[1], BadRecord) and got[1].where == f"{TRAIN_TEXT} line 3"


@pytest.mark.parametrize("missing", [TRAIN_IDS, TRAIN_TEXT])
def test_missing_list_is_malformed_data_naming_archive_and_member(mini: Miniature, missing: str) -> None:
    with pytest.raises(MalformedDataError) as caught:
        list(RECIPE.records("train", rewrite(mini, {missing: None})))
    assert ARCHIVE in str(caught.value) and missing in str(caught.value)
    # The other split does not need it.
    assert len(list(RECIPE.records("test", rewrite(mini, {missing: None})))) == len(mini.records["test"])


def test_more_transcripts_than_fileids_is_malformed(mini: Miniature) -> None:
    lines = text_lines(mini, TRAIN_TEXT) + ["<s> YES </s> (an99-fash-b)"]
    with pytest.raises(MalformedDataError, match=f"{TRAIN_TEXT} line {len(lines)}"):
        list(RECIPE.records("train", rewrite(mini, {TRAIN_TEXT: joined(lines)})))


def test_non_ascii_list_is_malformed_naming_the_line(mini: Miniature) -> None:
    data = joined(text_lines(mini, TRAIN_IDS)[:2]) + b"an4_clstk/fash/\xff\n"
    with pytest.raises(MalformedDataError, match=f"{TRAIN_IDS} line 3"):
        list(RECIPE.records("train", rewrite(mini, {TRAIN_IDS: data})))


def test_locate_names_the_fileids_line() -> None:
    assert RECIPE.locate("test", 0) == f"{ARCHIVE}:an4/etc/an4_test.fileids fileid 1"
