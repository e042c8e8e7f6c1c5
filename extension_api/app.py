"""The HTTP API (aiohttp) for the browser extension, the bots and report pages.

  POST /v1/checks                 JSON {"url": ..., "fresh": false} or multipart "file" -> 202
  GET  /v1/checks/{id}            status, progress, report
  GET  /v1/checks/{id}/events     server-sent events of the job's progress
  GET  /v1/checks/{id}/gallery.png
  GET  /v1/model-card             JSON, or HTML for browsers
  GET  /v1/token                  the token's name (clients test their connection)
  GET  /r/{id}                    the human report page
  GET  /healthz, /metrics

``/v1/checks`` needs ``Authorization: Bearer <token>``. The gallery and the report
page are reachable by their unguessable job id alone, so bots can link to them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import shutil
import time
import uuid
from pathlib import Path

import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_log import AccessLogger
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff

from detector.errors import DetectorError
from detector.modelcard import model_card
from detector.netguard import check_url
from detector.settings import DetectorSettings
from detector.vocabulary import Event, Problem
from worker import keys
from worker.celery_app import FETCH_TASK, make_celery
from worker.settings import ServiceSettings

from .pages import model_card_page, report_page
from .problems import ApiProblem, from_detector_error, problem_response
from .store import ApiStore, job_view

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", ServiceSettings)
REDIS = web.AppKey("redis", aioredis.Redis)
STREAM_REDIS = web.AppKey("stream_redis", aioredis.Redis)  # event streams' own pool
STREAMS_OPEN = web.AppKey("streams_open", dict)  # {"n": open event streams in this process}
STORE = web.AppKey("store", ApiStore)
CELERY = web.AppKey("celery", object)
METRICS = web.AppKey("metrics", dict)
ALLOW_HOSTS = web.AppKey("allow_hosts", list)  # exempt from the private-address guard (tests)
TOKEN_NAME = web.RequestKey("token_name", str)  # the name of the token that authorised the request

REDIS_SOCKET_TIMEOUT_S = 15
REDIS_POOL_WAIT_S = 5  # a request waits this long for a free pooled connection
SSE_BLOCK_MS = 5_000  # one XREAD waits at most this long for new events
SSE_KEEPALIVE_MS = 15_000  # a comment line this often keeps proxies from closing an idle stream
# Each open event stream holds a Redis connection while it waits: a token may hold this many
# at once (a popup, a bot and a report page each follow a check; more is a leak or an attack).
MAX_STREAMS_PER_TOKEN = 8
STREAM_STALE_S = 3 * SSE_KEEPALIVE_MS / 1000  # a stream not seen for this long no longer counts
# Extension origins in the forms browsers send: Chrome's (and Edge's) 32 letters a-p, a UUID
# for Firefox and Safari. Anything else claiming to be an extension is not one.
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
EXTENSION_ORIGIN = re.compile(rf"^(chrome-extension://[a-p]{{32}}|moz-extension://{_UUID}|safari-web-extension://{_UUID})$")
MAX_AUTH_FAILURES_PER_MIN = 30  # per client address: wrong or missing tokens
JOB_ID = re.compile(r"^[0-9a-f]{32}$")


# -- middlewares ---------------------------------------------------------------------------

@web.middleware
async def error_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except ApiProblem as p:
        return problem_response(p.status, p.code, p.title, p.detail, request.path, p.headers, **p.extra)
    except DetectorError as e:
        p = from_detector_error(e)
        return problem_response(p.status, p.code, p.title, p.detail, request.path)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        titles = {404: "Not found", 405: "Method not allowed", 413: "Request too large"}
        detail = {404: "There is nothing at this address.", 413: "The upload is larger than the limit."}
        return problem_response(e.status, re.sub(r"\W+", "-", e.reason.lower()), titles.get(e.status, e.reason),
                                detail.get(e.status, e.text or e.reason), request.path)
    except asyncio.CancelledError:
        raise
    except (aioredis.ConnectionError, aioredis.TimeoutError) as e:  # the store is down: come back later
        log.warning("Redis unreachable on %s: %r", request.path, e)
        return problem_response(503, Problem.SERVICE_UNAVAILABLE, "The service is unavailable",
                                "The job store does not answer; try again in a few seconds.", request.path,
                                {"Retry-After": "5"})
    except Exception:
        log.exception("unhandled error on %s", request.path)
        return problem_response(500, Problem.INTERNAL_ERROR, "Internal error",
                                "Something went wrong on our side.", request.path)


def cors_allowed(settings: ServiceSettings, origin: str | None) -> bool:
    if not origin:
        return False
    if settings.cors_origins:
        return origin in settings.cors_origins
    return bool(EXTENSION_ORIGIN.match(origin))


@web.middleware
async def cors_middleware(request: web.Request, handler):
    origin = request.headers.get("Origin")
    allowed = cors_allowed(request.app[SETTINGS], origin)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        if not allowed:
            return web.Response(status=403)
        resp = web.Response(status=204)
        resp.headers.update({"Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                             "Access-Control-Allow-Headers": "Authorization, Content-Type, Last-Event-ID, Idempotency-Key",
                             "Access-Control-Max-Age": "600"})
    else:
        resp = await handler(request)
    if allowed:
        resp.headers["Access-Control-Allow-Origin"] = origin
        resp.headers["Access-Control-Expose-Headers"] = "Location, Retry-After"
        resp.headers["Vary"] = "Origin"
    return resp


@web.middleware
async def metrics_middleware(request: web.Request, handler):
    m = request.app[METRICS]
    t0 = time.perf_counter()
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    finally:
        m["requests"].labels(request.method, route, str(status)).inc()
        m["latency"].labels(request.method, route).observe(time.perf_counter() - t0)


# -- helpers -------------------------------------------------------------------------------

async def authorise(request: web.Request, kind: str) -> str:
    store = request.app[STORE]
    client = request.remote or "unknown"
    await store.check_auth_failures(client, MAX_AUTH_FAILURES_PER_MIN)  # guessing tokens is slowed down
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or len(token) < 5:  # the scheme is case-insensitive (RFC 7235)
        await store.auth_failed(client)
        raise ApiProblem(401, Problem.UNAUTHORISED, "Missing API token",
                         "Send 'Authorization: Bearer <token>'; tokens come from `deepfake-token create NAME`.",
                         headers={"WWW-Authenticate": 'Bearer realm="deepfake-check"'})
    name = await store.token_name(token)
    if name is None:
        await store.auth_failed(client)
        raise ApiProblem(401, Problem.BAD_TOKEN, "Unknown or revoked API token",
                         "This token is not valid; ask the service's operator for a new one.",
                         headers={"WWW-Authenticate": 'Bearer realm="deepfake-check", error="invalid_token"'})
    s = request.app[SETTINGS]
    limit = s.rate_limit_per_min if kind == "submit" else s.read_rate_limit_per_min
    await request.app[STORE].rate_limit(name, kind, limit)
    request[TOKEN_NAME] = name
    return name


def base_url(request: web.Request) -> str:
    return request.app[SETTINGS].public_url.rstrip("/")


def unknown_check() -> ApiProblem:
    return ApiProblem(404, Problem.UNKNOWN_CHECK, "Unknown check", "No check has this id; it may have expired.")


async def job_or_404(request: web.Request) -> dict[str, str]:
    jid = request.match_info["id"]
    rec = await request.app[STORE].get(jid) if JOB_ID.match(jid) else {}
    if not rec:
        raise unknown_check()
    return rec


async def enqueue(request: web.Request, job_id: str, upload_path: str | None = None) -> None:
    celery = request.app[CELERY]
    args = [job_id] if upload_path is None else [job_id, upload_path]
    # send_task talks to Redis synchronously: keep it off the event loop.
    await asyncio.get_running_loop().run_in_executor(None, lambda: celery.send_task(FETCH_TASK, args=args))


def _as_bool(v) -> bool:
    return v is True or str(v).lower() in ("1", "true", "yes", "on")


# -- handlers ------------------------------------------------------------------------------

MAX_JSON_BYTES = 64 * 1024


async def _json_body(request: web.Request):
    """The JSON body, at most 64 KB; anything that is not plain JSON is a 400, not a 500
    (deep nesting, 5,000-digit numbers, bad UTF-8)."""
    announced = request.content_length or 0
    raw = b"" if announced > MAX_JSON_BYTES else await request.content.read(MAX_JSON_BYTES + 1)
    if announced > MAX_JSON_BYTES or len(raw) > MAX_JSON_BYTES:
        raise ApiProblem(413, Problem.REQUEST_TOO_LARGE, "The request is too large",
                         "JSON bodies are limited to 64 KB; send a medium as a multipart upload.")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError, UnicodeDecodeError):  # JSONDecodeError is a ValueError
        raise ApiProblem(400, Problem.BAD_REQUEST, "The body is not JSON",
                         'Send JSON like {"url": "https://..."} or a multipart form with a "file".') from None


IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,128}$")  # printable ASCII, as the IETF draft's keys are


async def create_check(request: web.Request) -> web.Response:
    """A new check. With an ``Idempotency-Key`` header, a retry of a submission whose answer
    was lost (a browser closed mid-request) gets the check the first attempt created."""
    owner = await authorise(request, "submit")
    store = request.app[STORE]
    idem = request.headers.get("Idempotency-Key")
    if idem is None:
        return await _create_check(request, owner)
    if not IDEMPOTENCY_KEY.match(idem):
        raise ApiProblem(400, Problem.BAD_REQUEST, "The Idempotency-Key is malformed",
                         "Send 1 to 128 printable ASCII characters, e.g. a UUID.")
    earlier = await store.claim_idempotency(owner, idem)
    if earlier:
        rec = await store.get(earlier)
        if rec:
            return web.json_response(job_view(rec, base_url(request), "shared"), status=200,
                                     headers={"Location": f"/v1/checks/{earlier}", "Idempotent-Replayed": "true"})
    try:
        resp = await _create_check(request, owner)
    except BaseException:  # nothing was created: a retry with the key may try again
        await store.release_idempotency(owner, idem)
        raise
    await store.remember_idempotency(owner, idem, resp.headers["Location"].rsplit("/", 1)[1])
    return resp


async def _create_check(request: web.Request, owner: str) -> web.Response:
    store = request.app[STORE]
    if request.content_type.startswith("multipart/"):
        job_id, how = await _create_from_upload(request, owner)
    else:
        body = await _json_body(request)
        url = body.get("url") if isinstance(body, dict) else None
        if not isinstance(url, str) or not url.strip():
            raise ApiProblem(400, Problem.BAD_REQUEST, "No link given", 'Send JSON like {"url": "https://..."}.')
        url = url.strip()
        if len(url) > 4096:
            raise ApiProblem(400, Problem.BAD_REQUEST, "The link is too long", "Links are limited to 4096 characters.")
        # Resolving the host blocks: off the event loop. The worker checks again when it connects.
        await asyncio.get_running_loop().run_in_executor(None, check_url, url,
                                                         request.app[ALLOW_HOSTS])
        job_id, how = await store.create(input=url, owner=owner, fresh=_as_bool(body.get("fresh")),
                                         normalised=keys.normalise_url(url))
        if how == "new":
            try:
                await enqueue(request, job_id)
            except BaseException:  # the broker refused it: no record may wait in "queued" for days
                await store.forget(job_id, keys.normalise_url(url))
                raise
    rec = await store.get(job_id)
    view = job_view(rec, base_url(request), how)
    status = 200 if how == "cached" else 202
    return web.json_response(view, status=status, headers={"Location": f"/v1/checks/{job_id}"})


BIDI_AND_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
MAX_NAME_CHARS = 120


def display_name(raw: str | None) -> str:
    """A file name as the report shows it: the last path part, without control, direction-
    override or invisible characters, at most 120 characters. Pages escape it; it never
    names a file on disk."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in BIDI_AND_INVISIBLE.sub("", name) if c.isprintable()).strip(" .")
    if not name:
        return "upload"
    if len(name) > MAX_NAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        ext = f".{ext}" if dot and len(ext) <= 5 else ""
        name = name[: MAX_NAME_CHARS - len(ext) - 1] + "…" + ext
    return name


