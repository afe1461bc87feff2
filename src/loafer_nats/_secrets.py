"""Credentials: the server URL checked at construction, masked wherever it is shown.

A NATS URL may carry ``user:password@`` or a bare ``token@`` before the host. Masking
works on the raw string (not a parser's idea of it): an unencoded ``/``, ``?`` or ``#``
in a password would move the ``@`` out of what a parser calls the authority.

nats-py logs its errors (with ``exc_info``) through the ``nats`` loggers, and some of its
exceptions quote the server URL: :func:`protect` installs one :class:`SecretFilter` on
its loggers and ours that masks the known secrets in every record (message, arguments,
traceback). Installed when a provider or publisher is built, never at import.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from loafer_core.errors import ConfigurationError

__all__ = [
    "MASK",
    "SECRET_OPTIONS",
    "SecretFilter",
    "check_url",
    "mask_url",
    "protect",
    "scrub",
    "secrets_of",
]

MASK = "******"
SCHEMES = ("nats://", "tls://", "ws://", "wss://")
#: ``nats.connect`` keyword arguments whose values are secrets.
SECRET_OPTIONS = ("password", "token", "nkeys_seed_str")
#: A NATS URL inside a text (a log line, an exception message).
_URL_IN_TEXT = re.compile(r"(?:nats|tls|wss?)://[^\s\"'<>,]+")
#: Shorter secrets are not replaced inside other text: it would garble it, not hide them.
_MIN_SECRET = 3
#: Loggers whose records are filtered (and their children).
LIBRARY_LOGGERS = ("nats", "loafer_nats")


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
    """``url`` with its password (or token) replaced by ``******``: safe for logs, reprs
    and errors, whatever characters the secret holds. The user name stays."""
    prefix, userinfo, rest = _split(str(url))
    if userinfo is not None:
        user, colon, _ = userinfo.partition(":")
        prefix += f"{user}:{MASK}@" if colon else f"{MASK}@"
    return prefix + rest


def secrets_of(url: str, options: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """The URL's password or token (as written and percent-decoded), and the string values
    of the secret connection options (``password``, ``token``, ...), longest first."""
    _, userinfo, _ = _split(str(url))
    found: set[str] = set()
    if userinfo is not None:
        _, colon, password = userinfo.partition(":")
        secret = password if colon else userinfo  # no colon: the whole of it is a token
        found.update((secret, unquote(secret)))
    for key in SECRET_OPTIONS:
        value = (options or {}).get(key)
        if isinstance(value, str):
            found.add(value)
    return tuple(sorted((s for s in found if len(s) >= _MIN_SECRET), key=len, reverse=True))


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every NATS URL in it masked and each of ``secrets`` replaced."""
    text = _URL_IN_TEXT.sub(lambda match: mask_url(match.group()), text)
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def check_url(owner: str, url: object) -> str:
    """Refuse, at construction, what is not a ``nats://`` (``tls://``, ``ws[s]://``) URL
    or would be parsed other than meant; the message never shows the secret."""
    if not isinstance(url, str) or not url.startswith(SCHEMES):
        shown = mask_url(url) if isinstance(url, str) else type(url).__name__
        raise ConfigurationError(
            f"{owner}(url=...): expected a nats://, tls://, ws:// or wss:// URL, got {shown}"
        )
    rest = url.partition("://")[2]
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    hint = (
        "percent-encode special characters in the user name, password or token "
        "(urllib.parse.quote(secret, safe='') does it)"
    )
    if "@" in rest[end:]:
        raise ConfigurationError(
            f"{owner}(url=...): {mask_url(url)} would not be read as meant: the credentials "
            f"hold an unencoded '/', '?' or '#'; {hint}"
        )
    try:
        parsed = urlsplit(url)
        _ = parsed.port
        if not parsed.hostname:
            raise ValueError("no host")
    except ValueError:
        raise ConfigurationError(
            f"{owner}(url=...): {mask_url(url)} is not a valid URL: check the host and "
            f"port, and {hint}"
        ) from None
    return url


class SecretFilter(logging.Filter):
    """Masks NATS URLs and known secrets in log records; never drops a record."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._known: set[str] = set()
        self.secrets: tuple[str, ...] = ()

    def add(self, secrets: Iterable[str]) -> None:
        """Mask these strings too, from now on."""
        with self._lock:
            new = set(secrets)
            if self._known.issuperset(new):
                return
            self._known.update(new)
            self.secrets = tuple(sorted(self._known, key=len, reverse=True))

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self.secrets
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: logging reports it itself
            return True
        clean = scrub(message, secrets)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            clean = scrub(record.exc_text, secrets)
            if clean != record.exc_text:
                record.exc_text, record.exc_info = clean, None
        if record.stack_info:
            record.stack_info = scrub(record.stack_info, secrets)
        return True


_FILTER = SecretFilter()
_install_lock = threading.Lock()


def protect(secrets: Iterable[str]) -> None:
    """Mask ``secrets``, and every NATS URL's password or token, in the records of
    nats-py's loggers and ours. Idempotent."""
    _FILTER.add(secrets)
    with _install_lock:
        names = [
            name
            for name in list(logging.root.manager.loggerDict)
            if any(name == p or name.startswith(p + ".") for p in LIBRARY_LOGGERS)
        ]
        for name in (*LIBRARY_LOGGERS, "nats.aio.client", *names):
            logger = logging.getLogger(name)
            if _FILTER not in logger.filters:
                logger.addFilter(_FILTER)
