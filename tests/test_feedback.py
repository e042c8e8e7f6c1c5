"""Feedback on a verdict ("this looks right / this looks wrong") through the real API, worker
and Redis: stored once per person, changed, counted in /metrics and the model card,
exported as CSV, erased with its check."""

import csv
import io
import json
import subprocess
import sys
import uuid

import requests

from .conftest import shared
from .test_callbacks import wait_for


def auth(token):
    return {"Authorization": f"Bearer {token}"}


def checked(service, loopback, token, name="obama2.jpg", route=None) -> str:
    route = route or f"/fb-{uuid.uuid4().hex[:6]}.jpg"
    loopback.routes[route] = (200, {"Content-Type": "image/jpeg"}, shared("media", "unlabeled", name).read_bytes())
    job_id = requests.post(service.base + "/v1/checks", json={"url": loopback.url(route)},
                           headers=auth(token), timeout=30).json()["id"]
    wait_for(lambda: requests.get(f"{service.base}/v1/checks/{job_id}", headers=auth(token),
                                  timeout=10).json()["state"] in ("done", "failed"))
    return job_id


def put(service, token, job_id, **body):
    return requests.put(f"{service.base}/v1/checks/{job_id}/feedback", json=body, headers=auth(token), timeout=10)


def test_one_opinion_per_person_changeable_counted_and_exported(service, loopback):
    token, other = (service.token(f"fb-{uuid.uuid4().hex[:8]}") for _ in range(2))
    job_id = checked(service, loopback, token)
    first = put(service, token, job_id, opinion="right", user="u1")
    assert first.status_code == 200, first.text
    assert first.json() == {"check": job_id, "opinion": "right", "previous": None, "feedback": {"right": 1, "wrong": 0}}
    changed = put(service, token, job_id, opinion="wrong", user="u1").json()
    assert changed["previous"] == "right" and changed["feedback"] == {"right": 0, "wrong": 1}
    assert put(service, token, job_id, opinion="wrong", user="u2").json()["feedback"] == {"right": 0, "wrong": 2}
    mine = requests.get(f"{service.base}/v1/checks/{job_id}/feedback", params={"user": "u1"},
                        headers=auth(token), timeout=10).json()
    assert mine["opinion"] == "wrong" and mine["feedback"] == {"right": 0, "wrong": 2}
    # stored under pseudonyms, with the check's lifetime
    stored = service.redis.hgetall(f"df:feedback:{job_id}")
    assert len(stored) == 2 and not any("u1" in k or "u2" in k for k in stored)
    assert 0 < service.redis.ttl(f"df:feedback:{job_id}") <= service.redis.ttl(f"df:job:{job_id}") + 1

    # refused: no opinion, another token's check, a user id too long
    assert put(service, token, job_id, opinion="maybe").status_code == 400
    assert put(service, other, job_id, opinion="wrong").status_code == 404
    assert put(service, token, job_id, opinion="wrong", user="x" * 201).status_code == 400

    metrics = requests.get(f"{service.base}/metrics", timeout=10).text
    disputed = [ln for ln in metrics.splitlines() if ln.startswith('deepfake_feedback_checks{kind="disputed"}')]
    assert disputed and int(float(disputed[0].split()[-1])) >= 1
    card = requests.get(f"{service.base}/v1/model-card", timeout=10).json()
    assert card["user_feedback"]["disputed"] >= 1 and card["user_feedback"]["opinions"]["wrong"] >= 2
    page = requests.get(f"{service.base}/v1/model-card", headers={"Accept": "text/html"}, timeout=10).text
    assert "What readers said" in page and "Readers disputed" in page

    out = subprocess.run([sys.executable, "-m", "worker.feedback", "export"], env=service.env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [r for r in csv.DictReader(io.StringIO(out.stdout)) if r["check_id"] == job_id]
    assert [r["opinion"] for r in rows] == ["wrong", "wrong"]
    view = requests.get(f"{service.base}/v1/checks/{job_id}", headers=auth(token), timeout=10).json()
    assert float(rows[0]["score"]) == view["report"]["score"]
    assert all(m["name"] in rows[0]["models"] and m["version"] in rows[0]["models"] for m in view["report"]["models"])
    assert rows[0]["sha256"] == view["report"]["source"]["sha256"] and rows[0]["client"]
    summary = subprocess.run([sys.executable, "-m", "worker.feedback", "summary"], env=service.env,
                             capture_output=True, text=True, timeout=60)
    assert json.loads(summary.stdout)["disputed"] >= 1

    # the retention rules: erased with the check
    assert requests.delete(f"{service.base}/v1/checks/{job_id}", headers=auth(token), timeout=10).status_code == 204
    assert not service.redis.exists(f"df:feedback:{job_id}")


def test_no_opinion_before_the_end_or_on_a_failed_check(service, loopback):
    token = service.token(f"fb-{uuid.uuid4().hex[:8]}")
    loopback.routes["/fb-slow.jpg"] = (200, {"Content-Type": "image/jpeg"},
                                       shared("media", "unlabeled", "obama3.jpg").read_bytes())
    loopback.delays["/fb-slow.jpg"] = 5.0
    running = requests.post(service.base + "/v1/checks", json={"url": loopback.url("/fb-slow.jpg")},
                            headers=auth(token), timeout=30).json()["id"]
    early = put(service, token, running, opinion="wrong")
    assert early.status_code == 409 and early.json()["type"].endswith("/check-running")
    loopback.routes["/fb-broken.mp4"] = (200, {"Content-Type": "video/mp4"}, b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 500)
    failed = requests.post(service.base + "/v1/checks", json={"url": loopback.url("/fb-broken.mp4")},
                           headers=auth(token), timeout=30).json()["id"]
    wait_for(lambda: requests.get(f"{service.base}/v1/checks/{failed}", headers=auth(token),
                                  timeout=10).json()["state"] == "failed")
    late = put(service, token, failed, opinion="wrong")
    assert late.status_code == 409 and late.json()["type"].endswith("/no-verdict")
    assert not service.redis.exists(f"df:feedback:{failed}")
