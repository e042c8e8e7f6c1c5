"""The API's typed state (aiohttp ``AppKey``s, one per resource) and what every handler
starts with: the token check, the job lookup, the public base URL, handing a job to the queue."""

from __future__ import annotations

import asyncio
import json
import re

import redis.asyncio as aioredis
from aiohttp import web

from detector.errors import DetectorError
from detector.netguard import check_url
from detector.vocabulary import TERMINAL, Problem
from worker import callbacks, keys
from worker.celery_app import DELIVER_TASK, FETCH_TASK
from worker.settings import ServiceSettings

from .problems import ApiProblem
from .store import ApiStore

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
MAX_AUTH_FAILURES_PER_MIN = 30  # per client address: wrong or missing tokens
JOB_ID = re.compile(r"^[0-9a-f]{32}$")


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


def as_bool(v) -> bool:
    return v is True or str(v).lower() in ("1", "true", "yes", "on")


async def readable_job(request: web.Request) -> dict[str, str]:
    """The job, if this token asked for it; another token's check is as unknown as a
    missing one (its id alone opens only the report page and the gallery)."""
    name = await authorise(request, "read")
    rec = await job_or_404(request)
    if not await request.app[STORE].can_read(rec, name):
        raise unknown_check()
    return rec


async def callback_url_of(request: web.Request, raw) -> str | None:
    """A submission's ``callback_url``, vetted now as media links are (public http(s) only);
    the worker vets it again where it connects (worker.callbacks)."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or len(raw.strip()) > callbacks.MAX_URL_CHARS:
        raise ApiProblem(400, Problem.BAD_REQUEST, "The callback_url cannot be used",
                         f"Send callback_url as an http(s) URL of at most {callbacks.MAX_URL_CHARS} characters.")
    url = raw.strip()
    try:  # resolving the host blocks: off the event loop
        await asyncio.get_running_loop().run_in_executor(None, check_url, url, request.app[ALLOW_HOSTS])
    except DetectorError as e:
        raise ApiProblem(400, e.code, "The callback_url cannot be used", f"callback_url: {e.detail}") from e
    return url


async def add_callback(request: web.Request, job_id: str, url: str, owner: str) -> None:
    """Remember the callback; a check that has already ended (a cached result) is delivered now."""
    r, s = request.app[REDIS], request.app[SETTINGS]
    p = r.pipeline()
    p.hset(keys.callbacks(job_id), *callbacks.new_entry(url, owner))
    p.expire(keys.callbacks(job_id), s.live_ttl())
    p.hget(keys.job(job_id), "state")
    *_, state = await p.execute()
    if state in TERMINAL:  # also when it ended between its creation and now
        celery = request.app[CELERY]
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: celery.send_task(DELIVER_TASK, args=[job_id]))


MAX_JSON_BYTES = 64 * 1024


async def json_body(request: web.Request):
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
