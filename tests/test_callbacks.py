"""Callbacks for API clients: POST /v1/checks with a callback_url; when the check ends the
worker POSTs the final job view there, signed with the token's key, retried with backoff,
through the private-address guard. The receiver here is what a client would run: an HTTP
server on 127.0.0.1 that verifies each request and refuses a replay."""

import hashlib
import hmac
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from worker.callbacks import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, signing_key, verify

from .conftest import shared


class Receiver:
    """Answers the first ``fail_first`` requests 503 (the service must try again), then
    accepts a request only if its signature verifies and its delivery id is new."""

    def __init__(self, key: str, fail_first: int = 0):
        self.key, self.fail_first = key, fail_first
        self.got: list[tuple[dict, bytes, int]] = []  # (headers, body, the status answered)
        self.seen: set[str] = set()
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = dict(self.headers.items())
                status = rec.answer(headers, body)
                rec.got.append((headers, body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"

    def answer(self, headers: dict, body: bytes) -> int:
        if len(self.got) < self.fail_first:
            return 503
        if not verify(self.key, headers, body):
            return 401
        if headers[DELIVERY_HEADER] in self.seen:
            return 409  # a replay
        self.seen.add(headers[DELIVERY_HEADER])
        return 204

    def accepted(self) -> list[tuple[dict, bytes, int]]:
        return [g for g in self.got if g[2] == 204]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver_for(service):
    made = []

    def make(fail_first: int = 0):
        token = service.token(f"callbacks-{uuid.uuid4().hex[:8]}")
        rec = Receiver(signing_key(token), fail_first)
        made.append(rec)
        return token, rec

    yield make
    for r in made:
        r.close()


def wait_for(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_a_signed_callback_is_retried_received_verified_and_a_replay_refused(service, loopback, receiver_for):
    token, rec = receiver_for(fail_first=1)
    loopback.routes["/whigham.jpg"] = (200, {"Content-Type": "image/jpeg"},
                                       shared("media", "unlabeled", "shea_whigham.jpg").read_bytes())
    r = requests.post(service.base + "/v1/checks", json={"url": loopback.url("/whigham.jpg"), "callback_url": rec.url},
                      headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    wait_for(lambda: rec.accepted())
    (headers, body, _), = rec.accepted()
    assert rec.got[0][2] == 503 and rec.got[0][0][DELIVERY_HEADER] == headers[DELIVERY_HEADER]  # one delivery, retried
    # the scheme as the README states it, computed here without the service's code
    ts = headers[TIMESTAMP_HEADER]
    want = hmac.new(hashlib.sha256(token.encode()).hexdigest().encode(), f"v1:{ts}:".encode() + body,
                    hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == f"v1={want}" and headers["Content-Type"] == "application/json"
    view = json.loads(body)
    got = requests.get(f"{service.base}/v1/checks/{job_id}", headers={"Authorization": f"Bearer {token}"},
                       timeout=10).json()
    assert view["id"] == job_id and view["state"] == "done" and view["report"] == got["report"]

    # a replay of the captured request: the signature is fine, the delivery id is not new
    replay = requests.post(rec.url, data=body, headers=headers, timeout=10)
    assert replay.status_code == 409
    tampered = requests.post(rec.url, data=body.replace(b'"done"', b'"failed"', 1),
                             headers={**headers, DELIVERY_HEADER: "other"}, timeout=10)
    assert tampered.status_code == 401
    assert not verify(signing_key(token), headers, body, now=int(ts) + 301)  # too old
    assert not verify(signing_key("another token"), headers, body)
    time.sleep(1.0)
    assert len(rec.accepted()) == 1  # delivered once


def test_a_cached_result_is_called_back_at_once_and_a_failure_too(service, loopback, receiver_for):
    token, rec = receiver_for()
    loopback.routes["/whigham.jpg"] = (200, {"Content-Type": "image/jpeg"},
                                       shared("media", "unlabeled", "shea_whigham.jpg").read_bytes())
    auth = {"Authorization": f"Bearer {token}"}
    first = requests.post(service.base + "/v1/checks", json={"url": loopback.url("/whigham.jpg")}, headers=auth,
                          timeout=30).json()
    wait_for(lambda: requests.get(f"{service.base}/v1/checks/{first['id']}", headers=auth,
                                  timeout=10).json()["state"] == "done")
    again = requests.post(service.base + "/v1/checks", json={"url": loopback.url("/whigham.jpg"),
                                                             "callback_url": rec.url}, headers=auth, timeout=30)
    assert again.status_code == 200 and again.json()["seen_before"]  # done already: called back now
    wait_for(lambda: rec.accepted())
    assert json.loads(rec.accepted()[0][1])["id"] == first["id"]

    loopback.routes["/gone.mp4"] = (404, {"Content-Type": "text/plain"}, b"gone")
    failed = requests.post(service.base + "/v1/checks", json={"url": loopback.url("/gone.mp4"),
                                                              "callback_url": rec.url}, headers=auth, timeout=30)
    assert failed.status_code == 202
    wait_for(lambda: len(rec.accepted()) == 2)
    view = json.loads(rec.accepted()[1][1])
    assert view["state"] == "failed" and view["problem"]["code"] == "not-found"


def test_a_private_callback_url_is_refused_before_anything_is_created(service):
    token = service.token(f"callbacks-{uuid.uuid4().hex[:8]}")
    before = service.redis.hget("df:stats", "jobs_submitted")
    for bad in ("http://10.1.2.3/hook", "ftp://example.org/hook", "http://192.168.0.1:8080/x", 42):
        r = requests.post(service.base + "/v1/checks", json={"url": "https://example.org/v.mp4", "callback_url": bad},
                          headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 400 and r.headers["Content-Type"].startswith("application/problem+json"), r.text
        assert "callback_url" in r.json()["detail"]
    assert service.redis.hget("df:stats", "jobs_submitted") == before