def stored_name(display: str) -> str:
    """The upload's name on disk: fixed, with the extension only if it is plain (the probe
    reads the content, not the name)."""
    ext = Path(display).suffix.lower()
    return "upload" + (ext if re.fullmatch(r"\.[a-z0-9]{1,5}", ext) else "")


async def _next_part(reader):
    try:
        return await reader.next()
    except LineTooLong as e:
        if "filename" in str(e):
            raise ApiProblem(400, Problem.BAD_FILE_NAME, "The file name is too long",
                             "The upload's file name is longer than 8,000 characters; rename the file.") from e
        raise ApiProblem(400, Problem.BAD_REQUEST, "The upload is malformed",
                         "A header of the form is too long.") from e
    except (ValueError, KeyError, AssertionError, HttpProcessingError) as e:
        if "filename" in str(e):  # e.g. a NUL or a line break in the name: the header is refused
            raise ApiProblem(400, Problem.BAD_FILE_NAME, "The file name cannot be read",
                             "The upload's file name holds characters a form may not carry; rename the file.") from e
        raise ApiProblem(400, Problem.BAD_REQUEST, "The upload is malformed",
                         f'Send a multipart form with the medium in a field "file" ({type(e).__name__}).') from e


async def _create_from_upload(request: web.Request, owner: str) -> tuple[str, str]:
    s = request.app[SETTINGS]
    try:
        reader = await request.multipart()
    except (ValueError, KeyError, AssertionError, HttpProcessingError) as e:
        raise ApiProblem(400, Problem.BAD_REQUEST, "The upload is malformed",
                         "A multipart upload needs a boundary in its Content-Type; send a form with a field "
                         "\"file\".") from e
    fresh = False
    while True:
        part = await _next_part(reader)
        if part is None:
            raise ApiProblem(400, Problem.BAD_REQUEST, "No file in the upload", 'Send the medium in a form field "file".')
        if part.name == "fresh":
            fresh = _as_bool(await part.text())
            continue
        if part.name == "file":
            break
    name = display_name(part.filename)
    store = request.app[STORE]
    job_id, _ = await store.create(input=name, owner=owner, fresh=fresh, upload=True)
    folder = s.work_dir(job_id) / "upload"
    path = folder / stored_name(name)
    loop = asyncio.get_running_loop()
    try:  # whatever goes wrong from here, no record stays queued and no file stays behind
        await loop.run_in_executor(None, lambda: folder.mkdir(parents=True, exist_ok=True))
        size = 0
        f = await loop.run_in_executor(None, open, path, "wb")
        try:
            while True:
                try:
                    chunk = await part.read_chunk(1 << 20)
                except (ValueError, AssertionError, HttpProcessingError) as e:
                    raise ApiProblem(400, Problem.BAD_REQUEST, "The upload is malformed",
                                     f"The form's file part could not be read ({type(e).__name__}).") from e
                if not chunk:
                    break
                size += len(chunk)
                if size > s.max_upload_bytes:
                    raise ApiProblem(413, Problem.TOO_LARGE, "The file is too large",
                                     f"Uploads are limited to {s.max_upload_bytes / 2**20:.0f} MB.")
                await loop.run_in_executor(None, f.write, chunk)
        finally:
            await loop.run_in_executor(None, f.close)
        if size == 0:
            raise ApiProblem(400, Problem.BAD_REQUEST, "The file is empty", "The uploaded file has no content.")
        await enqueue(request, job_id, str(path))
    except BaseException:
        await loop.run_in_executor(None, lambda: shutil.rmtree(s.work_dir(job_id), ignore_errors=True))
        await store.forget(job_id)
        raise
    return job_id, "new"


