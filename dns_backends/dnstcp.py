"""One TCP connection to a DNS server, for a few messages in turn (RFC 7766 section 6.2.1).

A write to an RFC 2136 primary is an UPDATE and then the SOA query that checks the serial
moved: both go over one connection, one after the other (the query is sent only once the
UPDATE's reply is in, so it sees the zone as updated). Opening and closing a TCP connection
on a loaded host costs about as much as the query itself.

Bytes in, bytes out: dnspython builds, signs, parses and verifies the messages; this only
frames them (two-byte length). The connection is closed on any error (a late reply must
never be read as the answer to the next message) and when the ``async with`` ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from types import TracebackType


class DnsTcp:
    """``async with DnsTcp(host, port, timeout) as tcp: reply = await tcp.exchange(wire)``."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> DnsTcp:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def exchange(self, wire: bytes, *, idempotent: bool = False) -> bytes:
        """Send one message and return the reply's bytes, within ``timeout`` seconds.

        When the connection was already open and the server had closed it meanwhile (idle
        timeout), an ``idempotent`` message (a query) is sent again on a new one.
        """
        reused = self._writer is not None
        try:
            return await self._once(wire)
        except (EOFError, ConnectionResetError, BrokenPipeError):
            if not (reused and idempotent):
                raise
        return await self._once(wire)

    async def _once(self, wire: bytes) -> bytes:
        try:
            async with asyncio.timeout(self.timeout):
                if self._writer is None or self._reader is None:
                    self._reader, self._writer = await asyncio.open_connection(self.host,
                                                                               self.port)
                self._writer.write(struct.pack("!H", len(wire)) + wire)
                await self._writer.drain()
                (length,) = struct.unpack("!H", await self._reader.readexactly(2))
                return await self._reader.readexactly(length)
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
