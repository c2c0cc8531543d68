"""Reading an LMDB ``data.mdb`` ourselves, every page bounds-checked, so damage cannot crash the process.

liblmdb trusts the page numbers, offsets and sizes it finds in the file: a truncated file or
one flipped bit makes it read outside its map (SIGBUS, SIGSEGV). Shards are still written by
liblmdb (Caffe, DALI and py-lmdb read them), but thresher reads them here: both meta pages are
checked against each other and the file size, then the B-tree is walked from the root with
every page number, page header, node offset, size and key order checked. The walk yields where
each record's key and value lie, so reads are slices of our own read-only map.

Layout (LMDB data format version 1, 64-bit): every page starts with a 16-byte header (page
number, flags, lower and upper bounds of its free space; an overflow page keeps its page count
where the bounds would be). Pages 0 and 1 hold a meta record each; the one with the higher
transaction id is current. Branch and leaf pages list their nodes' offsets after the header.
A node has an 8-byte header (data size or child page number, flags, key size), then the key,
then the value; a value too big for a leaf page lives on overflow pages, and the node holds
their first page number.

A published LMDB (LSUN's scenes) is read with the same checks, but in parts: :func:`leaf_pages`
lists the leaf pages in key order from a walk of the branch pages and the leaves' headers only,
and :func:`leaf_records` reads the records of any run of them, so each part is entered without
reading what precedes it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

PAGE_HEADER = struct.Struct("<QHHHH")  # page number, pad, flags, lower, upper
HEADER_SIZE = PAGE_HEADER.size
OVERFLOW_PAGES = struct.Struct("<I")  # at offset 12 of an overflow page
META = struct.Struct("<IIQQ")  # magic, version, address, map size
DB = struct.Struct("<IHHQQQQQ")  # pad (page size, in the free DB), flags, depth, branch, leaf, overflow pages, entries, root
META_TAIL = struct.Struct("<QQ")  # last page used, transaction id
NODE = struct.Struct("<HHHH")  # low, high 16 bits of the data size (or child page), flags, key size
PAGE_NUMBER = struct.Struct("<Q")
MAGIC = 0xBEEFC0DE
DATA_VERSION = 1
P_BRANCH, P_LEAF, P_OVERFLOW, P_META = 0x01, 0x02, 0x04, 0x08
F_BIGDATA = 0x01
NO_PAGE = (1 << 64) - 1
MIN_PAGE, MAX_PAGE = 512, 1 << 16
MAX_DEPTH = 64

Damage = Callable[[str], Exception]
Record = tuple[int, int, int, int]  # key offset, key length, value offset, value length


@dataclass(frozen=True)
class Meta:
    page: int
    page_size: int
    txnid: int
    last_page: int
    flags: int
    depth: int
    branch_pages: int
    leaf_pages: int
    overflow_pages: int
    entries: int
    root: int


def read_meta(data: Any, page: int, page_size: int, damage: Damage) -> Meta:
    base = page * page_size
    if len(data) < base + HEADER_SIZE + META.size + 2 * DB.size + META_TAIL.size:
        raise damage(f"{len(data):,} bytes, too short for LMDB meta page {page}")
    number, _, flags, _, _ = PAGE_HEADER.unpack_from(data, base)
    magic, version, _, _ = META.unpack_from(data, base + HEADER_SIZE)
    if number != page or flags != P_META or magic != MAGIC:
        raise damage(f"meta page {page} is not an LMDB meta page (number {number}, flags {flags:#x}, magic {magic:#x})")
    if version != DATA_VERSION:
        raise damage(f"meta page {page} has LMDB data version {version}, expected {DATA_VERSION}")
    free_db = DB.unpack_from(data, base + HEADER_SIZE + META.size)
    main_flags, depth, branch, leaf, overflow, entries, root = DB.unpack_from(data, base + HEADER_SIZE + META.size
                                                                             + DB.size)[1:]
    last_page, txnid = META_TAIL.unpack_from(data, base + HEADER_SIZE + META.size + 2 * DB.size)
    return Meta(page, free_db[0], txnid, last_page, main_flags, depth, branch, leaf, overflow, entries, root)


def current_meta(data: Any, damage: Damage) -> Meta:
    """The meta record liblmdb would use, after checking both against each other and the file size."""
    first = read_meta(data, 0, 0, damage)
    size = first.page_size
    if size & (size - 1) or not MIN_PAGE <= size <= MAX_PAGE:
        raise damage(f"meta page 0 gives page size {size}")
    second = read_meta(data, 1, size, damage)
    if second.page_size != size:
        raise damage(f"the meta pages disagree on the page size ({size} and {second.page_size})")
    meta, other = (second, first) if second.txnid > first.txnid else (first, second)
    # liblmdb writes transaction t's meta to page t & 1, so the two hold consecutive ids (or both 0).
    if meta.txnid & 1 != meta.page or other.txnid != max(meta.txnid - 1, 0):
        raise damage(f"the meta pages hold transaction ids {first.txnid} and {second.txnid}, not consecutive ones")
    if meta.txnid == 0 and len(data) > 2 * size:
        raise damage("the meta pages say nothing was ever written, but the file holds more than them")
    if meta.flags:
        raise damage(f"the main database has flags {meta.flags:#x}; only plain key-value databases are read")
    pages = len(data) // size
    if meta.last_page + 1 > pages or meta.last_page < 1:
        raise damage(f"LMDB says its last page is {meta.last_page}, the file holds {pages} pages of {size} bytes")
    if (meta.root == NO_PAGE) != (meta.depth == 0) or meta.depth > MAX_DEPTH:
        raise damage(f"the main database has root page {meta.root} at depth {meta.depth}")
    return meta


def index_records(data: Any, damage: Damage) -> list[Record]:
    """Every record's key and value position, in key order, from a walk that checks every byte it uses."""
    meta = current_meta(data, damage)
    if meta.depth == 0:
        if meta.entries or meta.branch_pages or meta.leaf_pages or meta.overflow_pages:
            raise damage(f"the main database is empty but counts {meta.entries} entries")
        return []
    walk = _Walk(data, meta, damage)
    walk.page(meta.root, 1)
    found = (walk.branch_pages, walk.leaf_pages, walk.overflow_pages, len(walk.records))
    recorded = (meta.branch_pages, meta.leaf_pages, meta.overflow_pages, meta.entries)
    if found != recorded:
        raise damage(f"the B-tree holds (branch, leaf, overflow pages, entries) {found}, its meta page says {recorded}")
    return walk.records


