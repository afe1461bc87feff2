"""AMQP 1.0 URLs: parsing (``amqp[s]://[user[:password]@]host[:port]``) and masking.

No proton here: the settings module checks a URL with it at construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from loafer_core import kit
from loafer_core.errors import ConfigurationError

__all__ = ["LOGGERS", "URL_RULES", "UrlParts", "mask_url", "parse_url"]

#: AMQP 1.0 URLs: the password is masked (the user name stays); connection options
#: ``password`` and ``ssl_key_password`` are secrets too.
URL_RULES = kit.UrlRules(schemes=("amqp", "amqps"), secret_options=("password", "ssl_key_password"))
#: Loggers whose records are filtered (and their children).
LOGGERS = ("proton", "loafer_amqp")


def mask_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``******`` (the user name stays).

    Works on the raw string (everything between ``scheme://`` and the last ``@``), not
    on what ``urlsplit`` makes of it: an unencoded ``#``, ``/`` or ``?`` in a password
    would hide the ``@`` from ``urlsplit`` and leave the password in clear.
    """
    return kit.mask_url(url, URL_RULES)


@dataclass(frozen=True)
class UrlParts:
    """What an AMQP URL says: scheme, host, port (the scheme's default when not given),
    and the percent-decoded user and password (``None`` when absent)."""

    scheme: str
    host: str
    port: int
    user: str | None
    password: str | None = field(repr=False)


def parse_url(url: str) -> UrlParts:
    """Split ``amqp[s]://[user[:password]@]host[:port]``; ``ConfigurationError`` (showing
    the URL masked, never its password) when it is not one."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        # urllib's message may quote part of the password: give a fixed hint instead
        raise ConfigurationError(
            f"invalid AMQP URL {mask_url(url)!r}: check the port, and percent-encode "
            "special characters (such as / # ? @ :) in the user and password"
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in {"amqp", "amqps"}:
        raise ConfigurationError(
            f"AMQP URL must start with amqp:// or amqps://, got {mask_url(url)!r}"
        )
    if not parts.hostname:
        raise ConfigurationError(f"AMQP URL has no host: {mask_url(url)!r}")
    if parts.path not in {"", "/"}:
        raise ConfigurationError(
            f"put the address in `address`, not in the URL path: {mask_url(url)!r}"
        )
    return UrlParts(
        scheme=scheme,
        host=parts.hostname,
        port=port or (5671 if scheme == "amqps" else 5672),
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )
