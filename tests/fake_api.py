"""The part every fake platform API shares: an aiohttp server on 127.0.0.1 that records
each call, and a way to wait for a call that matches."""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod

from aiohttp import web


class FakeApi(ABC):
    def __init__(self):
        self.calls: list[tuple[str, dict]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    @abstractmethod
    def routes(self, app: web.Application) -> None:
        """Add the fake's routes to ``app``."""

    def calls_of(self, method: str) -> list[dict]:
        return [p for m, p in self.calls if m == method]

    async def wait_for(self, predicate, timeout: float = 180.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m, p in self.calls:
                if predicate(m, p):
                    return p
            await asyncio.sleep(0.1)
        raise AssertionError(f"no matching call; calls: {[m for m, _ in self.calls]}")

    async def start(self) -> str:
        app = web.Application(client_max_size=100 * 2**20)
        self.routes(app)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        return self.url

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()