def leaf_pages(data: Any, meta: Meta, damage: Damage) -> list[tuple[int, int]]:
    """Every leaf page's number and record count, in key order, without reading any value.

    Branch pages are checked as :func:`index_records` checks them; of a leaf, its header and its
    first and last keys (so keys ascend from one leaf to the next). The page and entry totals
    are compared with the meta record's; overflow pages are checked when their values are read.
    """
    if meta.depth == 0:
        if meta.entries or meta.branch_pages or meta.leaf_pages:
            raise damage(f"the main database is empty but counts {meta.entries} entries")
        return []
    walk = _Walk(data, meta, damage, leaves_only=True)
    walk.page(meta.root, 1)
    found = (walk.branch_pages, walk.leaf_pages, sum(count for _, count in walk.leaves))
    recorded = (meta.branch_pages, meta.leaf_pages, meta.entries)
    if found != recorded:
        raise damage(f"the B-tree holds (branch pages, leaf pages, entries) {found}, its meta page says {recorded}")
    return walk.leaves


def leaf_records(data: Any, meta: Meta, pages: Sequence[int], damage: Damage) -> list[Record]:
    """The records of leaf pages ``pages`` (consecutive ones from :func:`leaf_pages`), every byte checked."""
    walk = _Walk(data, meta, damage)
    for number in pages:
        base, offsets, upper = walk.header(number, meta.depth, "a part's leaf list")
        walk.leaf(base, f"page {number}", offsets, upper)
    return walk.records


