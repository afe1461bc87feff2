"""Keep credentials out of aio-pika's and aiormq's log records.

aio-pika and aiormq mask the URL's password in their reprs, but not its query string:
at DEBUG (and INFO, on a reconnect) they log the whole URL, ``keyfile_password=...``
included. :func:`protect` installs one :class:`SecretFilter` on their loggers (when a
provider or publisher is built, never at import) that masks, in every record they emit,
each AMQP URL's password and query values and the secrets of every URL passed to
:func:`protect`: in the message and its arguments, and in a formatted traceback.
"""

from __future__ import annotations

import logging
import threading

from loafer_rabbit._url import scrub, secrets_of

__all__ = ["SecretFilter", "protect"]

#: Loggers whose records are filtered (and their children).
LIBRARY_LOGGERS = ("aio_pika", "aiormq", "pamqp", "loafer_rabbit")
#: Child loggers these libraries create only when they first log: created up front.
_LAZY_LOGGERS = ("aiormq.connection.marshall",)


class SecretFilter(logging.Filter):
    """Masks AMQP URLs and known secrets in log records; never drops a record."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._known: set[str] = set()
        # Longest first, so that a secret containing another is masked whole.
        self.secrets: tuple[str, ...] = ()

    def add(self, secrets: tuple[str, ...]) -> None:
        """Mask these strings too, from now on."""
        with self._lock:
            if self._known.issuperset(secrets):
                return
            self._known.update(secrets)
            self.secrets = tuple(sorted(self._known, key=len, reverse=True))

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self.secrets
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: logging reports it itself, unchanged
            return True
        clean = scrub(message, secrets)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            clean = scrub(record.exc_text, secrets)
            if clean != record.exc_text:
                # Formatters print exc_text when set; drop the raw exception so that no
                # handler formats it again from exc_info, secrets included.
                record.exc_text, record.exc_info = clean, None
        if record.stack_info:
            record.stack_info = scrub(record.stack_info, secrets)
        return True


_FILTER = SecretFilter()
_install_lock = threading.Lock()


def protect(url: str) -> None:
    """Mask ``url``'s secrets, and every AMQP URL's password and query values, in the
    records of aio-pika's, aiormq's, pamqp's and this plugin's loggers. Idempotent."""
    _FILTER.add(secrets_of(url))
    with _install_lock:
        for name in _LAZY_LOGGERS:
            logging.getLogger(name)
        names = [
            name
            for name in list(logging.root.manager.loggerDict)
            if any(name == p or name.startswith(p + ".") for p in LIBRARY_LOGGERS)
        ]
        for name in (*LIBRARY_LOGGERS, *names):
            logger = logging.getLogger(name)
            if _FILTER not in logger.filters:
                logger.addFilter(_FILTER)
