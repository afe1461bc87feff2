"""The Redis URL: checked at construction, masked wherever it is shown.

Masking works on the raw string, not on what a URL parser makes of it: an unencoded
``#``, ``/`` or ``?`` in a password moves the ``@`` out of what a parser calls the
authority, and the password would then be shown as a port, path or fragment.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from loafer_core.errors import ConfigurationError

__all__ = ["MASK", "check_url", "mask_url", "scrub", "secrets_of"]

MASK = "******"

#: The URL schemes redis-py understands.
SCHEMES = ("redis://", "rediss://", "unix://")
#: Query parameter names whose values are secrets (``?password=...`` is read by redis-py).
_SECRET_KEY = re.compile(r"pass|secret|token|credential|auth", re.IGNORECASE)
#: A Redis URL inside a text (a log line, an exception message).
_URL_IN_TEXT = re.compile(r"(?:rediss?|unix)://[^\s\"'<>]+")
#: Shorter secrets are not replaced inside other text: it would garble it, not hide them.
_MIN_SECRET = 3


def _split(url: str) -> tuple[str, str | None, str]:
    """``(scheme + "://", user info or None, the rest)`` of a raw URL string."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    at = rest.rfind("@")
    if at < 0:
        return scheme + sep, None, rest
    return scheme + sep, rest[:at], rest[at + 1 :]


def mask_url(url: str) -> str:
    """``url`` with its password and every query value replaced by ``******``."""
    prefix, userinfo, rest = _split(str(url))
    if userinfo is not None:
        user, colon, _ = userinfo.partition(":")
        prefix += f"{user}:{MASK}@" if colon else f"{MASK}@"
    rest, hashed, _ = rest.partition("#")
    base, question, query = rest.partition("?")
    if question:
        query = "&".join(f"{part.partition('=')[0]}={MASK}" for part in query.split("&"))
        base += "?" + query
    return prefix + base + (f"#{MASK}" if hashed else "")


def secrets_of(url: str) -> tuple[str, ...]:
    """The URL's password (as written and percent-decoded; a lone user info is a
    password for Redis: ``redis://secret@host``) and secret-looking query values."""
    _, userinfo, rest = _split(str(url))
    found: set[str] = set()
    if userinfo is not None:
        user, colon, password = userinfo.partition(":")
        secret = password if colon else user
        found.update((secret, unquote(secret)))
    query = rest.partition("#")[0].partition("?")[2]
    for part in query.split("&") if query else ():
        key, _, value = part.partition("=")
        if _SECRET_KEY.search(key):
            found.update((value, unquote(value.replace("+", " ")), unquote(value)))
    return tuple(sorted((s for s in found if len(s) >= _MIN_SECRET), key=len, reverse=True))


def scrub(text: str, url: str | tuple[str, ...]) -> str:
    """``text`` with every Redis URL in it masked and ``url``'s secrets replaced."""
    text = _URL_IN_TEXT.sub(lambda match: mask_url(match.group()), text)
    for secret in url if isinstance(url, tuple) else secrets_of(url):
        text = text.replace(secret, MASK)
    return text


def check_url(owner: str, url: object) -> str:
    """Refuse, at construction, a URL redis-py would not read as meant; the message
    never shows the password."""
    if not isinstance(url, str) or not url.startswith(SCHEMES):
        shown = mask_url(url) if isinstance(url, str) else type(url).__name__
        raise ConfigurationError(
            f"{owner}(url=...): expected a redis://, rediss:// or unix:// URL, got {shown}"
        )
    rest = url.partition("://")[2]
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    if "#" in rest or "@" in rest[end:]:
        raise ConfigurationError(
            f"{owner}(url=...): {mask_url(url)} would not be read as meant: the user name "
            "or password holds an unencoded '#', '/', '?' or '@'; percent-encode them "
            "(urllib.parse.quote(password, safe='') does it)"
        )
    return url