class _Walk:
    """One depth-first, in-order pass over the tree; depth is bounded by the meta record's."""

    def __init__(self, data: Any, meta: Meta, damage: Damage, *, leaves_only: bool = False) -> None:
        self.data = data
        self.leaves_only = leaves_only
        self.leaves: list[tuple[int, int]] = []
        self.meta = meta
        self.size = meta.page_size
        self.damage = damage
        self.seen: set[int] = set()
        self.records: list[Record] = []
        self.last_key = b""
        self.branch_pages = self.leaf_pages = self.overflow_pages = 0

    def claim(self, number: int, what: str) -> int:
        """The byte offset of page ``number`` after checking it is in the file and reached only once."""
        if not 2 <= number <= self.meta.last_page:
            raise self.damage(f"{what} points to page {number}, outside pages 2..{self.meta.last_page}")
        if number in self.seen:
            raise self.damage(f"{what} points to page {number} a second time")
        self.seen.add(number)
        return number * self.size

    def header(self, number: int, depth: int, what: str) -> tuple[int, tuple[int, ...], int]:
        """A page's offset, node offsets and upper bound, after checking it is the page expected at ``depth``."""
        leaf = depth == self.meta.depth
        base = self.claim(number, what)
        stored, _, flags, lower, upper = PAGE_HEADER.unpack_from(self.data, base)
        where = f"page {number}"
        if stored != number or flags != (P_LEAF if leaf else P_BRANCH):
            raise self.damage(f"{where} has number {stored} and flags {flags:#x}; expected a "
                              f"{'leaf' if leaf else 'branch'} page at depth {depth}")
        if not HEADER_SIZE + 2 <= lower <= upper <= self.size or (lower - HEADER_SIZE) & 1:
            raise self.damage(f"{where} has free space bounds {lower}..{upper}")
        count = (lower - HEADER_SIZE) // 2
        return base, struct.unpack_from(f"<{count}H", self.data, base + HEADER_SIZE), upper

    def page(self, number: int, depth: int) -> None:
        what = f"a branch page at depth {depth - 1}" if depth > 1 else "the meta page's root"
        base, offsets, upper = self.header(number, depth, what)
        where = f"page {number}"
        if depth == self.meta.depth:
            self.leaf_pages += 1
            if self.leaves_only:
                self.leaf_bounds(base, where, offsets, upper)
                self.leaves.append((number, len(offsets)))
            else:
                self.leaf(base, where, offsets, upper)
            return
        self.branch_pages += 1
        children = []
        for i, offset in enumerate(offsets):
            if not upper <= offset <= self.size - NODE.size:
                raise self.damage(f"{where} node {i} lies at offset {offset}, outside {upper}..{self.size}")
            low, high, top, key_size = NODE.unpack_from(self.data, base + offset)
            if offset + NODE.size + key_size > self.size:
                raise self.damage(f"{where} node {i} has a {key_size}-byte key running past the page")
            children.append(low | high << 16 | top << 32)
        for child in children:
            self.page(child, depth + 1)

    def leaf_bounds(self, base: int, where: str, offsets: tuple[int, ...], upper: int) -> None:
        """Check a leaf's first and last keys lie in the page and follow the previous leaf's keys."""
        first, last = self.key(base, where, offsets, 0, upper), self.key(base, where, offsets, -1, upper)
        if (self.leaves and first <= self.last_key) or last < first:
            raise self.damage(f"{where}: keys are not in ascending order")
        self.last_key = last

    def key(self, base: int, where: str, offsets: tuple[int, ...], i: int, upper: int) -> bytes:
        offset = offsets[i]
        if not upper <= offset <= self.size - NODE.size:
            raise self.damage(f"{where} node {i % len(offsets)} lies at offset {offset}, outside {upper}..{self.size}")
        key_size = NODE.unpack_from(self.data, base + offset)[3]
        if offset + NODE.size + key_size > self.size:
            raise self.damage(f"{where} node {i % len(offsets)} has a {key_size}-byte key running past the page")
        return bytes(self.data[base + offset + NODE.size:base + offset + NODE.size + key_size])

    def leaf(self, base: int, where: str, offsets: tuple[int, ...], upper: int) -> None:
        data, size, records = self.data, self.size, self.records
        last_key = self.last_key
        for i, offset in enumerate(offsets):
            if not upper <= offset <= size - NODE.size:
                raise self.damage(f"{where} node {i} lies at offset {offset}, outside {upper}..{size}")
            low, high, flags, key_size = NODE.unpack_from(data, base + offset)
            key_start = base + offset + NODE.size
            value_start = key_end = key_start + key_size
            value_size = low | high << 16
            if flags == F_BIGDATA:
                if value_start + PAGE_NUMBER.size > base + size:
                    raise self.damage(f"{where} node {i} runs past the page")
                value_start = self.overflow(PAGE_NUMBER.unpack_from(data, value_start)[0], value_size, where, i)
            elif flags or value_start + value_size > base + size:
                raise self.damage(f"{where} node {i} (flags {flags:#x}, key {key_size} bytes, value {value_size} "
                                  f"bytes at offset {offset}) does not fit the page")
            key = data[key_start:key_end]
            if key <= last_key and records:
                raise self.damage(f"{where} node {i}: keys are not in ascending order")
            last_key = key
            records.append((key_start, key_size, value_start, value_size))
        self.last_key = last_key

    def overflow(self, number: int, value_size: int, where: str, node: int) -> int:
        """The byte offset of a big value, after checking the overflow pages that hold it."""
        base = self.claim(number, f"{where} node {node}")
        stored, _, flags, _, _ = PAGE_HEADER.unpack_from(self.data, base)
        (pages,) = OVERFLOW_PAGES.unpack_from(self.data, base + 12)
        if stored != number or flags != P_OVERFLOW:
            raise self.damage(f"overflow page {number} has number {stored} and flags {flags:#x}")
        if not 1 <= pages <= self.meta.last_page + 1 - number or HEADER_SIZE + value_size > pages * self.size:
            raise self.damage(f"overflow page {number} spans {pages} pages, for a value of {value_size:,} bytes")
        self.overflow_pages += pages
        return base + HEADER_SIZE
