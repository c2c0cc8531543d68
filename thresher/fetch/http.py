"""HTTP plumbing shared by every download: the retry policy, the session, status classification.

Kept apart from the transfer loop so the knobs (attempts, backoff, timeouts) are one small
dataclass that tests can shrink to milliseconds.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import requests

# Statuses worth asking the same URL again for: the host is busy or briefly broken.
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524})


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one URL before moving to the next.

    ``attempts`` counts requests to one URL that made no progress; a request that delivered
    new bytes (and is then cut off) resumes without using up an attempt, up to
    ``attempts * max_progress_factor`` requests in all so a trickling server still ends.
    """

    attempts: int = 5
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    retry_after_cap: float = 60.0
    connect_timeout: float = 30.0
    read_timeout: float = 60.0
    jitter: float = 0.1
    max_progress_factor: int = 20

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout, self.read_timeout)

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (1-based).

        A server's Retry-After wins over the backoff but never exceeds ``retry_after_cap``.
        """
        if retry_after is not None:
            return max(0.0, min(retry_after, self.retry_after_cap))
        base = min(self.backoff_cap, self.backoff_base * (2 ** max(0, failures - 1)))
        return base * (1.0 + random.uniform(0.0, self.jitter))

    def sleep(self, failures: int, retry_after: float | None = None) -> None:
        time.sleep(self.delay(failures, retry_after))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent or garbled."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import email.utils  # only for a Retry-After date; it imports socket and the email package

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = datetime.fromtimestamp(time.time() if now is None else now, tz=timezone.utc)
    return max(0.0, (when - current).total_seconds())


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUS or 500 <= status < 600


def user_agent() -> str:
    """``thresher/<version>`` so hosts can tell who is downloading (and contact us if needed)."""
    version = None
    try:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version

        try:
            version = dist_version("thresher")
        except PackageNotFoundError:
            version = None
    except ImportError:  # pragma: no cover
        pass
    if version is None:
        try:
            import thresher

            version = getattr(thresher, "__version__", None)
        except ImportError:  # pragma: no cover
            version = None
    import requests  # here, not at the top: a run that finds its files present never loads it

    return f"thresher/{version or 'dev'} python-requests/{requests.__version__}"


def make_session() -> requests.Session:
    """A session with our User-Agent, verified TLS and proxies from the environment.

    ``Accept-Encoding: identity`` because checksums are of the bytes as published: a server
    that gzips a ``.gz`` on the fly must not have it transparently unpacked.
    """
    import requests

    session = requests.Session()
    session.headers["User-Agent"] = user_agent()
    session.headers["Accept-Encoding"] = "identity"
    # Explicit, so nobody "fixes" a certificate problem by turning verification off here.
    session.verify = True
    session.trust_env = True
    return session
