"""Downloading a recipe's source files: mirrors, resume, retries, checksums, locks.

The one entry point most code needs is :func:`fetch_sources`; ``thresher checksums`` uses
:func:`compute_checksums` and :func:`format_checksums`.
"""

from thresher.fetch.checksums import parse_checksums, read_checksums_file, record_checksums
from thresher.fetch.downloader import compute_checksums, fetch_sources, format_checksums
from thresher.fetch.http import RetryPolicy

__all__ = [
    "RetryPolicy",
    "compute_checksums",
    "fetch_sources",
    "format_checksums",
    "parse_checksums",
    "read_checksums_file",
    "record_checksums",
]