async def token_info(request: web.Request) -> web.Response:
    """Who the token belongs to: lets a client test its connection and token."""
    name = await authorise(request, "read")
    return web.json_response({"name": name})


async def readable_job(request: web.Request) -> dict[str, str]:
    """The job, if this token asked for it; another token's check is as unknown as a
    missing one (its id alone opens only the report page and the gallery)."""
    name = await authorise(request, "read")
    rec = await job_or_404(request)
    if not await request.app[STORE].can_read(rec, name):
        raise unknown_check()
    return rec


async def get_check(request: web.Request) -> web.Response:
    rec = await readable_job(request)
    return web.json_response(job_view(rec, base_url(request)))


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
                    name = "done" if ev.terminal else "progress"
                    await resp.write(f"id: {ev_id}\nevent: {name}\ndata: {json.dumps(ev.to_json())}\n\n".encode())
                    if ev.terminal:
                        return resp
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    except aioredis.RedisError as e:
        # Headers are sent: no problem document can follow. End the stream; the client
        # reconnects with Last-Event-ID and misses nothing.
        log.warning("event stream of %s ended early: %r", rec["id"], e)
    return resp


async def gallery(request: web.Request) -> web.StreamResponse:
    rec = await job_or_404(request)
    path = request.app[SETTINGS].results_dir(rec["id"]) / "gallery.png"
    if rec.get("has_gallery") != "1" or not path.is_file():
        raise ApiProblem(404, Problem.NO_GALLERY, "No gallery yet",
                         "The gallery exists once the check is done.")
    return web.FileResponse(path, headers={"Cache-Control": "private, max-age=86400"})


