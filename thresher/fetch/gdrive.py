"""Google Drive's confirm step: turn the "can't scan for viruses" page into the file's real URL.

Drive answers ``uc?export=download&id=...`` for a large file with an HTML page. The token that
unlocks the file comes, depending on the year, from a ``download_warning*`` cookie, a
``confirm=`` link in the page, or a form (``id``, ``export``, ``confirm``, ``uuid`` hidden
inputs). ``confirm=t`` is the fallback Drive has accepted since 2022.

A URL counts as a Drive download by its shape (``.../uc?...id=...`` on any host, or any URL
on a known Drive host), so the same code runs against the loopback test server.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit, urlunsplit

DRIVE_HOSTS = frozenset({"drive.google.com", "docs.google.com", "drive.usercontent.google.com"})
MAX_CONFIRM_HOPS = 3

_CONFIRM_IN_TEXT = re.compile(r"confirm=([0-9A-Za-z_-]+)")


def is_drive_url(url: str) -> bool:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    if (parts.hostname or "").lower() in DRIVE_HOSTS:
        return "id" in query or "/file/d/" in parts.path
    return parts.path.rstrip("/").endswith("/uc") and "id" in query


def with_query(url: str, **params: str) -> str:
    """``url`` with ``params`` set (replacing existing values of the same names)."""
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query)))


class _FormParser(HTMLParser):
    """Collects the download form (action + hidden inputs) of a Drive warning page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[tuple[str, dict[str, str]]] = []
        self._current: tuple[str, dict[str, str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._current = (a.get("action", ""), {})
            self.forms.append(self._current)
        elif tag == "input" and self._current is not None and a.get("name"):
            self._current[1][a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def confirm_url(url: str, page: bytes, cookies: Mapping[str, str], page_url: str | None = None) -> str | None:
    """The URL that should yield the file after the warning page ``page`` for ``url``; None if none found.

    ``page_url`` is where the page came from after redirects (Drive sends ``uc`` downloads on to
    another host): a relative form action is relative to it, not to ``url``.
    """
    for name, value in cookies.items():
        if name.startswith("download_warning") and value:
            return with_query(url, confirm=value)
    text = page.decode("utf-8", "replace")
    parser = _FormParser()
    try:
        parser.feed(text)
    except Exception:  # a broken page is just a page without a form
        parser.forms = []
    for action, fields in parser.forms:
        if "confirm" in fields or "id" in fields:
            base = page_url or url
            target = urljoin(base, html.unescape(action)) if action else base
            params = dict(fields)
            params.setdefault("confirm", "t")
            original = parse_qs(urlsplit(url).query)
            if "id" not in params and "id" in original:
                params["id"] = original["id"][-1]
            return with_query(target, **params)
    m = _CONFIRM_IN_TEXT.search(html.unescape(text))
    if m:
        return with_query(url, confirm=m.group(1))
    if "confirm" not in parse_qs(urlsplit(url).query):
        return with_query(url, confirm="t")
    return None
