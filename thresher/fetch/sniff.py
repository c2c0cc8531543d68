"""Recognise an HTML page served in place of a data file, and say what kind of page it is.

Hosts answer a dataset URL with a web page more often than with an error status: Google Drive
quota and virus-scan pages, login walls, Cloudflare challenges. Saving such a page under the
archive's name produces baffling "not a zip file" or checksum errors later, so the downloader
sniffs the first bytes and reports the page itself.
"""

from __future__ import annotations

import codecs
import html
import re

# Enough to see a doctype or <html> behind a BOM, whitespace and a comment or two.
SNIFF_BYTES = 1024
# How much of a page is read to classify it (pages are small; data files are not).
PAGE_BYTES = 256 * 1024

HTML_SUFFIXES = (".html", ".htm", ".xhtml", ".shtml")

_BOMS = (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_HTML_START = re.compile(
    rb"^(?:<!--.*?-->\s*)*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*"
    rb"<(?:!doctype\s+html|html|head|body|title|meta|script|style|div|form|p|h1|br|iframe)[\s>/]",
    re.IGNORECASE | re.DOTALL,
)
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def expects_html(filename: str) -> bool:
    """True when the file we want is itself a web page, so sniffing must not reject it."""
    return filename.lower().endswith(HTML_SUFFIXES)


def looks_like_html(head: bytes) -> bool:
    """True when ``head`` (the first bytes of a body) starts like an HTML document."""
    for bom in _BOMS:
        if head.startswith(bom):
            head = head[len(bom) :]
            break
    if head[:2] in (b"<\x00", b"\x00<"):  # UTF-16 without BOM: crude but cheap
        head = head.replace(b"\x00", b"")
    return bool(_HTML_START.match(head.lstrip()))


def is_html_content_type(content_type: str | None) -> bool:
    return bool(content_type) and content_type.split(";")[0].strip().lower() in (  # type: ignore[union-attr]
        "text/html",
        "application/xhtml+xml",
    )


def page_title(page: bytes) -> str:
    m = _TITLE.search(page)
    if not m:
        return ""
    text = m.group(1).decode("utf-8", "replace")
    return " ".join(html.unescape(text).split())[:120]


def classify_page(page: bytes) -> str:
    """Name the kind of page: ``drive-quota``, ``drive-virus-scan``, ``cloudflare``, ``login`` or ``generic``."""
    text = page.decode("utf-8", "replace").lower()
    if (
        "quota exceeded" in text
        or "too many users have viewed or downloaded this file" in text
        or "download quota" in text
    ):
        return "drive-quota"
    if (
        "can't scan this file for viruses" in text
        or "can&#39;t scan this file for viruses" in text
        or "virus scan warning" in text
        or 'id="download-form"' in text
        or "uc-download-link" in text
        or "download_warning" in text
    ):
        return "drive-virus-scan"
    if "cloudflare" in text and ("just a moment" in text or "attention required" in text or "cf-" in text):
        return "cloudflare"
    if (
        'type="password"' in text
        or "type='password'" in text
        or re.search(r"<title[^>]*>[^<]*(sign in|log in|login|signin)", text)
    ):
        return "login"
    return "generic"


_DESCRIPTIONS = {
    "drive-quota": "a Google Drive 'quota exceeded' page (too many downloads of this file recently; "
    "try again in 24 h, use a mirror, or download it by hand in a browser and place it in the download directory)",
    "drive-virus-scan": "a Google Drive virus-scan warning page (the confirm step did not yield the file)",
    "cloudflare": "a Cloudflare challenge page (the host blocks scripted downloads; use a mirror)",
    "login": "a login page (the file needs an account; download it by hand or use a mirror)",
    "generic": "an HTML page",
}


def describe_page(kind: str, page: bytes) -> str:
    """One human phrase for the page, with its title when it has one."""
    text = _DESCRIPTIONS.get(kind, _DESCRIPTIONS["generic"])
    title = page_title(page)
    return f"{text} titled {title!r}" if title else text