async def report_html(request: web.Request) -> web.Response:
    rec = await job_or_404(request)
    html = report_page(job_view(rec, base_url(request)), f"{base_url(request)}/v1/model-card")
    return web.Response(text=html, content_type="text/html")


async def model_card_handler(request: web.Request) -> web.Response:
    card = model_card()
    accept = request.headers.get("Accept", "")
    if "text/html" in accept and "application/json" not in accept:
        return web.Response(text=model_card_page(card), content_type="text/html")
    return web.json_response(card)


async def healthz(request: web.Request) -> web.Response:
    try:
        await asyncio.wait_for(request.app[REDIS].ping(), 2)
    except Exception as e:  # any failure to answer is the same answer: not healthy
        raise ApiProblem(503, Problem.UNHEALTHY, "Redis is unreachable", "The queue's store does not answer.") from e
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics: with DEEPFAKE_METRICS_TOKEN set, for that bearer token; without
    it, only for scrapers on this machine (loopback)."""
    want = request.app[SETTINGS].metrics_token
    if want:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip(), want):
            raise ApiProblem(401, Problem.UNAUTHORISED, "Metrics need their token",
                             "Send 'Authorization: Bearer <DEEPFAKE_METRICS_TOKEN>'.",
                             headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    elif request.remote not in ("127.0.0.1", "::1"):
        raise ApiProblem(403, Problem.FORBIDDEN, "Metrics are local",
                         "Set DEEPFAKE_METRICS_TOKEN to scrape /metrics from another machine.")
    body = generate_latest(request.app[METRICS]["registry"]).decode()
    stats = await request.app[STORE].stats()
    lines = ["# HELP deepfake_jobs_total Jobs by outcome, since the Redis store began.",
             "# TYPE deepfake_jobs_total counter"]
    for k, v in sorted(stats.items()):
        lines.append(f'deepfake_jobs_total{{outcome="{k}"}} {v}')
    return web.Response(text=body + "\n".join(lines) + "\n", headers={"Content-Type": CONTENT_TYPE_LATEST})


# -- the app -------------------------------------------------------------------------------

async def _redis_ctx(app: web.Application):
    s = app[SETTINGS]

    def client(size: int) -> aioredis.Redis:
        # A connection Redis dropped (a restart) is replaced and the command tried again; a
        # real outage still answers 503 after about a second.
        pool = aioredis.BlockingConnectionPool.from_url(
            s.redis_url, decode_responses=True, max_connections=size, timeout=REDIS_POOL_WAIT_S,
            socket_timeout=REDIS_SOCKET_TIMEOUT_S, socket_connect_timeout=5,
            retry=AsyncRetry(ExponentialBackoff(cap=0.5, base=0.05), 4),
            retry_on_error=[aioredis.ConnectionError, aioredis.TimeoutError])
        return aioredis.Redis(connection_pool=pool)

    r, streams = client(s.redis_pool_size), client(s.max_event_streams)
    app[REDIS], app[STREAM_REDIS], app[STREAMS_OPEN] = r, streams, {"n": 0}
    app[STORE] = ApiStore(s, r)
    yield
    await r.aclose()
    await streams.aclose()


async def _celery_ctx(app: web.Application):
    app[CELERY] = make_celery(app[SETTINGS])
    yield
    app[CELERY].close()


def create_app(settings: ServiceSettings | None = None) -> web.Application:
    settings = settings or ServiceSettings()
    app = web.Application(middlewares=[cors_middleware, metrics_middleware, error_middleware],
                          client_max_size=settings.max_upload_bytes + (1 << 20))
    app[SETTINGS] = settings
    app[ALLOW_HOSTS] = DetectorSettings().allow_private_hosts
    registry = CollectorRegistry()
    app[METRICS] = {
        "registry": registry,
        "requests": Counter("deepfake_api_requests_total", "API requests", ["method", "route", "status"],
                            registry=registry),
        "latency": Histogram("deepfake_api_request_seconds", "API request latency", ["method", "route"],
                             registry=registry),
    }
    app.cleanup_ctx.extend([_redis_ctx, _celery_ctx])
    app.router.add_post("/v1/checks", create_check)
    app.router.add_get("/v1/checks/{id}", get_check)
    app.router.add_get("/v1/token", token_info)
    app.router.add_get("/v1/checks/{id}/events", check_events)
    app.router.add_get("/v1/checks/{id}/gallery.png", gallery)
    app.router.add_get("/v1/model-card", model_card_handler)
    app.router.add_get("/r/{id}", report_html)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


class QuietAccessLogger(AccessLogger):
    """The access log without the polls: successful reads of a check's status, its events,
    health and metrics are logged only at DEBUG, so submissions, errors and the workers'
    verdict lines are what an operator reads. Query strings are never logged (a token
    pasted into one must not land in the log)."""

    QUIET = ("/v1/checks/", "/healthz", "/metrics", "/v1/token")

    def log(self, request, response, time: float) -> None:
        if (request.method in ("GET", "HEAD", "OPTIONS") and response.status < 400
                and request.path.startswith(self.QUIET) and not self.logger.isEnabledFor(logging.DEBUG)):
            return
        v = request.version
        self.logger.info('%s "%s %s HTTP/%d.%d" %d %d %.3fs "%s"', request.remote, request.method, request.path,
                         v.major, v.minor, response.status, response.body_length, time,
                         request.headers.get("User-Agent", "-"))


def main() -> None:  # pragma: no cover - `python -m extension_api.app`
    import argparse

    p = argparse.ArgumentParser(description="Run the API alone (deepfake-serve runs the whole stack).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from .server import serve

    settings = ServiceSettings()
    asyncio.run(serve(create_app(settings), a.host, a.port, settings.header_timeout_s,
                      access_log_class=QuietAccessLogger))


if __name__ == "__main__":
    main()
