"""Errors thresher raises on purpose. Each names the file (and place in it) that was wrong.

The CLI prints these without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ThresherError(Exception):
    """Base of every error thresher raises on purpose."""


class DownloadError(ThresherError):
    """A file could not be fetched from any of its URLs."""


class ChecksumError(DownloadError):
    """Bytes arrived but their size or hash is not the expected one."""


class HtmlInsteadOfDataError(DownloadError):
    """A server answered with an HTML page (quota, login, virus scan) instead of the file."""


class ManualDownloadRequired(ThresherError):
    """The host needs a person to fetch the file; the message tells them how."""


class OfflineError(DownloadError):
    """``--offline`` forbids the only URLs left to try."""


class UnsafeArchiveError(ThresherError):
    """An archive member would escape the target, is a link or device, or is absurd."""


class MalformedDataError(ThresherError):
    """Well-formed archive, bad content: names the member and the offset or line."""

    def __init__(self, source: str, where: str, problem: str) -> None:
        self.source = source
        self.where = where
        self.problem = problem
        location = f"{source} ({where})" if where else source
        super().__init__(f"{location}: {problem}")


class CorruptArchiveError(MalformedDataError):
    """The archive's bytes end early or do not decode (a truncated or damaged download)."""


class UnsupportedCodecError(ThresherError):
    """The chosen codec cannot represent this dataset's records without loss."""


class CorruptShardError(ThresherError):
    """A shard does not match its manifest, or a record in it does not decode."""


class DatasetReplacedError(ThresherError):
    """The output was prepared again after this dataset was opened; its shards are gone."""


class DiskSpaceError(ThresherError):
    """Not enough free space, or the disk filled up while writing."""


class WriteError(ThresherError):
    """Writing an output failed for a reason other than space; names the path."""


class LockTimeout(ThresherError):
    """Another process holds the lock for too long."""


class WorkerDied(ThresherError):
    """An encoding worker process ended mid-conversion (killed, e.g. by the out-of-memory killer, or crashed)."""


class UnguardedScriptError(ThresherError):
    """``thresher.prepare`` ran at the top level of a script while a worker process imported it."""
