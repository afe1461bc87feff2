"""The edge of a plugin: its library's exceptions mapped to loafer-core's.

httpcore's pattern: the calls into the library run inside ``with map_exceptions(...)``,
and nothing but a :class:`~loafer_core.errors.LoaferError` (or what the translation
returns) leaves the block, chained to nothing (the library's exception may quote a
password).
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Literal

from loafer_core.errors import LoaferError

__all__ = ["map_exceptions"]


class map_exceptions:
    """``with map_exceptions(translate):`` raises ``translate(exc) from None`` for an
    exception ``exc`` of the ``catch`` types raised in the block.

    ``translate`` is the plugin's table of what becomes what (for example
    ``lambda exc: operation_error("connecting", exc, url)``). A
    :class:`~loafer_core.errors.LoaferError` (already translated), cancellation and
    anything outside ``catch`` pass untouched. ``chain``, when given, says what to chain
    the translated error to (``chain(exc)``: ``exc`` when its text is known to be clean,
    else None)::

        with map_exceptions(lambda exc: ProviderError(f"reading: {type(exc).__name__}")):
            rows = await client.read()
    """

    __slots__ = ("_catch", "_chain", "_translate")

    def __init__(
        self,
        translate: Callable[[Exception], BaseException],
        catch: type[Exception] | tuple[type[Exception], ...] = Exception,
        *,
        chain: Callable[[Exception], BaseException | None] | None = None,
    ) -> None:
        self._translate = translate
        self._catch = catch
        self._chain = chain

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> Literal[False]:
        if (
            isinstance(exc, Exception)
            and isinstance(exc, self._catch)
            and not isinstance(exc, LoaferError)
        ):
            cause = self._chain(exc) if self._chain is not None else None
            raise self._translate(exc) from cause
        return False
