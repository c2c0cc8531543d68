"""AN4 (CMU "census" alphanumeric database): 1,078 short utterances as headerless big-endian PCM.

Everything is in ``an4_raw.bigendian.tar.gz``: ``an4/etc/an4_{train,test}.fileids`` list the
utterances of a split (paths under ``an4/wav/`` without ``.raw``), ``an4_{split}.transcription``
holds one line ``<s> WORDS </s> (utterance-id)`` per fileid in the same order (the Sphinx
training convention), and each ``.raw`` is signed 16-bit big-endian mono PCM at 16 kHz.
Utterance ids are ``<utterance>-<speaker>-<suffix>``, and the speaker is also the fileid's folder.

Each split is one input: the archive is one gzip stream, which cannot be entered in the middle.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from thresher.errors import MalformedDataError
from thresher.features import Audio, Integer, Schema, Text
from thresher.recipe import WHERE, BadRecord, Miniature, Recipe, Record, Source, Split
from thresher.sources.archive import Limits
from thresher.sources.members import Listing, members_in_order

ARCHIVE = "an4_raw.bigendian.tar.gz"
ETC = "an4/etc/"
WAV = "an4/wav/"
SAMPLE_RATE = 16000
# Nothing is published to check the download against, so bound what it may expand to: the real
# archive is ~64 MB of gzip'd PCM (which barely compresses), single utterances are seconds long.
LIMITS = Limits(max_members=100_000, max_member_size=64 << 20, max_total_size=2 << 30,
                max_read_size=64 << 20, max_ratio=50.0)
_LINE = re.compile(r"<s>(?P<words>(?:\s+[^\s<>()]+)*)\s+</s>\s*\((?P<id>[^\s()]+)\)")


def fileids_member(split: str) -> str:
    return f"{ETC}an4_{split}.fileids"


def transcription_member(split: str) -> str:
    return f"{ETC}an4_{split}.transcription"


def audio_member(fileid: str) -> str:
    return f"{WAV}{fileid}.raw"


@dataclass(frozen=True)
class Line:
    """A non-empty line of an etc/ text file, with its 1-based line number for messages."""

    number: int
    text: str


class An4(Recipe):
    name = "an4"
    version = "1.0.0"
    title = "AN4 (CMU census alphanumeric database)"
    description = ("Alphanumeric speech recorded at Carnegie Mellon University circa 1991: speakers spell "
                   "out made-up personal data (names, addresses, phone numbers, dates) and say random "
                   "sequences of control words. 948 train and 130 test utterances (the public release; "
                   "utterances with social security numbers removed), close-talking microphone, 16 kHz "
                   "16-bit linear PCM, with word transcripts and speaker ids.")
    homepage = "http://www.speech.cs.cmu.edu/databases/an4/"
    license = "not stated by the publisher"
    # The CMU README cites the book; it is the published form of Acero's 1990 CMU PhD thesis.
    citation = ("@book{acero1993acoustical, title={Acoustical and Environmental Robustness in Automatic "
                "Speech Recognition}, author={Acero, Alejandro}, publisher={Kluwer Academic Publishers}, "
                "year={1993}}\n"
                "@misc{cmu_an4, title={{AN4}: the {CMU} alphanumeric (census) database}, "
                "author={{Carnegie Mellon University Robust Speech Recognition Group}}, "
                "howpublished={\\url{http://www.speech.cs.cmu.edu/databases/an4/}}}")
    sources = (
        Source(ARCHIVE, ("http://www.speech.cs.cmu.edu/databases/an4/an4_raw.bigendian.tar.gz",),
               size=None, sha256=None, md5=None,
               checksum_source=("none published (the CMU page and README give no md5, sha256 or size); "
                                "the sha256 of the first download is recorded and verified after")),
    )
    splits = (
        Split("train", 948, "an4/etc/an4_train.fileids (wav/an4_clstk)"),
        Split("test", 130, "an4/etc/an4_test.fileids (wav/an4test_clstk)"),
    )
    schema = Schema((
        Audio("audio", description="mono int16 PCM"),
        Integer("sample_rate", minimum=SAMPLE_RATE, maximum=SAMPLE_RATE, description="Hz"),
        Text("transcript", description="the words, without <s> and </s>"),
        Text("speaker", description="speaker id, e.g. fash"),
    ))

    def records(self, split: str, files: Mapping[str, Path]) -> Iterator[Record | BadRecord]:
        """Yield the split in fileids order from one pass over the archive.

        A .tar.gz has no random access and its etc/ lists may come after the audio, so until
        both lists are read every ``.raw`` under ``an4/wav/`` is held (at most the whole
        database's PCM, tens of MB); after that only the ones the fileids list names.
        """
        lists_name, text_name = fileids_member(split), transcription_member(split)
        lines: dict[str, list[Line]] = {}

        def order(lists: Mapping[str, bytes]) -> list[str]:
            fileids, transcripts = _lines(lists[lists_name], lists_name), _lines(lists[text_name], text_name)
            if len(transcripts) > len(fileids):
                extra = transcripts[len(fileids)]
                raise MalformedDataError(ARCHIVE, f"{text_name} line {extra.number}",
                                         f"{len(transcripts)} transcripts for {len(fileids)} fileids in {lists_name}")
            lines.update(fileids=fileids, transcripts=transcripts)
            return [audio_member(fileid.text) for fileid in fileids]

        listing = Listing((lists_name, text_name), order, _is_audio)
        found = members_in_order(files[ARCHIVE], listing, limits=LIMITS, label=ARCHIVE, allow_missing=True)
        for index, member in enumerate(found):
            transcripts = lines["transcripts"]
            line = transcripts[index] if index < len(transcripts) else None
            yield _record(lines["fileids"][index], line, member.read() if member else None, lists_name, text_name)

    def locate(self, split: str, index: int) -> str:
        return f"{ARCHIVE}:{fileids_member(split)} fileid {index + 1}"

    def write_miniature(self, directory: Path) -> Miniature:
        """Seven utterances by four speakers, in the real tree, as a gzip'd tar."""
        import numpy as np

        from thresher.miniature import write_tar
        rng = np.random.default_rng(4)
        utterances = {
            "train": [("an4_clstk/fash/an251-fash-b", "RUBOUT G M E F THREE NINE"),
                      ("an4_clstk/mblw/cen3-mblw-b", "ENTER FOUR FIVE"),
                      ("an4_clstk/fash/cen7-fash-b", "P I T T S B U R G H"),
                      ("an4_clstk/mblw/an86-mblw-b", "YES")],
            "test": [("an4test_clstk/fcaw/an406-fcaw-b", "NO"),
                     ("an4test_clstk/mjgm/cen2-mjgm-b", "TWENTY FIFTEEN"),
                     ("an4test_clstk/fcaw/an410-fcaw-b", "ERASE C Q Q F SEVEN")],
        }
        pcm: dict[str, np.ndarray] = {}
        for index, (fileid, _) in enumerate(u for split in utterances.values() for u in split):
            count = int(rng.integers(300, 1200)) + index  # odd and even lengths
            t = np.arange(count) / SAMPLE_RATE
            wave = 9000 * np.sin(2 * np.pi * (220 + 70 * index) * t) + rng.normal(0, 1500, count)
            samples = wave.clip(-32768, 32767).astype(np.int16)
            samples[:3] = (32767, -32768, -1)  # the extremes and a negative that only its sign byte shows
            pcm[fileid] = samples

        members: dict[str, bytes | None] = dict.fromkeys(
            ("an4", "an4/etc", "an4/wav", "an4/wav/an4_clstk", "an4/wav/an4test_clstk"))
        members[f"{ETC}an4.dic"] = b"ENTER\tEH N T ER\nNO\tN OW\nYES\tY EH S\n"
        members[f"{ETC}an4.filler"] = b"<s>\tSIL\n</s>\tSIL\n<sil>\tSIL\n"
        # Audio listed out of fileids order, the etc/ lists of one split before it and one after.
        members.update(_lists("test", utterances["test"]))
        for split in ("test", "train"):
            for fileid, _ in sorted(utterances[split]):
                members[audio_member(fileid)] = pcm[fileid].astype(">i2").tobytes()
        members.update(_lists("train", utterances["train"]))
        path = write_tar(directory / ARCHIVE, members, compression="gz")

        records = {
            split: [{"audio": pcm[fileid], "sample_rate": SAMPLE_RATE, "transcript": words,
                     "speaker": fileid.split("/")[-2]} for fileid, words in items]
            for split, items in utterances.items()
        }
        return Miniature({ARCHIVE: path}, records)


def _is_audio(name: str) -> bool:
    return name.startswith(WAV) and name.endswith(".raw")


def _lines(data: bytes, name: str) -> list[Line]:
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise MalformedDataError(ARCHIVE, f"{name} line {line}", f"not ASCII text ({exc.reason})") from None
    return [Line(n, s.strip()) for n, s in enumerate(text.splitlines(), 1) if s.strip()]


def _record(fileid: Line, line: Line | None, data: bytes | None, lists_name: str, text_name: str
            ) -> Record | BadRecord:
    """One utterance, or a BadRecord naming the line or member that is wrong."""
    import numpy as np
    at_fileid = f"{lists_name} line {fileid.number}"
    parts = fileid.text.split("/")
    if len(parts) < 2 or not all(parts):
        return BadRecord(ARCHIVE, at_fileid, f"fileid {fileid.text!r} is not <folder>/<speaker>/<utterance id>")
    folder_speaker, utterance = parts[-2], parts[-1]
    if line is None:
        return BadRecord(ARCHIVE, at_fileid, f"fileid {fileid.text!r} has no line in {text_name}")
    at_line = f"{text_name} line {line.number}"
    match = _LINE.fullmatch(line.text)
    if match is None:
        return BadRecord(ARCHIVE, at_line, f"{line.text[:120]!r} is not '<s> WORDS </s> (utterance-id)'")
    if match["id"] != utterance:
        return BadRecord(ARCHIVE, at_line, f"transcript of {match['id']!r} where {lists_name} line "
                                           f"{fileid.number} has {fileid.text!r}")
    fields = utterance.split("-")
    if len(fields) != 3 or fields[1] != folder_speaker:
        return BadRecord(ARCHIVE, at_line, f"utterance id {utterance!r} should be <utterance>-{folder_speaker}-"
                                           f"<suffix> for speaker folder {folder_speaker!r}")
    member = audio_member(fileid.text)
    if data is None:
        return BadRecord(ARCHIVE, member, f"audio for {at_fileid} is missing from the archive")
    if len(data) % 2:
        return BadRecord(ARCHIVE, member, f"{len(data)} bytes is not a whole number of 16-bit samples")
    if not data:
        return BadRecord(ARCHIVE, member, "holds no samples")
    return {
        "audio": np.frombuffer(data, dtype=">i2").astype(np.int16),
        "sample_rate": SAMPLE_RATE,
        "transcript": " ".join(match["words"].split()),
        "speaker": folder_speaker,
        WHERE: f"{ARCHIVE}:{member}",
    }


def _lists(split: str, items: list[tuple[str, str]]) -> dict[str, bytes]:
    """The fileids and transcription members of a miniature split."""
    return {
        fileids_member(split): "".join(f"{fileid}\n" for fileid, _ in items).encode(),
        transcription_member(split): "".join(
            f"<s> {words} </s> ({fileid.split('/')[-1]})\n" for fileid, words in items).encode(),
    }


RECIPE = An4()
