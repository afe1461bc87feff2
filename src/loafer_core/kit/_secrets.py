"""Secrets in broker URLs and in free text: found, masked, refused when misread.

Masking works on the raw string, not on what a URL parser makes of it: an unencoded
``#``, ``/`` or ``?`` in a password moves the ``@`` out of what a parser calls the
authority, and the password would then be shown as a port, path or fragment. The user
information is everything between ``scheme://`` and the *last* ``@``.

What differs between brokers is a small table, :class:`UrlRules` (which schemes, whether
a lone ``token@`` is a secret, which query parameters hold secrets, ...) or
:class:`TextRules` (the names of secret ``name=value`` fields), passed to the shared
functions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import unquote

from loafer_core.errors import ConfigurationError

__all__ = [
    "MASK",
    "TextRules",
    "UrlRules",
    "check_url",
    "host_of",
    "is_clean",
    "mask_text",
    "mask_url",
    "scrub",
    "secrets_of",
    "with_port",
]

MASK = "******"
"""What a secret is replaced by, in every plugin."""
#: Shorter secrets are not replaced inside other text: it would garble it, not hide them.
MIN_SECRET = 3
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(:[0-9]{1,5})?")
_HINT = (
    "percent-encode special characters in the user name and password (# as %23, "
    "/ as %2F, ? as %3F, @ as %40, : as %3A, % as %25; "
    "urllib.parse.quote(password, safe='') does it)"
)


@dataclass(frozen=True)
class UrlRules:
    """How one broker's URLs carry secrets: the table a plugin passes to
    :func:`mask_url`, :func:`secrets_of`, :func:`scrub` and :func:`check_url`.

    :param schemes: the URL schemes, without ``://`` (``("amqp", "amqps")``); the first
        ones are named in :func:`check_url`'s message.
    :param lone_user_is_secret: ``scheme://word@host`` holds a password or token (Redis,
        NATS), not a user name (AMQP).
    :param mask_query: every query value (and a fragment) is masked by :func:`mask_url`
        (the client library passes the query on: it may hold key-file passwords).
    :param secret_query: a regular expression matched against query parameter names:
        those values are secrets (:func:`secrets_of`), replaced wherever they appear.
    :param secret_options: connection keyword options whose string values are secrets
        (``("password", "token")``), for :func:`secrets_of`'s ``options``.
    :param separators: characters that end a URL in a text, besides white space and
        quotes (``","`` where a server list is comma-separated).
    :param refuse_fragment: :func:`check_url` refuses any ``#`` (the scheme has no
        fragments: a ``#`` is a password character that was not encoded).
    :param validate: called by :func:`check_url` with the URL; raises ``ValueError`` when
        the client library would not parse it (its message is not shown: it may quote
        the password).
    """

    schemes: tuple[str, ...]
    lone_user_is_secret: bool = False
    mask_query: bool = False
    secret_query: str | None = None
    secret_options: tuple[str, ...] = ()
    separators: str = ""
    refuse_fragment: bool = False
    validate: Callable[[str], object] | None = field(default=None, compare=False)

    @cached_property
    def in_text(self) -> re.Pattern[str]:
        """A URL of these schemes inside a text (a log line, an exception message)."""
        schemes = "|".join(re.escape(s) for s in self.schemes)
        return re.compile(rf"(?:{schemes})://[^\s\"'<>{re.escape(self.separators)}]+")

    @cached_property
    def query_key(self) -> re.Pattern[str] | None:
        """:attr:`secret_query`, compiled (case-insensitive)."""
        return re.compile(self.secret_query, re.IGNORECASE) if self.secret_query else None


def _split(url: str) -> tuple[str, str | None, str]:
    """``(scheme + "://", user info or None, the rest)`` of a raw URL string."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    at = rest.rfind("@")
    if at < 0:
        return scheme + sep, None, rest
    return scheme + sep, rest[:at], rest[at + 1 :]


def mask_url(url: object, rules: UrlRules) -> str:
    """``url`` with its password (or lone token) replaced by :data:`MASK`, and with
    :attr:`UrlRules.mask_query`, every query value and the fragment too: safe for logs,
    reprs and errors, whatever characters the secret holds. The user name stays."""
    prefix, userinfo, rest = _split(str(url))
    if userinfo is not None:
        user, colon, _ = userinfo.partition(":")
        if colon:
            prefix += f"{user}:{MASK}@"
        else:
            prefix += f"{MASK}@" if rules.lone_user_is_secret else f"{user}@"
    if not rules.mask_query:
        return prefix + rest
    rest, hashed, _ = rest.partition("#")
    base, question, query = rest.partition("?")
    if question:
        query = "&".join(f"{part.partition('=')[0]}={MASK}" for part in query.split("&"))
        base += "?" + query
    return prefix + base + (f"#{MASK}" if hashed else "")


def secrets_of(
    url: object, rules: UrlRules, options: Mapping[str, Any] | None = None
) -> tuple[str, ...]:
    """The secrets ``url`` holds, longest first (so that one containing another is
    replaced whole): its password or token as written and percent-decoded, the values
    of its secret query parameters, and the string values of the secret ``options``."""
    _, userinfo, rest = _split(str(url))
    found: set[str] = set()
    if userinfo is not None:
        user, colon, password = userinfo.partition(":")
        if colon or rules.lone_user_is_secret:
            secret = password if colon else user
            found.update((secret, unquote(secret)))
    key_pattern = rules.query_key
    query = rest.partition("#")[0].partition("?")[2] if key_pattern is not None else ""
    for part in query.split("&") if query else ():
        key, _, value = part.partition("=")
        if key_pattern is not None and key_pattern.search(key):
            found.update((value, unquote(value.replace("+", " ")), unquote(value)))
    for name in rules.secret_options:
        option = (options or {}).get(name)
        if isinstance(option, str):
            found.add(option)
    return tuple(sorted((s for s in found if len(s) >= MIN_SECRET), key=len, reverse=True))


