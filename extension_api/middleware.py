"""The API's middlewares (problem+json for every error, CORS for the extension's origins,
Prometheus request metrics) and its quiet access log."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.web_log import AccessLogger

from detector.errors import DetectorError
from detector.vocabulary import Problem
from worker.settings import ServiceSettings

from .context import METRICS, SETTINGS
from .problems import ApiProblem, from_detector_error, problem_response

log = logging.getLogger(__name__)
# Extension origins in the forms browsers send: Chrome's (and Edge's) 32 letters a-p, a UUID
# for Firefox and Safari. Anything else claiming to be an extension is not one.
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
EXTENSION_ORIGIN = re.compile(rf"^(chrome-extension://[a-p]{{32}}|moz-extension://{_UUID}|safari-web-extension://{_UUID})$")


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
        resp.headers.update({"Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
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
