"""Signed callbacks: when a check ends, its final job view is POSTed to every ``callback_url``
its submitters gave (``POST /v1/checks``), signed as Slack signs its requests.

The request a receiver gets::

    POST <callback_url>
    Content-Type: application/json
    X-Deepfake-Delivery: <id>        the same on every retry of one callback (deduplicate on it)
    X-Deepfake-Timestamp: <unix s>   when this attempt was signed
    X-Deepfake-Signature: v1=<hex>   HMAC-SHA256(key, "v1:" + timestamp + ":" + body)
    <body: the job view, as GET /v1/checks/{id} returns it>

``key`` is the hex sha256 of the submitting API token (``signing_key(token)``): the service
keeps only that hash, the token's holder can compute it. A receiver checks the signature
and that the timestamp is within five minutes (:func:`verify`), and refuses a delivery id
it has seen (a replay). Attempts: one at once, then after 2, 4, 8, 16 and 32 s; a 2xx ends
them, as do a 4xx other than 408 and 429 (the receiver refused: trying again will not help)
and an address the private-address guard refuses. Every connection goes through that guard,
as media links do.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Mapping

import redis

from detector.errors import DetectorError
from detector.netguard import check_url, guard_connections

from . import keys
from .settings import ServiceSettings
from .views import job_view

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Deepfake-Signature"
TIMESTAMP_HEADER = "X-Deepfake-Timestamp"
DELIVERY_HEADER = "X-Deepfake-Delivery"
TOLERANCE_S = 300
BACKOFF_S = (2, 4, 8, 16, 32)  # the waits between attempts
MAX_URL_CHARS = 2048


def signing_key(token: str) -> str:
    """The key a token's callbacks are signed with: its hex sha256."""
    return keys.hash_token(token)


def sign(key: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(key.encode(), b"v1:" + str(timestamp).encode() + b":" + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(key: str, headers: Mapping[str, str], body: bytes, now: float | None = None,
           tolerance_s: int = TOLERANCE_S) -> bool:
    """Whether a callback request is genuine and fresh (not whether it was seen before: a
    receiver keeps the delivery ids it accepted for that)."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        ts = int(lower.get(TIMESTAMP_HEADER.lower(), ""))
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(key, ts, body), lower.get(SIGNATURE_HEADER.lower(), ""))


def new_entry(url: str, owner: str) -> tuple[str, str]:
    """A callback to remember in ``keys.callbacks(job)``: (its delivery id, its record)."""
    return uuid.uuid4().hex, json.dumps({"url": url, "owner": owner, "attempts": 0})


class Retryable(Exception):
    """At least one callback of the job may succeed on a later attempt."""


def deliver(r: redis.Redis, settings: ServiceSettings, job_id: str, allow_private: list[str]) -> int:
    """POST the job's final view to each of its callbacks not yet delivered; returns how many
    were delivered now. Raises :class:`Retryable` when some should be tried again."""
    rec = r.hgetall(keys.job(job_id))
    pending = r.hgetall(keys.callbacks(job_id))
    if not rec or not pending:
        return 0
    body = json.dumps(job_view(rec, settings.public_url.rstrip("/"))).encode()
    delivered, again = 0, False
    for delivery, raw in pending.items():
        cb = json.loads(raw)
        outcome = _attempt(r, cb, delivery, body, allow_private)
        if outcome == "retry" and cb["attempts"] + 1 <= len(BACKOFF_S):
            cb["attempts"] += 1
            r.hset(keys.callbacks(job_id), delivery, json.dumps(cb))
            again = True
            continue
        r.hdel(keys.callbacks(job_id), delivery)
        if outcome == "delivered":
            delivered += 1
            r.hincrby(keys.STATS, "callbacks_delivered", 1)
        else:
            r.hincrby(keys.STATS, "callbacks_failed", 1)
            log.warning("callback %s of job %s to %s given up (%s)", delivery, job_id, cb["url"], outcome)
    if again:
        raise Retryable(job_id)
    return delivered


def _attempt(r: redis.Redis, cb: dict, delivery: str, body: bytes, allow_private: list[str]) -> str:
    """'delivered', 'retry', or why it is given up."""
    import requests

    key = r.get(keys.token_name_key(cb["owner"]))
    if not key:
        return "the token was revoked"
    ts = int(time.time())
    headers = {"Content-Type": "application/json", "User-Agent": "deepfake-check-callback/1",
               DELIVERY_HEADER: delivery, TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign(key, ts, body)}
    session = requests.Session()
    session.trust_env = False  # no proxy: the guard must see the real peer
    try:
        with guard_connections(allow_private):
            check_url(cb["url"], allow_private)
            resp = session.post(cb["url"], data=body, headers=headers, timeout=(5, 15), allow_redirects=False)
    except DetectorError as e:  # a private address (also after DNS changed), a malformed link
        return f"refused: {e.detail}"
    except requests.RequestException as e:
        log.info("callback %s: %s; trying again", delivery, type(e).__name__)
        return "retry"
    finally:
        session.close()
    if 200 <= resp.status_code < 300:
        return "delivered"
    if resp.status_code >= 500 or resp.status_code in (408, 429):
        return "retry"
    return f"the receiver answered HTTP {resp.status_code}"
