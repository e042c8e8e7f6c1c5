"""The service end to end: real redis-server, Celery worker and API processes on 127.0.0.1,
the real pipeline on devset media served from a loopback HTTP server."""

import contextlib
import json
import subprocess
import sys
import time

import pytest
import requests

from .conftest import ROOT, shared

PNG = b"\x89PNG\r\n\x1a\n"


def auth(token):
    return {"Authorization": f"Bearer {token}"}


def submit(service, token, url=None, **extra):
    return requests.post(service.base + "/v1/checks", json={"url": url, **extra}, headers=auth(token), timeout=30)


def wait_done(service, token, job_id, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = requests.get(f"{service.base}/v1/checks/{job_id}", headers=auth(token), timeout=10).json()
        assert "state" in view, view
        if view["state"] in ("done", "failed"):
            return view
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish:\n{service.worker_log.read_text()[-3000:]}")


def sse(service, token, job_id):
    events = []
    with requests.get(f"{service.base}/v1/checks/{job_id}/events", headers=auth(token), stream=True,
                      timeout=240) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        name = None
        for line in r.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
                if name == "done":
                    break
    return events


def assert_problem(resp, status, code):
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    body = resp.json()
    assert body["status"] == status and body["type"].endswith("/" + code), body
    assert body["title"] and body["detail"]
    return body


@pytest.fixture(scope="module")
def media(service, tmp_path_factory):
    from .conftest import LoopbackServer

    srv = LoopbackServer()
    # film_fake's streams remuxed with a tag of this module's own: the same frames, bytes no
    # other test sends the session's stack (whose caches are shared), so the first check here
    # runs the analysis instead of finding another module's result by content
    clip_path = tmp_path_factory.mktemp("service_media") / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(shared("media", "devset", "videos", "film_fake.mp4")),
                    "-c", "copy", "-map_metadata", "-1", "-metadata", "comment=tests/test_service.py",
                    str(clip_path)], check=True)
    clip = clip_path.read_bytes()
    srv.routes["/clip.mp4"] = (200, {"Content-Type": "video/mp4"}, clip)
    srv.routes["/repost/same.mp4"] = (200, {"Content-Type": "video/mp4"}, clip)
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def first_job(service, media):
    token = service.token("journalist")
    r = submit(service, token, media.url("/clip.mp4") + "?utm_source=x")
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["Location"] == f"/v1/checks/{job['id']}" and job["state"] in ("queued", "running")  # a free worker may have started it
    events = sse(service, token, job["id"])
    return token, job, events


def test_submit_progress_report_gallery(service, first_job):
    token, job, events = first_job
    stages = [e["stage"] for _, e in events]
    for st in ("queued", "downloading", "segmenting", "detecting_faces", "scoring", "done"):
        assert st in stages, stages
    assert stages.index("downloading") < stages.index("segmenting") < stages.index("scoring")
    faces_events = [e for _, e in events if e["stage"] == "detecting_faces" and "total" in e]
    assert faces_events and faces_events[-1]["done"] <= faces_events[-1]["total"]
    view = wait_done(service, token, job["id"])
    assert view["state"] == "done" and not view["seen_before"]
    # the terminal event carries the final view, so a follower needs no GET after it
    assert events[-1][0] == "done" and events[-1][1]["view"] == view
    report = view["report"]
    assert report["status"] == "scored" and report["shots"] and 0 <= report["score"] <= 1
    g = requests.get(view["links"]["gallery"], timeout=10)
    assert g.status_code == 200 and g.content[:8] == PNG and g.headers["Content-Type"] == "image/png"
    # the downloaded media is gone once the job ended
    assert not (service.data_dir / "jobs" / job["id"]).exists()
    # the report is stored once (in the job, served as JSON); the gallery is a file beside it
    assert sorted(p.name for p in (service.data_dir / "results" / job["id"]).iterdir()) == ["gallery.png"]


def test_same_link_again_is_a_cache_hit(service, media, first_job):
    token, job, _ = first_job
    before = list(media.requests)
    r = submit(service, token, media.url("/clip.mp4"))  # tracking parameter dropped: same link
    assert r.status_code == 200
    view = r.json()
    assert view["id"] == job["id"] and view["seen_before"] and view["state"] == "done"
    assert view["report"]["score"] is not None
    assert media.requests == before  # nothing was downloaded again


def test_same_content_under_another_link_is_a_hit(service, media, first_job):
    token, job, _ = first_job
    r = submit(service, token, media.url("/repost/same.mp4"))
    assert r.status_code == 202
    view = wait_done(service, token, r.json()["id"])
    assert view["id"] != job["id"] and view["same_content_as"] == job["id"] and view["seen_before"]
    first = wait_done(service, token, job["id"])
    mine, theirs = dict(view["report"]), dict(first["report"])
    assert mine.pop("source")["input"] == media.url("/repost/same.mp4")  # what this asker sent
    theirs.pop("source")
    assert mine == theirs  # the stored analysis, not a new one
    assert "/repost/same.mp4" in media.requests


def test_a_content_hit_for_another_token_shows_nothing_of_the_first_asker(service, media, first_job):
    _, job, _ = first_job
    other = service.token("another-newsroom")
    media.routes["/theirs/renamed.mp4"] = media.routes["/clip.mp4"]
    r = submit(service, other, media.url("/theirs/renamed.mp4"))
    assert r.status_code == 202
    view = wait_done(service, other, r.json()["id"])
    assert view["seen_before"] and view["report"]["score"] is not None
    assert "same_content_as" not in view  # the first check's id would open its report page
    assert "/clip.mp4" not in json.dumps(view) and view["report"]["source"]["input"].endswith("/theirs/renamed.mp4")


