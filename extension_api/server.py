"""The HTTP server around the app: problem+json where aiohttp answers by itself, and a
time limit on a request's head.

aiohttp answers malformed requests (a request line or header over its limits, bad
syntax) before any middleware runs, in plain text; here they are RFC 9457 documents like
every other error. And it waits for a request head indefinitely (only an idle keep-alive
connection times out), so 200 clients that send half a head hold 200 connections: here a
connection that has not sent a complete request head within ``header_timeout_s`` gets
``408 request-timeout`` and is closed.

aiohttp has no setting for either, so the request handler is aiohttp's own with these
two behaviours added (``ProblemAppRunner`` makes its server build them).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from detector.vocabulary import Problem

from .problems import PROBLEM_TYPE, problem_response

log = logging.getLogger(__name__)

_PARSER_PROBLEMS = {
    400: (Problem.BAD_REQUEST, "Bad request", "The request line or a header is malformed or too long."),
    413: (Problem.REQUEST_TOO_LARGE, "Request too large", "The request is larger than this API accepts."),
    431: (Problem.BAD_REQUEST, "Request headers too large", "The request's headers are too large."),
}


def _timeout_bytes() -> bytes:
    body = json.dumps({"type": PROBLEM_TYPE + Problem.REQUEST_TIMEOUT, "title": "Request timeout", "status": 408,
                       "detail": "The request's head did not arrive in time."}).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/problem+json\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class ProblemRequestHandler(RequestHandler):
    __slots__ = ()  # aiohttp's handler has slots: a subclass adds none (timers live in _HEAD_TIMERS)
    header_timeout_s = 10.0
    _HEAD_TIMERS: dict[int, asyncio.TimerHandle] = {}

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        loop = asyncio.get_running_loop()
        self._HEAD_TIMERS[id(self)] = loop.call_later(self.header_timeout_s, self._head_late, transport)

    def _head_late(self, transport) -> None:
        self._HEAD_TIMERS.pop(id(self), None)
        if self._request_count == 0 and not transport.is_closing():  # no complete head yet
            transport.write(_timeout_bytes())
            transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._request_count:
            timer = self._HEAD_TIMERS.pop(id(self), None)
            if timer is not None:
                timer.cancel()

    def connection_lost(self, exc) -> None:
        timer = self._HEAD_TIMERS.pop(id(self), None)
        if timer is not None:
            timer.cancel()
        super().connection_lost(exc)

    def handle_error(self, request, status: int = 500, exc=None, message=None):
        if status not in _PARSER_PROBLEMS:
            return super().handle_error(request, status, exc, message)
        log.info("malformed request from %s: %s", request.remote, exc or message)
        code, title, detail = _PARSER_PROBLEMS[status]
        resp = problem_response(status, code, title, detail)
        resp.force_close()
        return resp


class ProblemServer(web.Server):
    def __call__(self) -> RequestHandler:
        handler = super().__call__()
        handler.__class__ = ProblemRequestHandler
        return handler


class ProblemAppRunner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = ProblemServer
        return server


async def serve(app: web.Application, host: str, port: int, header_timeout_s: float, **runner_kwargs) -> None:
    """Serve ``app`` until SIGINT or SIGTERM, then clean up (as ``web.run_app`` does)."""
    ProblemRequestHandler.header_timeout_s = header_timeout_s
    runner = ProblemAppRunner(app, **runner_kwargs)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("serving on http://%s:%d", host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
