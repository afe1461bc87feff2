"""One logging filter that keeps secrets out of every plugin's logs.

Client libraries log their URLs (aio-pika the query string, ``keyfile_password=...``
included), their requests (botocore every header, the session token among them) and
exceptions that quote the server URL. :func:`protect` puts a :class:`SecretFilter`
of the plugin's rules on the loggers it names (and on their children that exist by then:
a filter on a logger sees only the records logged there, not those of its children), and
teaches it the plugin's secrets. Call it when a provider or publisher is built, never at
import; calling it again changes nothing but what the filter knows.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from loafer_core.kit._secrets import MASK, TextRules, UrlRules, mask_text, scrub

__all__ = ["SecretFilter", "protect", "secret_filter"]


class SecretFilter(logging.Filter):
    """Masks, in every record it sees, the URLs of the :class:`UrlRules` it knows, the
    credentials its :class:`TextRules` recognise and each known secret: in the message
    (the record is changed: formatted, masked, arguments dropped, so every handler sees
    the masked text), the formatted traceback and the stack. It never drops a record."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._known: set[str] = set()
        # Longest first, so that a secret containing another is masked whole.
        self.secrets: tuple[str, ...] = ()
        self.urls: tuple[UrlRules, ...] = ()
        self.texts: tuple[TextRules, ...] = ()

    def add(
        self,
        secrets: Iterable[str] = (),
        *,
        urls: UrlRules | None = None,
        text: TextRules | None = None,
    ) -> None:
        """Mask these secrets, and the URLs or credentials these rules describe, from
        now on."""
        new = set(secrets)
        with self._lock:
            if urls is not None and urls not in self.urls:
                self.urls = (*self.urls, urls)
            if text is not None and text not in self.texts:
                self.texts = (*self.texts, text)
            if not self._known.issuperset(new):
                self._known.update(new)
                self.secrets = tuple(sorted(self._known, key=len, reverse=True))

    def clean(self, text: str) -> str:
        """``text`` with everything this filter knows masked."""
        for rules in self.texts:
            text = mask_text(text, rules)
        if "://" in text:
            for urls in self.urls:
                text = scrub(text, urls)
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask the record in place; always True."""
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: logging reports it itself, unchanged
            return True
        clean = self.clean(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            clean = self.clean(record.exc_text)
            if clean != record.exc_text:
                # Formatters print exc_text when set; drop the raw exception so that no
                # handler formats it again from exc_info, secrets included.
                record.exc_text, record.exc_info = clean, None
        if record.stack_info:
            record.stack_info = self.clean(record.stack_info)
        return True


#: One filter per set of rules: a plugin's rules apply to its loggers only (botocore's
#: ``scheme://user@`` masking does not hide the user name in aio-pika's records).
_FILTERS: dict[tuple[UrlRules | None, TextRules | None], SecretFilter] = {}
_install_lock = threading.Lock()


def secret_filter(urls: UrlRules | None = None, text: TextRules | None = None) -> SecretFilter:
    """The filter :func:`protect` installs for these rules (made on first use)."""
    with _install_lock:
        found = _FILTERS.get((urls, text))
        if found is None:
            found = _FILTERS[(urls, text)] = SecretFilter()
            found.add(urls=urls, text=text)
        return found


def protect(
    loggers: Iterable[str],
    secrets: Iterable[str] = (),
    *,
    urls: UrlRules | None = None,
    text: TextRules | None = None,
) -> None:
    """Put the :class:`SecretFilter` of these rules on each of ``loggers`` (created if
    need be: name a child a library creates only when it first logs) and on their
    children that exist now, and have it mask ``secrets`` too and what ``urls`` and
    ``text`` describe. Idempotent."""
    chosen = secret_filter(urls, text)
    chosen.add(secrets)
    wanted = tuple(loggers)
    with _install_lock:
        for name in wanted:
            logging.getLogger(name)
        names = [
            name
            for name in list(logging.root.manager.loggerDict)
            if any(name == p or name.startswith(p + ".") for p in wanted)
        ]
        for name in names:
            logger = logging.getLogger(name)
            if chosen not in logger.filters:
                logger.addFilter(chosen)