def test_a_check_is_read_through_the_api_by_the_tokens_that_asked_for_it(service, media, first_job):
    token, job, _ = first_job
    other = service.token("another-desk")
    for path in (f"/v1/checks/{job['id']}", f"/v1/checks/{job['id']}/events"):
        assert_problem(requests.get(service.base + path, headers=auth(other), timeout=10), 404, "unknown-check")
    assert requests.get(service.base + f"/v1/checks/{job['id']}", headers=auth(token), timeout=10).ok
    # the report page and the gallery are capability URLs: the id alone opens them
    assert requests.get(f"{service.base}/r/{job['id']}", timeout=10).status_code == 200
    assert requests.get(f"{service.base}/v1/checks/{job['id']}/gallery.png", timeout=10).content[:8] == PNG
    # asking for the same link makes the cached check this token's too
    hit = submit(service, other, media.url("/clip.mp4"))
    assert hit.status_code == 200 and hit.json()["id"] == job["id"]
    assert requests.get(service.base + f"/v1/checks/{job['id']}", headers=auth(other), timeout=10).ok


def test_fresh_run_and_shared_concurrent_requests(service, media, first_job):
    token, job, _ = first_job
    a = submit(service, token, media.url("/clip.mp4"), fresh=True)
    b = submit(service, token, media.url("/clip.mp4"))  # while the fresh run is in progress
    assert a.status_code == 202 and a.json()["id"] != job["id"]
    assert b.status_code == 202 and b.json()["id"] == a.json()["id"] and b.json()["request"] == "shared"
    fresh = wait_done(service, token, a.json()["id"])
    assert fresh["state"] == "done" and not fresh["seen_before"]
    assert fresh["report"]["created_at"] != wait_done(service, token, job["id"])["report"]["created_at"]


def test_event_stream_survives_a_long_quiet_stage(service, media):
    """No event for longer than Redis's default 5 s socket timeout: the stream must hold."""
    token = service.token("patient-reader")
    media.routes["/slow/film.mp4"] = (200, {"Content-Type": "video/mp4"},
                                      shared("media", "devset", "videos", "film_real.mp4").read_bytes())
    media.delays["/slow/film.mp4"] = 7.0
    job_id = submit(service, token, media.url("/slow/film.mp4")).json()["id"]
    events = sse(service, token, job_id)
    assert events[-1][0] == "done" and events[-1][1]["state"] == "done"
    stamps = [float(e["ts"]) for _, e in events]
    assert max(b - a for a, b in zip(stamps, stamps[1:])) > 6.0  # the quiet gap really happened


def test_transient_errors_are_retried(service, media):
    token = service.token("retry")
    busy = (503, {"Content-Type": "text/plain"}, b"busy")
    media.routes["/flaky/film.mp4"] = (200, {"Content-Type": "video/mp4"},
                                       shared("media", "devset", "videos", "ffpp_003_000_fake.mp4").read_bytes())
    media.sequences["/flaky/film.mp4"] = [busy, busy]
    job_id = submit(service, token, media.url("/flaky/film.mp4")).json()["id"]
    view = wait_done(service, token, job_id)
    assert view["state"] == "done", view.get("problem")
    assert media.requests.count("/flaky/film.mp4") == 3  # two 503s, then the file
    events = [e for _, e in sse(service, token, job_id)]
    assert sum("Trying again" in e["message"] for e in events) == 2


def test_bad_input_fails_the_job_with_a_sentence_and_the_worker_survives(service, media):
    token = service.token("bad-input")
    dead = submit(service, token, media.url("/gone.mp4"))
    assert dead.status_code == 202
    view = wait_done(service, token, dead.json()["id"])
    assert view["state"] == "failed" and view["problem"]["code"] == "not-found"
    assert "404" in view["problem"]["detail"]
    page = requests.get(view["links"]["report_page"], timeout=10)
    assert page.status_code == 200 and "could not be completed" in page.text and "404" in page.text
    junk = requests.post(service.base + "/v1/checks", headers=auth(token),
                         files={"file": ("clip.mp4", b"\x00\x01junk" * 500, "video/mp4")}, timeout=30)
    assert junk.status_code == 202
    view = wait_done(service, token, junk.json()["id"])
    assert view["state"] == "failed" and view["problem"]["code"] == "corrupt-media"
    # the worker is still there: an upload of a real photo goes through
    photo = shared("media", "unlabeled", "obama.jpg").read_bytes()
    ok = requests.post(service.base + "/v1/checks", headers=auth(token),
                       files={"file": ("obama.jpg", photo, "image/jpeg")}, timeout=30)
    view = wait_done(service, token, ok.json()["id"])
    assert view["state"] == "done" and view["report"]["media"]["kind"] == "image"
    assert len(view["report"]["faces"]) == 1


