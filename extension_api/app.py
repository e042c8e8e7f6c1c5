"""The HTTP API (aiohttp) for the browser extension, the bots and report pages.

  POST /v1/checks                 JSON {"url": ..., "fresh": false, "retain": true, "callback_url": ...}
                                  or multipart ("fresh", "retain", "callback_url", then "file") -> 202
  GET  /v1/checks/{id}            status, progress, report
  DELETE /v1/checks/{id}          erase an ended check (its submitter only)
  GET  /v1/checks/{id}/events     server-sent events of the job's progress
  GET  /v1/checks/{id}/gallery.png
  GET  /v1/model-card             JSON, or HTML for browsers
  GET  /v1/token                  the token's name (clients test their connection)
  GET  /r/{id}                    the human report page
  GET  /healthz, /metrics

``/v1/checks`` needs ``Authorization: Bearer <token>``. The gallery and the report
page are reachable by their unguessable job id alone, so bots can link to them.

Here: the route table, the handlers and the app's resources. Beside it: ``context`` (typed
app state, the token check, the job lookup), ``middleware`` (problem+json, CORS, metrics,
the access log), ``events`` (server-sent events), ``uploads`` (multipart uploads),
``store`` (the API's Redis reads and writes), ``pages`` (the HTML report and model card).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff

from detector.modelcard import model_card
from detector.netguard import check_url
from detector.settings import DetectorSettings
from detector.vocabulary import TERMINAL, Problem
from worker import keys
from worker.celery_app import make_celery
from worker.settings import ServiceSettings
from worker.views import job_view

from .context import (
    ALLOW_HOSTS,
    CELERY,
    METRICS,
    REDIS,
    REDIS_POOL_WAIT_S,
    REDIS_SOCKET_TIMEOUT_S,
    SETTINGS,
    STORE,
    STREAM_REDIS,
    STREAMS_OPEN,
    TOKEN_NAME,
    add_callback,
    as_bool,
    authorise,
    base_url,
    callback_url_of,
    enqueue,
    job_or_404,
    json_body,
    readable_job,
)
from .events import check_events
from .feedback import get_feedback, put_feedback
from .middleware import QuietAccessLogger, cors_middleware, error_middleware, metrics_middleware
from .pages import model_card_page, report_page
from .problems import ApiProblem
from .store import ApiStore
from .uploads import create_from_upload

log = logging.getLogger(__name__)


# -- handlers ------------------------------------------------------------------------------

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
        job_id, how, callback = await create_from_upload(request, owner)
    else:
        body = await json_body(request)
        url = body.get("url") if isinstance(body, dict) else None
        callback = await callback_url_of(request, body.get("callback_url") if isinstance(body, dict) else None)
        if not isinstance(url, str) or not url.strip():
            raise ApiProblem(400, Problem.BAD_REQUEST, "No link given", 'Send JSON like {"url": "https://..."}.')
        url = url.strip()
        if len(url) > 4096:
            raise ApiProblem(400, Problem.BAD_REQUEST, "The link is too long", "Links are limited to 4096 characters.")
        # Resolving the host blocks: off the event loop. The worker checks again when it connects.
        await asyncio.get_running_loop().run_in_executor(None, check_url, url,
                                                         request.app[ALLOW_HOSTS])
        job_id, how = await store.create(input=url, owner=owner, fresh=as_bool(body.get("fresh")),
                                         retain=as_bool(body.get("retain", True)),
                                         normalised=keys.normalise_url(url))
        if how == "new":
            try:
                await enqueue(request, job_id)
            except BaseException:  # the broker refused it: no record may wait in "queued" for days
                await store.forget(job_id, keys.normalise_url(url))
                raise
    if callback:
        await add_callback(request, job_id, callback, owner)
    rec = await store.get(job_id)
    view = job_view(rec, base_url(request), how)
    status = 200 if how == "cached" else 202
    return web.json_response(view, status=status, headers={"Location": f"/v1/checks/{job_id}"})


async def token_info(request: web.Request) -> web.Response:
    """Who the token belongs to: lets a client test its connection and token."""
    name = await authorise(request, "read")
    return web.json_response({"name": name})


async def get_check(request: web.Request) -> web.Response:
    rec = await readable_job(request)
    return web.json_response(job_view(rec, base_url(request)))


async def delete_check(request: web.Request) -> web.Response:
    """Erase an ended check now: its record, events, report and gallery, and the link's and
    the content's pointers to it. Only the token that submitted it may; to other tokens it
    is as unknown as on GET."""
    rec = await readable_job(request)
    if rec.get("owner") != request[TOKEN_NAME]:
        raise ApiProblem(403, Problem.FORBIDDEN, "Only the submitter can delete a check",
                         "This token read the check as a cached or shared result; the token that "
                         "submitted it may delete it.")
    if rec.get("state") not in TERMINAL:
        raise ApiProblem(409, Problem.CHECK_RUNNING, "The check is still running",
                         "Delete it once it has ended (its events end with done or failed).", headers={"Retry-After": "5"})
    await request.app[STORE].erase(rec)
    return web.Response(status=204)


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
    # what the people who asked said about the verdicts, counted now
    card["user_feedback"] = (await request.app[STORE].feedback_summary()).as_dict() | {
        "note": "Readers can say whether a verdict looks right or wrong where they read it; a disputed "
                "verdict is one at least one reader said looks wrong. Readers are not experts and "
                "cannot see what the detector saw: this counts disagreement, it does not measure accuracy."}
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
    fb = await request.app[STORE].feedback_summary()
    lines += ["# HELP deepfake_feedback_opinions Readers' opinions of verdicts now stored (one per reader per check).",
              "# TYPE deepfake_feedback_opinions gauge",
              f'deepfake_feedback_opinions{{opinion="right"}} {fb.right}',
              f'deepfake_feedback_opinions{{opinion="wrong"}} {fb.wrong}',
              "# HELP deepfake_feedback_checks Checks with feedback now stored, and those disputed (a reader said wrong).",
              "# TYPE deepfake_feedback_checks gauge",
              f'deepfake_feedback_checks{{kind="with_feedback"}} {fb.checks}',
              f'deepfake_feedback_checks{{kind="disputed"}} {fb.disputed}']
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
    app.add_routes([
        web.post("/v1/checks", create_check),
        web.get("/v1/checks/{id}", get_check),
        web.delete("/v1/checks/{id}", delete_check),
        web.get("/v1/token", token_info),
        web.get("/v1/checks/{id}/events", check_events),  # extension_api/events.py
        web.get("/v1/checks/{id}/gallery.png", gallery),
        web.put("/v1/checks/{id}/feedback", put_feedback),  # extension_api/feedback.py
        web.get("/v1/checks/{id}/feedback", get_feedback),
        web.get("/v1/model-card", model_card_handler),
        web.get("/r/{id}", report_html),
        web.get("/healthz", healthz),
        web.get("/metrics", metrics),
    ])
    return app


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
