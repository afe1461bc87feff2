"""The broker URL: checked at construction, masked wherever it is shown.

Masking works on the raw string, not on what a URL parser makes of it: an unencoded
``#``, ``/`` or ``?`` in a password moves the ``@`` out of what a parser calls the
authority, and the password would then be shown as a port, path or fragment.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from yarl import URL

from loafer_core.errors import ConfigurationError

__all__ = ["MASK", "check_url", "mask_url", "scrub", "secrets_of", "vhost_of"]

MASK = "******"

#: Query parameter names whose values are secrets (aio-pika passes the query through).
_SECRET_KEY = re.compile(r"pass|secret|token|credential|auth", re.IGNORECASE)
#: An AMQP URL inside a text (a log line, an exception message).
_URL_IN_TEXT = re.compile(r"amqps?://[^\s\"'<>]+")
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


def mask_url(url: str | URL) -> str:
    """``url`` with its password and every query value replaced by ``******`` (safe for
    logs, reprs and errors, whatever characters the password holds)."""
    prefix, userinfo, rest = _split(str(url))
    if userinfo is not None:
        user, colon, _ = userinfo.partition(":")
        prefix += f"{user}:{MASK}@" if colon else f"{user}@"
    rest, hashed, _ = rest.partition("#")
    base, question, query = rest.partition("?")
    if question:
        # Query strings may carry secrets too (e.g. key file passwords): keep only the keys.
        query = "&".join(f"{part.partition('=')[0]}={MASK}" for part in query.split("&"))
        base += "?" + query
    return prefix + base + (f"#{MASK}" if hashed else "")


def secrets_of(url: str | URL) -> tuple[str, ...]:
    """The URL's password (as written and percent-decoded) and the values of its query
    parameters whose names look secret (``keyfile_password=...``)."""
    _, userinfo, rest = _split(str(url))
    found: set[str] = set()
    if userinfo is not None:
        _, colon, password = userinfo.partition(":")
        if colon:
            found.update((password, unquote(password)))
    query = rest.partition("#")[0].partition("?")[2]
    for part in query.split("&") if query else ():
        key, _, value = part.partition("=")
        if _SECRET_KEY.search(key):
            found.update((value, unquote(value.replace("+", " ")), unquote(value)))
    return tuple(sorted((s for s in found if len(s) >= _MIN_SECRET), key=len, reverse=True))


def scrub(text: str, url: str | URL | tuple[str, ...]) -> str:
    """``text`` with every AMQP URL in it masked, and ``url``'s secrets (or the given
    secrets) replaced by ``******``."""
    text = _URL_IN_TEXT.sub(lambda match: mask_url(match.group()), text)
    for secret in url if isinstance(url, tuple) else secrets_of(url):
        text = text.replace(secret, MASK)
    return text


def vhost_of(url: str | URL) -> str:
    """The virtual host an AMQP URL names (``/`` when the path is empty)."""
    try:
        path = URL(url).path
    except (TypeError, ValueError):
        return "/"
    if not path or path == "/":
        return "/"
    return path[1:]


def check_url(owner: str, url: object) -> str:
    """Refuse, at construction, a URL that is not ``amqp[s]://`` or that would be parsed
    other than it was meant (an unencoded ``#``, ``/``, ``?`` or ``@`` in the user name or
    password): the message says what to fix and never shows the password."""
    if not isinstance(url, str) or not url.startswith(("amqp://", "amqps://")):
        raise ConfigurationError(
            f"{owner}(url=...): expected an amqp:// or amqps:// URL, got "
            f"{mask_url(url) if isinstance(url, str) else type(url).__name__}"
        )
    hint = (
        "percent-encode special characters in the user name and password (# as %23, "
        "/ as %2F, ? as %3F, @ as %40, : as %3A, % as %25; "
        "urllib.parse.quote(password, safe='') does it)"
    )
    rest = url.partition("://")[2]
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    if "#" in rest or "@" in rest[end:]:
        # A '#' starts a fragment (AMQP URLs have none); an '@' after the first '/', '?'
        # or '#' means that character was inside the credentials.
        raise ConfigurationError(
            f"{owner}(url=...): {mask_url(url)} would not be read as meant: the user name "
            f"or password (or the vhost or options) holds an unencoded '#', '/', '?' or "
            f"'@'; {hint}"
        )
    try:
        parsed = URL(url)
        _ = parsed.port
    except ValueError:
        # The parser's message may quote part of the password: give a fixed hint instead.
        raise ConfigurationError(
            f"{owner}(url=...): {mask_url(url)} is not a valid URL: check the host and "
            f"port, and {hint}"
        ) from None
    return url