def test_a_failed_link_is_checked_again_and_in_flight_requests_share(service, media):
    """Only finished reports are cache hits: a link that failed (the site was down) is
    fetched again on the next request."""
    token = service.token("retry-later")
    first = submit(service, token, media.url("/later/film.mp4"))
    failed = wait_done(service, token, first.json()["id"])
    assert failed["state"] == "failed" and failed["problem"]["code"] == "not-found"
    media.routes["/later/film.mp4"] = (200, {"Content-Type": "video/mp4"},
                                       shared("media", "devset", "videos", "film_real.mp4").read_bytes())
    media.delays["/later/film.mp4"] = 2.0
    again = submit(service, token, media.url("/later/film.mp4"))
    twin = submit(service, token, media.url("/later/film.mp4"))  # while the new one is in progress
    assert again.status_code == 202 and again.json()["request"] == "new"
    assert again.json()["id"] != failed["id"]
    assert twin.json()["id"] == again.json()["id"] and twin.json()["request"] == "shared"
    view = wait_done(service, token, again.json()["id"])
    assert view["state"] == "done", view.get("problem")
    assert media.requests.count("/later/film.mp4") == 2  # the failure, then the revived file
    hit = submit(service, token, media.url("/later/film.mp4"))
    assert hit.status_code == 200 and hit.json()["id"] == view["id"] and hit.json()["request"] == "cached"


def test_api_errors_are_problem_json(service):
    token = service.token("errors")
    assert_problem(requests.post(service.base + "/v1/checks", json={"url": "https://example.org/a.mp4"},
                                 timeout=10), 401, "unauthorised")
    assert_problem(submit(service, "dfk_not-a-real-token", "https://example.org/a.mp4"), 401, "bad-token")
    assert_problem(requests.get(service.base + "/v1/checks/" + "0" * 32, headers=auth(token), timeout=10),
                   404, "unknown-check")
    assert_problem(requests.get(service.base + "/v1/checks/../../etc", headers=auth(token), timeout=10),
                   404, "not-found")
    assert_problem(requests.post(service.base + "/v1/checks", data="{not json", headers=auth(token), timeout=10),
                   400, "bad-request")
    assert_problem(submit(service, token, None), 400, "bad-request")
    body = assert_problem(submit(service, token, "http://10.1.2.3/video.mp4"), 422, "private-address")
    assert "private" in body["detail"]
    assert_problem(submit(service, token, "ftp://example.org/a.mp4"), 422, "unsupported-url")
    assert_problem(requests.get(service.base + "/nope", timeout=10), 404, "not-found")


def test_the_auth_scheme_is_case_insensitive_and_tokens_stay_out_of_the_log(service):
    token = service.token("lower-case")
    for scheme in ("bearer", "BEARER", "Bearer"):
        r = requests.get(service.base + "/v1/token", headers={"Authorization": f"{scheme} {token}"}, timeout=10)
        assert r.status_code == 200 and r.json()["name"] == "lower-case"
    r = requests.get(service.base + f"/v1/checks/{'0' * 32}?token={token}", timeout=10)
    assert r.status_code == 401
    time.sleep(0.5)
    api_log = service.data_dir.parent / "api.log"
    assert token not in api_log.read_text()


def test_rate_limit_per_token(service):
    token = service.token("hasty")
    codes = [submit(service, token, "http://10.0.0.1/x.mp4").status_code for _ in range(9)]
    assert codes[:8] == [422] * 8
    body = assert_problem(submit(service, token, "http://10.0.0.1/x.mp4"), 429, "rate-limited")
    assert "8" in body["detail"]
    other = service.token("patient")
    assert submit(service, other, "http://10.0.0.1/x.mp4").status_code == 422  # limits are per token
    # a sliding window: after the refusals, the allowance comes back one by one, a minute
    # after each request it counted, not all at once at the turn of a minute
    r = service.redis
    key = "df:rl:hasty:submit"
    assert r.zcard(key) == 8  # refused requests are not counted


def test_cors_is_open_to_extension_origins_only(service):
    pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    chrome = "chrome-extension://" + "abcdefghijklmnopabcdefghijklmnop"
    ok = requests.options(service.base + "/v1/checks", headers={"Origin": chrome, **pre}, timeout=10)
    assert ok.status_code == 204 and ok.headers["Access-Control-Allow-Origin"] == chrome
    assert "Authorization" in ok.headers["Access-Control-Allow-Headers"]
    firefox = "moz-extension://3f2504e0-4f89-41d3-9a0c-0305e82c3301"
    assert requests.options(service.base + "/v1/checks", headers={"Origin": firefox, **pre},
                            timeout=10).status_code == 204
    for fake in ("chrome-extension://evil.example.com", "chrome-extension://abcdefgh",
                 "chrome-extension://" + "q" * 32, "moz-extension://not-a-uuid"):
        assert requests.options(service.base + "/v1/checks", headers={"Origin": fake, **pre},
                                timeout=10).status_code == 403, fake
    bad = requests.options(service.base + "/v1/checks", headers={"Origin": "https://evil.example", **pre},
                           timeout=10)
    assert bad.status_code == 403 and "Access-Control-Allow-Origin" not in bad.headers
    get = requests.get(service.base + "/healthz", headers={"Origin": "https://evil.example"}, timeout=10)
    assert "Access-Control-Allow-Origin" not in get.headers


def test_health_metrics_and_model_card(service, first_job):
    assert requests.get(service.base + "/healthz", timeout=10).json() == {"status": "ok"}
    m = requests.get(service.base + "/metrics", timeout=10).text
    assert "deepfake_api_requests_total" in m and 'deepfake_jobs_total{outcome="jobs_done"}' in m
    card = requests.get(service.base + "/v1/model-card", timeout=10).json()
    names = {x["name"]: x for x in card["members"]}
    assert names["meso4-df"]["trained"] and not names["meve-effnet-b4"]["trained"] and card["caveats"]
    html = requests.get(service.base + "/v1/model-card", headers={"Accept": "text/html"}, timeout=10)
    assert html.headers["Content-Type"].startswith("text/html") and "Model card" in html.text


