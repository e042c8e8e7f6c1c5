"""A check's progress as server-sent events: read from the job's Redis stream, resumable
with ``Last-Event-ID``; the terminal event carries the final job view. A token holds at
most MAX_STREAMS_PER_TOKEN streams, a process at most ``max_event_streams``."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

import redis.asyncio as aioredis
from aiohttp import web

from detector.vocabulary import Event, Problem
from worker import keys
from worker.views import job_view

from .context import REDIS, SETTINGS, STORE, STREAM_REDIS, STREAMS_OPEN, TOKEN_NAME, base_url, readable_job
from .problems import ApiProblem

log = logging.getLogger(__name__)
SSE_BLOCK_MS = 5_000  # one XREAD waits at most this long for new events
SSE_KEEPALIVE_MS = 15_000  # a comment line this often keeps proxies from closing an idle stream
# Each open event stream holds a Redis connection while it waits: a token may hold this many
# at once (a popup, a bot and a report page each follow a check; more is a leak or an attack).
MAX_STREAMS_PER_TOKEN = 8
STREAM_STALE_S = 3 * SSE_KEEPALIVE_MS / 1000  # a stream not seen for this long no longer counts


class StreamSlot:
    """One of a token's MAX_STREAMS_PER_TOKEN places for an open event stream: a sorted set
    per token (member: this stream, score: when it was last seen), so a stream whose API
    process died stops counting after STREAM_STALE_S."""

    def __init__(self, r: aioredis.Redis, name: str):
        self.r, self.key, self.id = r, f"df:streams:{name}", uuid.uuid4().hex

    async def acquire(self) -> None:
        now = time.time()
        p = self.r.pipeline()
        p.zremrangebyscore(self.key, 0, now - STREAM_STALE_S)
        p.zadd(self.key, {self.id: now})
        p.zcard(self.key)
        p.expire(self.key, int(STREAM_STALE_S) + 60)
        *_, count, _ = await p.execute()
        if count > MAX_STREAMS_PER_TOKEN:
            await self.r.zrem(self.key, self.id)
            raise ApiProblem(429, Problem.TOO_MANY_STREAMS, "Too many open event streams",
                             f"A token may follow at most {MAX_STREAMS_PER_TOKEN} checks' events at once; "
                             "close one, or poll GET /v1/checks/{id}.", headers={"Retry-After": "5"})

    async def touch(self) -> None:
        await self.r.zadd(self.key, {self.id: time.time()})
        await self.r.expire(self.key, int(STREAM_STALE_S) + 60)

    async def release(self) -> None:
        try:
            await self.r.zrem(self.key, self.id)
        except aioredis.RedisError as e:  # it goes stale on its own
            log.warning("could not free a stream place: %r", e)


async def check_events(request: web.Request) -> web.StreamResponse:
    rec = await readable_job(request)
    open_ = request.app[STREAMS_OPEN]
    limit = request.app[SETTINGS].max_event_streams
    if open_["n"] >= limit:  # this process's stream pool is full: capacity, not the client's fault
        raise ApiProblem(503, Problem.TOO_MANY_STREAMS, "The service follows too many checks right now",
                         f"This server holds {limit} event streams at once; poll GET /v1/checks/{{id}}, "
                         "or open the stream again in a few seconds.", headers={"Retry-After": "5"})
    slot = StreamSlot(request.app[REDIS], request[TOKEN_NAME])
    await slot.acquire()
    open_["n"] += 1
    try:
        return await _stream_events(request, rec, request.app[STREAM_REDIS], slot)
    finally:
        open_["n"] -= 1
        await slot.release()


async def _stream_events(request: web.Request, rec: dict, r: aioredis.Redis, slot: StreamSlot) -> web.StreamResponse:
    stream = keys.events(rec["id"])
    last = request.headers.get("Last-Event-ID") or "0"
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    await resp.write(b"retry: 2000\n\n")  # EventSource reconnects after 2 s, resuming from Last-Event-ID
    idle = 0
    try:
        while True:
            # BLOCK stays well under the client's socket timeout (REDIS_SOCKET_TIMEOUT_S).
            got = await r.xread({stream: last}, block=SSE_BLOCK_MS, count=100)
            if not got:
                idle += 1
                if idle * SSE_BLOCK_MS >= SSE_KEEPALIVE_MS:
                    idle = 0
                    await resp.write(b": keep-alive\n\n")
                    await slot.touch()
                    if not await r.exists(stream):
                        break
                continue
            for _, entries in got:
                for ev_id, fields in entries:
                    last = ev_id
                    ev = Event.from_fields(fields)
                    data = ev.to_json()
                    if ev.terminal:  # what a renderer needs (report, links, problem): no GET after it
                        final = await request.app[STORE].get(rec["id"])
                        data["view"] = job_view(final or rec, base_url(request))
                    name = "done" if ev.terminal else "progress"
                    await resp.write(f"id: {ev_id}\nevent: {name}\ndata: {json.dumps(data)}\n\n".encode())
                    if ev.terminal:
                        return resp
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    except aioredis.RedisError as e:
        # Headers are sent: no problem document can follow. End the stream; the client
        # reconnects with Last-Event-ID and misses nothing.
        log.warning("event stream of %s ended early: %r", rec["id"], e)
    return resp