def scrub(text: str, rules: UrlRules, secrets: Iterable[str] = ()) -> str:
    """``text`` with every URL of ``rules``' schemes masked (:func:`mask_url`) and each
    of ``secrets`` replaced by :data:`MASK` (give them longest first)."""
    text = rules.in_text.sub(lambda match: mask_url(match.group(), rules), text)
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def _schemes_text(schemes: tuple[str, ...]) -> str:
    named = [f"{s}://" for s in schemes]
    listed = named[0] if len(named) == 1 else f"{', '.join(named[:-1])} or {named[-1]}"
    return f"{'an' if listed[0] in 'aeiou' else 'a'} {listed} URL"


def check_url(owner: str, url: object, rules: UrlRules) -> str:
    """``url``, or a :class:`~loafer_core.errors.ConfigurationError` when it is not of
    ``rules``' schemes or would be read other than meant (an unencoded ``#``, ``/``,
    ``?`` or ``@`` in the credentials, a bad host or port): the message says what to fix
    and never shows the password."""
    if not isinstance(url, str) or not url.startswith(tuple(f"{s}://" for s in rules.schemes)):
        shown = mask_url(url, rules) if isinstance(url, str) else type(url).__name__
        raise ConfigurationError(
            f"{owner}(url=...): expected {_schemes_text(rules.schemes)}, got {shown}"
        )
    rest = url.partition("://")[2]
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    if (rules.refuse_fragment and "#" in rest) or "@" in rest[end:]:
        # A '#' starts a fragment (these URLs have none); an '@' after the first '/', '?'
        # or '#' means that character was inside the credentials.
        raise ConfigurationError(
            f"{owner}(url=...): {mask_url(url, rules)} would not be read as meant: the "
            f"user name or password holds an unencoded '#', '/', '?' or '@'; {_HINT}"
        )
    if rules.validate is not None:
        try:
            rules.validate(url)
        except ValueError:
            # The parser's message may quote part of the password: a fixed hint instead.
            raise ConfigurationError(
                f"{owner}(url=...): {mask_url(url, rules)} is not a valid URL: check the "
                f"host and port, and {_HINT}"
            ) from None
    return url


def host_of(url: str) -> tuple[str, str] | None:
    """``(host[:port], scheme)`` of a URL, read on the raw string as :func:`mask_url`
    reads it (the user information ends at the last ``@``): never the user name or
    password; None when there is no ``scheme://`` or no valid host."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    authority = re.split(r"[/?#]", rest[rest.rfind("@") + 1 :], maxsplit=1)[0]
    if not _HOST_PORT.fullmatch(authority):
        return None
    return authority, scheme.lower()


@dataclass(frozen=True)
class TextRules:
    """Credentials in free text (a library's log lines and exception messages), for
    :func:`mask_text`: the user information of any URL, the values of fields named in
    :attr:`secret_names` (written ``name=value``, ``name: value``, ``'name': b'value'``
    or ``<Name>value</Name>``), request signatures (``Signature=hex``) and the
    credentials of ``Authorization: Basic/Bearer`` headers.

    :param secret_names: field names (regular expressions, matched case-insensitively).
    """

    secret_names: tuple[str, ...] = ("password", "passwd")

    @cached_property
    def patterns(self) -> tuple[tuple[re.Pattern[str], str], ...]:
        """The compiled patterns and their replacements."""
        names = "|".join(self.secret_names)
        return (
            # scheme://user:password@host
            (re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@'\"<>]+@"), rf"\g<1>{MASK}@"),
            # name=value, name: value, 'name': b'value', "name": "value", <Name>value
            (
                re.compile(rf"(?i)(\b(?:{names})['\"]?\s*(?:[:=]|>)\s*b?['\"]?)[^\s'\"&,<>;)]+"),
                rf"\g<1>{MASK}",
            ),
            # Signature=hex, X-Amz-Signature=hex, "Signature:\n" in a canonical request
            (re.compile(r"(?i)(\b(?:x-amz-)?signature\s*[:=]\s*)[0-9a-f]{16,}"), rf"\g<1>{MASK}"),
            # Authorization: Basic/Bearer credentials
            (
                re.compile(
                    r"(?i)(\bauthorization['\"]?\s*[:=]\s*b?['\"]?(?:basic|bearer|token)\s+)"
                    r"[^\s'\",]+"
                ),
                rf"\g<1>{MASK}",
            ),
        )


def mask_text(text: object, rules: TextRules) -> str:
    """``str(text)`` with every credential ``rules`` recognise replaced by :data:`MASK`."""
    masked = str(text)
    for pattern, replacement in rules.patterns:
        masked = pattern.sub(replacement, masked)
    return masked


def is_clean(exc: BaseException, rules: TextRules) -> bool:
    """True when neither ``exc`` nor any exception chained to it shows a credential
    (by :func:`mask_text`): then it may be chained to a translated error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for text in (str(current), repr(current)):
            if mask_text(text, rules) != text:
                return False
        current = current.__cause__ or current.__context__
    return True


def with_port(host: str, port: int) -> str:
    """``host`` (from :func:`host_of`) with ``:port`` added when it names none."""
    return host if ":" in host.rpartition("]")[2] else f"{host}:{port}"