def test_tokens_cli_create_and_revoke(service):
    env = dict(service.env)
    out = subprocess.run([sys.executable, "-m", "extension_api.tokens", "create", "cli-user"], env=env,
                         capture_output=True, text=True, check=True, cwd=ROOT)
    token = out.stdout.strip()
    assert token.startswith("dfk_")
    assert token not in json.dumps(service.redis.hgetall("df:tokens"))  # stored hashed
    assert_problem(submit(service, token, "http://10.0.0.2/x.mp4"), 422, "private-address")
    subprocess.run([sys.executable, "-m", "extension_api.tokens", "revoke", "cli-user"], env=env, check=True,
                   capture_output=True, cwd=ROOT)
    assert_problem(submit(service, token, "http://10.0.0.2/x.mp4"), 401, "bad-token")


def test_report_page_renders_in_chromium(service, first_job, tmp_path):
    import shutil

    token, job, _ = first_job
    url = f"{service.base}/r/{job['id']}"
    html = requests.get(url, timeout=10)
    assert html.status_code == 200 and html.headers["Content-Type"].startswith("text/html")
    report = wait_done(service, token, job["id"])["report"]
    assert report["verdict_label"] in html.text and "gallery.png" in html.text and "Model card" in html.text
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (scripts/setup.sh installs it)")
    art = ROOT / "out" / "test-artifacts"
    art.mkdir(parents=True, exist_ok=True)
    shot = art / "report_page.png"
    shot.unlink(missing_ok=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=1000,1600"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert report["verdict_label"] in dom.stdout and "<table>" in dom.stdout
    subprocess.run([chromium, *flags, f"--screenshot={shot}", url], capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == PNG and shot.stat().st_size > 20_000


def test_a_killed_worker_process_loses_nothing(service, media):
    """SIGKILL the worker's pool processes mid-analysis: the job is redelivered and finishes."""
    import os
    import signal

    token = service.token("crash")
    media.routes["/other/anchor.mp4"] = (200, {"Content-Type": "video/mp4"},
                                         shared("media", "devset", "videos", "anchor_real.mp4").read_bytes())
    job_id = submit(service, token, media.url("/other/anchor.mp4")).json()["id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        rec = service.redis.hgetall(f"df:job:{job_id}")
        if rec.get("stage") in ("probing", "segmenting", "detecting_faces"):
            break
        assert rec.get("state") != "done", "the analysis finished before it could be interrupted"
        time.sleep(0.02)
    children = [int(p) for p in open(f"/proc/{service.worker_pid}/task/{service.worker_pid}/children")
                .read().split()]
    assert children
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    view = wait_done(service, token, job_id)
    assert view["state"] == "done" and view["report"]["status"] == "scored"
    assert int(service.redis.hget(f"df:job:{job_id}", "deliveries")) == 2  # delivered again, once


def test_a_whole_worker_killed_has_its_jobs_redelivered_within_the_visibility_timeout(
        mesonet_store, tmp_path):
    """SIGKILL the whole worker (main process and pool) mid-download; a new worker gets the
    job again once it has been unacked for the visibility timeout (hard limit + margin), and
    the job's progress says so."""
    import os
    import signal

    from worker.celery_app import RESTORE_SWEEP_S, visibility_timeout_s
    from worker.settings import ServiceSettings

    from .conftest import LoopbackServer, run_stack

    limits = {"DEEPFAKE_FETCH_SOFT_LIMIT_S": "15", "DEEPFAKE_FETCH_HARD_LIMIT_S": "20",
              "DEEPFAKE_ANALYZE_SOFT_LIMIT_S": "25", "DEEPFAKE_ANALYZE_HARD_LIMIT_S": "30"}
    visibility = visibility_timeout_s(ServiceSettings(fetch_hard_limit_s=20, analyze_hard_limit_s=30))
    assert visibility == 60
    media = LoopbackServer()
    media.routes["/photo.jpg"] = (200, {"Content-Type": "image/jpeg"},
                                  shared("media", "unlabeled", "obama.jpg").read_bytes())
    media.delays["/photo.jpg"] = 12.0  # the first download hangs: the worker is killed meanwhile
    try:
        with run_stack(tmp_path, mesonet_store, **limits) as svc:
            token = svc.token("whole-kill")
            job_id = submit(svc, token, media.url("/photo.jpg")).json()["id"]
            deadline = time.monotonic() + 60
            while "/photo.jpg" not in media.requests:
                assert time.monotonic() < deadline, svc.worker_log.read_text()[-2000:]
                time.sleep(0.1)
            os.killpg(svc.worker_pid, signal.SIGKILL)  # the whole worker, not only a pool process
            killed = time.time()
            svc.workers[-1].wait(timeout=10)
            media.delays.pop("/photo.jpg")
            svc.start_worker()
            view = wait_done(svc, token, job_id, timeout=visibility + 120)
            assert view["state"] == "done", view.get("problem")
            events = [e for _, e in sse(svc, token, job_id)]
            again = [e for e in events if "starting it again" in e["message"]]
            assert len(again) == 1 and "attempt 2 of 3" in again[0]["message"]
            waited = float(again[0]["ts"]) - killed
            # redelivered after the visibility timeout, not Redis's default hour
            assert waited <= visibility + 3 * RESTORE_SWEEP_S, waited
            print(f"redelivered {waited:.1f} s after the whole-worker kill (visibility timeout {visibility} s)")
    finally:
        media.close()


def test_hostile_uploads_end_in_a_specific_problem_or_a_report(service, tmp_path):
    """Decompression bombs, images too small for a face, a 2x2 video and file names meant to
    break paths or pages: each gets a specific problem or a report; nothing stays queued and
    nothing stays on disk."""
    from collections import Counter

    from .hostile import hostile_files

    photo = shared("media", "unlabeled", "obama.jpg").read_bytes()
    outcomes, jobs = {}, []
    for i, (label, name, data, _expected) in enumerate(hostile_files(tmp_path, photo)):
        token = service.token(f"hostile-{i}")
        r = requests.post(service.base + "/v1/checks", headers=auth(token),
                          files={"file": (name, data, "application/octet-stream")}, timeout=60)
        assert r.status_code != 500, (label, r.text)
        if r.status_code >= 400:
            outcomes[label] = r.json()["code"] if "code" in r.json() else r.json()["type"].rsplit("/", 1)[-1]
            continue
        view = wait_done(service, token, r.json()["id"])
        jobs.append(view["id"])
        outcomes[label] = "report" if view["state"] == "done" else view["problem"]["code"]
        if view["state"] == "done":
            shown = view["input"]
            assert "/" not in shown and "\x00" not in shown and "\u202e" not in shown and len(shown) <= 120, shown
            page = requests.get(view["links"]["report_page"], timeout=10).text
            assert "<img src=x" not in page
    tally = Counter("internal" if o == "internal-error" else "report" if o == "report" else "problem"
                    for o in outcomes.values())
    print(f"hostile files: {len(outcomes)} tried, {tally['problem']} clear problem, "
          f"{tally['report']} report, {tally['internal']} internal error")
    wrong = {label: o for (label, _, _, expected), o in
             zip(hostile_files(tmp_path, photo), outcomes.values()) if o not in expected}
    assert not wrong, wrong
    for jid in jobs:
        assert service.redis.hget(f"df:job:{jid}", "state") in ("done", "failed")
        assert not (service.data_dir / "jobs" / jid).exists()


def test_hostile_request_bodies_get_a_problem_not_a_500(service):
    token = service.token("hostile-bodies")
    h = {**auth(token), "Content-Type": "application/json"}
    deep = "[" * 100_000 + "]" * 100_000  # 200 KB: over the JSON limit
    assert_problem(requests.post(service.base + "/v1/checks", data=deep, headers=h, timeout=30), 413,
                   "request-too-large")
    deep = "[" * 30_000 + "]" * 30_000  # under the limit, deeper than the parser's recursion
    assert_problem(requests.post(service.base + "/v1/checks", data=deep, headers=h, timeout=30), 400, "bad-request")
    digits = '{"url": ' + "9" * 5000 + "}"
    assert_problem(requests.post(service.base + "/v1/checks", data=digits, headers=h, timeout=30), 400, "bad-request")
    huge = json.dumps({"url": "https://example.org/a.mp4", "pad": "x" * (2 << 20)})
    assert_problem(requests.post(service.base + "/v1/checks", data=huge, headers=h, timeout=30), 413,
                   "request-too-large")
    no_boundary = {**auth(token), "Content-Type": "multipart/form-data"}
    assert_problem(requests.post(service.base + "/v1/checks", data=b"--x\r\n\r\n", headers=no_boundary,
                                 timeout=30), 400, "bad-request")
    garbage = {**auth(token), "Content-Type": "multipart/form-data; boundary=zzz"}
    assert_problem(requests.post(service.base + "/v1/checks", data=b"\x00\xffnot a form at all" * 100,
                                 headers=garbage, timeout=30), 400, "bad-request")
    assert requests.get(service.base + "/healthz", timeout=10).status_code == 200


def test_event_streams_are_bounded_per_token(service, media):
    from extension_api.events import MAX_STREAMS_PER_TOKEN

    token = service.token("many-streams")
    media.routes["/streams/film.mp4"] = (200, {"Content-Type": "video/mp4"},
                                         shared("media", "devset", "videos", "film_real.mp4").read_bytes())
    media.delays["/streams/film.mp4"] = 20.0  # the check stays in progress while streams are open
    job_id = submit(service, token, media.url("/streams/film.mp4")).json()["id"]
    url = f"{service.base}/v1/checks/{job_id}/events"
    held = [requests.get(url, headers=auth(token), stream=True, timeout=30) for _ in range(MAX_STREAMS_PER_TOKEN)]
    try:
        assert all(r.status_code == 200 for r in held)
        extra = requests.get(url, headers=auth(token), stream=True, timeout=30)
        body = assert_problem(extra, 429, "too-many-streams")
        assert str(MAX_STREAMS_PER_TOKEN) in body["detail"]
        assert requests.get(service.base + "/healthz", timeout=10).status_code == 200
        other = service.token("other-desk-streams")
        assert requests.get(service.base + "/healthz", headers=auth(other), timeout=10).status_code == 200
    finally:
        for r in held:
            r.close()
    deadline = time.monotonic() + 30  # a closed stream frees its place
    while True:
        again = requests.get(url, headers=auth(token), stream=True, timeout=30)
        if again.status_code == 200 or time.monotonic() > deadline:
            break
        again.close()
        time.sleep(0.5)
    assert again.status_code == 200
    again.close()
    media.delays.pop("/streams/film.mp4")


@contextlib.asynccontextmanager
async def api_of_its_own(settings):
    """The API app in this process on a loopback port, with its own settings."""
    from aiohttp import web

    from extension_api.app import create_app

    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    finally:
        await runner.cleanup()


async def test_metrics_token_and_failed_logins_per_address(service):
    """An API of its own on another Redis database (the failed-login limit is per address,
    and every test client is 127.0.0.1)."""
    import aiohttp
    import redis as syncredis

    from extension_api.context import MAX_AUTH_FAILURES_PER_MIN
    from extension_api.tokens import create
    from worker.settings import ServiceSettings

    url = service.redis_url.rsplit("/", 1)[0] + "/3"
    syncredis.Redis.from_url(url).flushdb()
    token = create(syncredis.Redis.from_url(url, decode_responses=True), "metrics-test")
    settings = ServiceSettings(redis_url=url, metrics_token="m-secret", data_dir=service.data_dir)
    async with api_of_its_own(settings) as base:
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/metrics") as r:
                assert r.status == 401
            async with http.get(base + "/metrics", headers={"Authorization": "Bearer m-secret"}) as r:
                assert r.status == 200 and "deepfake_api_requests_total" in await r.text()
            statuses = []
            for i in range(MAX_AUTH_FAILURES_PER_MIN + 2):
                async with http.get(base + "/v1/token", headers={"Authorization": f"Bearer dfk_guess{i}"}) as r:
                    statuses.append(r.status)
            assert statuses[:MAX_AUTH_FAILURES_PER_MIN] == [401] * MAX_AUTH_FAILURES_PER_MIN
            assert statuses[-1] == 429
            async with http.get(base + "/v1/token", headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 429  # even a right token: the answer must not tell guesses apart
                assert r.headers["Retry-After"] and r.content_type == "application/problem+json"
    syncredis.Redis.from_url(url).flushdb()


async def test_a_redis_outage_is_a_503_with_retry_after(tmp_path):
    """No store, no 500: every request that needs Redis says to come back."""
    import aiohttp

    from worker.settings import ServiceSettings

    from .conftest import _free_port

    settings = ServiceSettings(redis_url=f"redis://127.0.0.1:{_free_port()}/0", data_dir=tmp_path)
    async with api_of_its_own(settings) as base:
        async with aiohttp.ClientSession() as http:
            for method, path in (("POST", "/v1/checks"), ("GET", "/v1/checks/" + "0" * 32), ("GET", "/v1/token")):
                async with http.request(method, base + path, json={"url": "https://example.org/a.mp4"},
                                        headers={"Authorization": "Bearer dfk_whatever"}) as r:
                    assert r.status == 503, (path, await r.text())
                    assert r.headers["Retry-After"] == "5" and r.content_type == "application/problem+json"
            async with http.get(base + "/healthz") as r:
                assert r.status == 503


def test_retention_zero_delivers_the_reply_then_keeps_nothing(mesonet_store, tmp_path):
    """DEEPFAKE_RETENTION_S=0: links and uploads are answered (no 500), nothing is cached,
    and once the reply had its grace to be fetched, no key, file or folder of the checks is left."""
    from .conftest import LoopbackServer, run_stack

    media = LoopbackServer()
    photo = shared("media", "unlabeled", "obama.jpg").read_bytes()
    media.routes["/p.jpg"] = (200, {"Content-Type": "image/jpeg"}, photo)
    try:
        with run_stack(tmp_path, mesonet_store, DEEPFAKE_RETENTION_S="0", DEEPFAKE_DELIVERY_GRACE_S="4",
                       DEEPFAKE_HOUSEKEEPING_EVERY_S="1") as svc:
            token = svc.token("private-desk")
            first = submit(svc, token, media.url("/p.jpg"))
            assert first.status_code == 202, first.text
            up = requests.post(svc.base + "/v1/checks", headers=auth(token), timeout=30,
                               files={"file": ("mine.jpg", photo, "image/jpeg")})
            assert up.status_code == 202, up.text
            ids = [first.json()["id"], up.json()["id"]]
            for job_id in ids:  # the reply is delivered: the report and its gallery
                view = wait_done(svc, token, job_id)
                assert view["state"] == "done" and view["report"]["status"] == "scored", view
                g = requests.get(f"{svc.base}/v1/checks/{job_id}/gallery.png", headers=auth(token), timeout=10)
                assert g.status_code == 200 and g.content[:8] == b"\x89PNG\r\n\x1a\n"
            again = submit(svc, token, media.url("/p.jpg"))  # not a cache hit: nothing was kept
            assert again.status_code == 202 and again.json()["id"] not in ids
            ids.append(again.json()["id"])
            assert wait_done(svc, token, ids[-1])["state"] == "done"
            assert media.requests.count("/p.jpg") == 2
            assert not svc.redis.keys("df:url:*") and not svc.redis.keys("df:sha:*")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                left = [k for k in svc.redis.keys("*") if any(i in k for i in ids)]
                folders = [p for sub in ("results", "jobs") for p in (svc.data_dir / sub).glob("*")]
                if not left and not folders:
                    break
                time.sleep(0.5)
            assert not left and not folders, (left, folders)
            gone = requests.get(f"{svc.base}/v1/checks/{ids[0]}", headers=auth(token), timeout=10)
            assert_problem(gone, 404, "unknown-check")
    finally:
        media.close()


def test_a_running_check_whose_task_is_gone_is_failed_with_a_sentence(mesonet_store, tmp_path):
    """A running check with no sign of life (its pool process frozen mid-download) is left to
    the redelivery while its message is held unacknowledged; once the message is gone too
    (the task will never run again), the worker's housekeeping fails it with a sentence, and
    the late task, thawed, changes nothing."""
    import os
    import signal

    from .conftest import LoopbackServer, run_stack

    media = LoopbackServer()
    media.routes["/slow.jpg"] = (200, {"Content-Type": "image/jpeg"},
                                 shared("media", "unlabeled", "obama.jpg").read_bytes())
    media.delays["/slow.jpg"] = 3.0
    try:
        with run_stack(tmp_path, mesonet_store, DEEPFAKE_STALE_AFTER_S="3",
                       DEEPFAKE_HOUSEKEEPING_EVERY_S="1") as svc:
            token = svc.token("frozen")
            job_id = submit(svc, token, media.url("/slow.jpg")).json()["id"]
            deadline = time.monotonic() + 60
            while "/slow.jpg" not in media.requests:
                assert time.monotonic() < deadline, svc.worker_log.read_text()[-2000:]
                time.sleep(0.05)
            pool = [int(p) for p in open(f"/proc/{svc.worker_pid}/task/{svc.worker_pid}/children").read().split()]
            for pid in pool:  # the pool freezes; the worker's main process (and its housekeeping) runs on
                os.kill(pid, signal.SIGSTOP)
            try:
                time.sleep(6)  # twice the stale limit, silent: but its message is held (redelivery's case)
                assert svc.redis.hget(f"df:job:{job_id}", "state") == "running"
                held = [t for t, m in svc.redis.hgetall("unacked").items() if job_id in m]
                assert held and svc.redis.hdel("unacked", *held)  # the message is gone: so is the task
                view = wait_done(svc, token, job_id, timeout=60)
            finally:
                for pid in pool:
                    os.kill(pid, signal.SIGCONT)
            assert view["state"] == "failed" and view["problem"]["code"] == "worker-lost", view
            assert "send it again" in view["problem"]["detail"]
            assert svc.redis.zscore("df:live", job_id) is None
            deadline = time.monotonic() + 30  # the thawed task finishes its download: too late to count
            while "'outcome': 'skipped'" not in svc.worker_log.read_text():
                assert time.monotonic() < deadline, svc.worker_log.read_text()[-2000:]
                time.sleep(0.2)
            assert svc.redis.hget(f"df:job:{job_id}", "state") == "failed"  # its analysis never ran
    finally:
        media.close()


async def test_event_streams_have_a_pool_of_their_own(service, media, monkeypatch):
    """Open streams never take the connections requests need: with a pool of 4 for requests
    and room for 3 streams, 3 open streams leave every read answered, and a 4th stream is
    refused with 503 and Retry-After (capacity), not a 500."""
    import asyncio

    import aiohttp

    from worker.settings import ServiceSettings

    monkeypatch.setenv("DEEPFAKE_ALLOW_PRIVATE_HOSTS", '["127.0.0.1"]')
    url = service.redis_url.rsplit("/", 1)[0] + "/4"  # no worker reads this database: the check stays queued
    import redis as syncredis

    from extension_api.tokens import create

    syncredis.Redis.from_url(url).flushdb()
    held = create(syncredis.Redis.from_url(url, decode_responses=True), "stream-pool")
    settings = ServiceSettings(redis_url=url, data_dir=service.data_dir, redis_pool_size=4, max_event_streams=3)
    async with api_of_its_own(settings) as base, aiohttp.ClientSession() as s:
        h = {"Authorization": f"Bearer {held}"}
        async with s.post(f"{base}/v1/checks", headers=h, json={"url": media.url("/never.mp4")}) as r:
            assert r.status == 202
            job_id = (await r.json())["id"]
        streams = []
        for _ in range(3):
            resp = await s.get(f"{base}/v1/checks/{job_id}/events", headers=h)
            assert resp.status == 200
            await resp.content.readline()  # the stream is open and waiting
            streams.append(resp)
        reads = await asyncio.gather(*(s.get(f"{base}/v1/checks/{job_id}", headers=h) for _ in range(40)))
        assert [r.status for r in reads] == [200] * 40
        for r in reads:
            r.release()
        async with s.get(f"{base}/v1/checks/{job_id}/events", headers=h) as r:
            assert r.status == 503 and r.headers["Retry-After"] == "5"
            body = await r.json()
            assert body["type"].endswith("/too-many-streams")
        for r in streams:
            r.close()


def test_what_aiohttp_answers_itself_is_problem_json_and_half_sent_heads_time_out(service):
    import socket
    from urllib.parse import urlsplit

    host, port = urlsplit(service.base).hostname, urlsplit(service.base).port

    def exchange(raw: bytes, wait: float = 10) -> bytes:
        with socket.create_connection((host, port), timeout=wait) as c:
            c.sendall(raw)
            out = b""
            while True:
                try:
                    chunk = c.recv(65536)
                except TimeoutError:
                    return out + b"<no answer>"
                if not chunk:
                    return out
                out += chunk

    def problem(raw_answer: bytes) -> tuple[int, dict]:
        head, _, body = raw_answer.partition(b"\r\n\r\n")
        assert b"application/problem+json" in head.lower(), raw_answer[:300]
        return int(head.split()[1]), json.loads(body)

    long_line = b"GET /v1/checks/" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    status, body = problem(exchange(long_line))
    assert status == 400 and body["type"].endswith("/bad-request") and body["detail"]
    big_header = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"b" * 10_000 + b"\r\n\r\n"
    status, _ = problem(exchange(big_header))
    assert status in (400, 431)
    status, _ = problem(exchange(b"NOT HTTP AT ALL\r\n\r\n"))
    assert status == 400
    # half a head, then nothing: the server answers 408 and closes (DEEPFAKE_HEADER_TIMEOUT_S=2
    # here) before our socket gives up waiting (10 s, which would read as "<no answer>")
    status, body = problem(exchange(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Half: "))
    assert status == 408 and body["type"].endswith("/request-timeout")
    assert requests.get(service.base + "/healthz", timeout=10).status_code == 200  # a whole request is fine


def test_a_redis_restart_mid_job_ends_in_a_finished_job(mesonet_store, tmp_path):
    """Redis stops for 4 s (and comes back from its append-only file) while two checks are
    mid-analysis: both finish, and no record is left running or queued."""
    from .conftest import LoopbackServer, run_stack

    media = LoopbackServer()
    for name in ("anchor_real", "ffpp_003_000_fake"):
        media.routes[f"/{name}.mp4"] = (200, {"Content-Type": "video/mp4"},
                                        shared("media", "devset", "videos", f"{name}.mp4").read_bytes())
    try:
        with run_stack(tmp_path, mesonet_store, redis_persist=True, DEEPFAKE_FRAMES_PER_SHOT_CPU="16") as svc:
            token = svc.token("outage")
            ids = [submit(svc, token, media.url(f"/{n}.mp4")).json()["id"] for n in ("anchor_real", "ffpp_003_000_fake")]
            deadline = time.monotonic() + 120
            while not all(svc.redis.hget(f"df:job:{i}", "stage") in ("probing", "segmenting", "detecting_faces")
                          for i in ids):
                assert time.monotonic() < deadline, svc.worker_log.read_text()[-3000:]
                assert not any(svc.redis.hget(f"df:job:{i}", "state") == "done" for i in ids), \
                    "an analysis finished before Redis could be stopped"
                time.sleep(0.02)
            svc.restart_redis(down_s=4)
            views = [wait_done(svc, token, i, timeout=180) for i in ids]
            assert [v["state"] for v in views] == ["done", "done"], [v.get("problem") for v in views]
            assert all(v["report"]["status"] == "scored" for v in views)
            left = [k for k in svc.redis.keys("df:job:*") if svc.redis.hget(k, "state") in ("running", "queued")]
            assert not left
    finally:
        media.close()


def test_a_check_whose_message_was_lost_is_failed_and_one_waiting_in_the_queue_is_not(mesonet_store, tmp_path):
    """Two checks wait while the pool is frozen. The broker loses one's message: the sweep
    fails it with a sentence. The other's message is still there: it stays queued however
    long it waits, and finishes once the pool runs again."""
    import os
    import signal

    from .conftest import LoopbackServer, run_stack

    media = LoopbackServer()
    media.routes["/a.jpg"] = media.routes["/b.jpg"] = (
        200, {"Content-Type": "image/jpeg"}, shared("media", "unlabeled", "obama.jpg").read_bytes())
    try:
        with run_stack(tmp_path, mesonet_store, DEEPFAKE_STALE_AFTER_S="3", DEEPFAKE_HOUSEKEEPING_EVERY_S="1") as svc:
            token = svc.token("lost-message")
            pool = [int(p) for p in open(f"/proc/{svc.worker_pid}/task/{svc.worker_pid}/children").read().split()]
            for pid in pool:
                os.kill(pid, signal.SIGSTOP)
            try:
                lost, kept = (submit(svc, token, media.url(f"/{n}.jpg")).json()["id"] for n in ("a", "b"))
                deadline = time.monotonic() + 20
                while True:  # find the lost check's message, waiting or delivered, and drop it
                    dropped = sum(svc.redis.lrem(q, 0, m) for q in ("fetch", "analyze")
                                  for m in svc.redis.lrange(q, 0, -1) if lost in m)
                    dropped += sum(svc.redis.hdel("unacked", tag) for tag, m in svc.redis.hgetall("unacked").items()
                                   if lost in m)
                    if dropped:
                        break
                    assert time.monotonic() < deadline, "the check's message never reached the broker"
                    time.sleep(0.1)
                view = wait_done(svc, token, lost, timeout=30)
                assert view["state"] == "failed" and view["problem"]["code"] == "worker-lost", view
                time.sleep(5)  # well past the stale limit: the other one is only waiting
                assert svc.redis.hget(f"df:job:{kept}", "state") == "queued"
            finally:
                for pid in pool:
                    os.kill(pid, signal.SIGCONT)
            assert wait_done(svc, token, kept)["state"] == "done"
            assert not media.requests.count("/a.jpg")  # the lost check never ran
    finally:
        media.close()


def test_a_retried_submission_with_its_idempotency_key_finds_the_first_check(service, media):
    token = service.token("idempotent")
    media.routes["/idem.mp4"] = media.routes["/clip.mp4"]
    h = {**auth(token), "Idempotency-Key": "d5a1c0de-0000-4000-8000-000000000001"}
    first = requests.post(service.base + "/v1/checks", json={"url": media.url("/idem.mp4"), "fresh": True},
                          headers=h, timeout=30)
    assert first.status_code == 202, first.text
    again = requests.post(service.base + "/v1/checks", json={"url": media.url("/idem.mp4"), "fresh": True},
                          headers=h, timeout=30)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]  # "fresh" would have made a second check
    other = requests.post(service.base + "/v1/checks", json={"url": media.url("/idem.mp4"), "fresh": True},
                          headers={**h, "Idempotency-Key": "another"}, timeout=30)
    assert other.json()["id"] != first.json()["id"]
    bad = requests.post(service.base + "/v1/checks", json={"url": media.url("/idem.mp4")},
                        headers={**h, "Idempotency-Key": "x" * 200}, timeout=30)
    assert_problem(bad, 400, "bad-request")
    wait_done(service, token, first.json()["id"])
    wait_done(service, token, other.json()["id"])
