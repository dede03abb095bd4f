"""A TCP proxy on loopback whose link can be cut: the network between reactors and broker.

While cut, it closes every connection it carries and refuses new ones (accepts and
closes them at once, as a dropped route looks to a client that reconnects); afterwards it
forwards again.
"""

from __future__ import annotations

import asyncio
import contextlib

from m8.devservices.manager import free_port

CHUNK = 65536


class CuttableProxy:
    """Forwards 127.0.0.1:`port` to `target_host`:`target_port` until cut."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.cut_now = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._drop_all()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            await self._server.wait_closed()

    async def cut(self, seconds: float) -> None:
        """Cuts the link for `seconds` (a scheduled outage), then restores it."""
        self.cut_now = True
        self._drop_all()
        try:
            await asyncio.sleep(seconds)
        finally:
            self.cut_now = False

    def is_cut(self) -> bool:
        return self.cut_now

    def _drop_all(self) -> None:
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.is_cut():
            client_w.transport.abort()
            return
        try:
            upstream_r, upstream_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.transport.abort()
            return
        if self.is_cut():  # cut while connecting
            client_w.transport.abort()
            upstream_w.transport.abort()
            return
        self._writers |= {client_w, upstream_w}
        pumps = [
            asyncio.create_task(self._pump(client_r, upstream_w)),
            asyncio.create_task(self._pump(upstream_r, client_w)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for writer in (client_w, upstream_w):
                self._writers.discard(writer)
                writer.transport.abort()
            for pump in pumps:
                pump.cancel()
                self._tasks.discard(pump)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
