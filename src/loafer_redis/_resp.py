"""A small RESP2 reader for the blocking ``XREADGROUP`` replies.

redis-py's pure-Python parser awaits the socket once per line: about 15 µs per stream
entry, most of a consumer's time. This reads the reply in chunks and parses it in one
synchronous pass. It knows RESP2 only (the reader's connection is opened with protocol
2: no push messages): arrays, bulk strings, integers, simple strings and errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import redis.exceptions

__all__ = ["pack", "parse", "read_replies", "read_reply"]

_CHUNK = 1 << 16


class Incomplete(Exception):
    """The buffer ends inside the reply; ``need`` bytes in all would go further."""

    def __init__(self, need: int) -> None:
        super().__init__(need)
        self.need = need


def pack(args: Iterable[bytes | str | int]) -> bytes:
    """One command as RESP (an array of bulk strings): what redis-py's ``pack_command``
    sends, without its per-argument work (``str`` is encoded as UTF-8)."""
    parts = []
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"*%d\r\n%s" % (len(parts), b"".join(parts))


def _line(buf: bytes, pos: int) -> int:
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise Incomplete(len(buf) + 1)
    return end


def parse(buf: bytes, pos: int = 0) -> tuple[Any, int]:
    """The value starting at ``pos`` and the position after it; :class:`Incomplete`
    if ``buf`` ends first. An error reply is returned as a ``ResponseError``."""
    if pos >= len(buf):
        raise Incomplete(pos + 1)
    kind = buf[pos]
    end = _line(buf, pos)
    if kind == 36:  # $ bulk string
        n = int(buf[pos + 1 : end])
        if n < 0:
            return None, end + 2
        start = end + 2
        stop = start + n
        if len(buf) < stop + 2:
            raise Incomplete(stop + 2)
        return buf[start:stop], stop + 2
    if kind == 42:  # * array
        n = int(buf[pos + 1 : end])
        if n < 0:
            return None, end + 2
        pos = end + 2
        items = []
        for _ in range(n):
            item, pos = parse(buf, pos)
            items.append(item)
        return items, pos
    if kind == 58:  # : integer
        return int(buf[pos + 1 : end]), end + 2
    if kind == 43:  # + simple string
        return buf[pos + 1 : end], end + 2
    if kind == 45:  # - error
        return redis.exceptions.ResponseError(
            buf[pos + 1 : end].decode("utf-8", "replace")
        ), end + 2
    raise redis.exceptions.InvalidResponse(f"unexpected RESP type byte {chr(kind)!r}")


async def read_replies(
    reader: asyncio.StreamReader, count: int, buf: bytearray | None = None
) -> list[Any]:
    """Read ``count`` whole replies; an error reply is returned as a ``ResponseError``
    value, not raised. ``buf`` holds bytes read past them, kept for the next call (one
    buffer per connection, for replies sent back to back); without it, bytes past the
    replies are an error."""
    own = buf is None
    if buf is None:
        buf = bytearray()
    values: list[Any] = []
    pos = 0
    need = 1
    while True:
        if len(buf) >= need:
            data = bytes(buf)
            try:
                while len(values) < count:
                    value, pos = parse(data, pos)
                    values.append(value)
            except Incomplete as incomplete:
                need = max(incomplete.need, len(buf) + 1)
            else:
                del buf[:pos]
                if own and buf:
                    raise redis.exceptions.InvalidResponse("unexpected data after a reply")
                return values
        chunk = await reader.read(max(_CHUNK, need - len(buf)))
        if not chunk:
            raise redis.exceptions.ConnectionError("Connection closed by server.")
        buf += chunk


async def read_reply(reader: asyncio.StreamReader) -> Any:
    """Read one whole reply; a server error is raised as ``ResponseError``."""
    (value,) = await read_replies(reader, 1)
    if isinstance(value, redis.exceptions.ResponseError):
        raise value
    return value
