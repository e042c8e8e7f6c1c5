"""Zero retention on request ("retain": false) and erasing a check (DELETE /v1/checks/{id}),
through the real API, worker and Redis: nothing of the check is left behind."""

import json
import uuid

import pytest
import requests

from bots.core import CheckBot, ServiceClient
from bots.settings import BotSettings

from .conftest import shared
from .test_bot_flow import Recorded
from .test_callbacks import Receiver, signing_key, wait_for


def auth(token):
    return {"Authorization": f"Bearer {token}"}


def traces(service, job_id: str, sha256: str | None = None) -> list[str]:
    """What the service still holds of a check: its keys, pointers to it, its folders."""
    r = service.redis
    left = [k for k in (f"df:job:{job_id}", f"df:events:{job_id}", f"df:readers:{job_id}",
                        f"df:callbacks:{job_id}", f"df:feedback:{job_id}") if r.exists(k)]
    left += [k for k in r.scan_iter("df:url:*") if r.get(k) == job_id]
    if sha256 and r.get(f"df:sha:{sha256}") == job_id:
        left.append(f"df:sha:{sha256}")
    if r.zscore("df:live", job_id) is not None:
        left.append("df:live")
    left += [str(p) for p in (service.data_dir / "results" / job_id, service.data_dir / "jobs" / job_id) if p.exists()]
    return left


def test_a_check_not_to_be_kept_is_gone_once_its_callback_is_delivered(service, loopback):
    token = service.token(f"zero-{uuid.uuid4().hex[:8]}")
    rec = Receiver(signing_key(token))
    try:
        loopback.routes["/angelina.jpg"] = (200, {"Content-Type": "image/jpeg"},
                                            shared("media", "unlabeled", "angelina_jolie.jpg").read_bytes())
        url = loopback.url("/angelina.jpg")
        r = requests.post(service.base + "/v1/checks", json={"url": url, "retain": False, "callback_url": rec.url},
                          headers=auth(token), timeout=30)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        wait_for(lambda: rec.accepted())
        view = json.loads(rec.accepted()[0][1])
        assert view["state"] == "done" and view["report"]["score"] is not None  # the reply itself is whole
        sha = view["report"]["source"]["sha256"]
        wait_for(lambda: not traces(service, job_id, sha), timeout=30)
        assert requests.get(f"{service.base}/v1/checks/{job_id}", headers=auth(token), timeout=10).status_code == 404
        # nothing was cached: the same link again is analysed anew, and downloaded again
        again = requests.post(service.base + "/v1/checks", json={"url": url}, headers=auth(token), timeout=30)
        assert again.status_code == 202 and again.json()["id"] != job_id and not again.json()["seen_before"]
        wait_for(lambda: loopback.requests.count("/angelina.jpg") == 2)
    finally:
        rec.close()


def test_delete_erases_an_ended_check_for_its_submitter_only(service, loopback):
    owner, other = (service.token(f"erase-{uuid.uuid4().hex[:8]}") for _ in range(2))
    loopback.routes["/aniston.jpg"] = (200, {"Content-Type": "image/jpeg"},
                                       shared("media", "unlabeled", "obama3.jpg").read_bytes())
    loopback.routes["/slow.jpg"] = loopback.routes["/aniston.jpg"]
    loopback.delays["/slow.jpg"] = 6.0
    job_id = requests.post(service.base + "/v1/checks", json={"url": loopback.url("/aniston.jpg")},
                           headers=auth(owner), timeout=30).json()["id"]
    wait_for(lambda: requests.get(f"{service.base}/v1/checks/{job_id}", headers=auth(owner),
                                  timeout=10).json()["state"] in ("done", "failed"))
    view = requests.get(f"{service.base}/v1/checks/{job_id}", headers=auth(owner), timeout=10).json()
    sha = view["report"]["source"]["sha256"]
    assert traces(service, job_id, sha)  # kept, as retention says (the check below can fail)
    assert requests.delete(f"{service.base}/v1/checks/{job_id}", headers=auth(other), timeout=10).status_code == 404
    gone = requests.delete(f"{service.base}/v1/checks/{job_id}", headers=auth(owner), timeout=10)
    assert gone.status_code == 204
    assert traces(service, job_id, sha) == []
    assert requests.get(f"{service.base}/v1/checks/{job_id}", headers=auth(owner), timeout=10).status_code == 404
    assert requests.get(f"{service.base}/r/{job_id}", timeout=10).status_code == 404

    running = requests.post(service.base + "/v1/checks", json={"url": loopback.url("/slow.jpg")},
                            headers=auth(owner), timeout=30).json()["id"]
    busy = requests.delete(f"{service.base}/v1/checks/{running}", headers=auth(owner), timeout=10)
    assert busy.status_code == 409 and busy.json()["type"].rsplit("/", 1)[1] == "check-running"
    wait_for(lambda: requests.get(f"{service.base}/v1/checks/{running}", headers=auth(owner),
                                  timeout=10).json()["state"] in ("done", "failed"))


@pytest.fixture
async def zero_bot(service):
    client = ServiceClient(service.base, service.token(f"zero-bot-{uuid.uuid4().hex[:8]}"), retain=False)
    yield CheckBot(BotSettings(api_url=service.base, zero_retention=True), client)
    await client.close()


async def test_a_zero_retention_bot_answers_then_erases(service, zero_bot, loopback):
    loopback.routes["/obama2.jpg"] = (200, {"Content-Type": "image/jpeg"},
                                      shared("media", "unlabeled", "obama2.jpg").read_bytes())
    conv, ids = Recorded(), []

    async def submit() -> dict:
        view = await zero_bot.client.submit_url(loopback.url("/obama2.jpg"))
        ids.append(view["id"])
        return view

    await zero_bot.answer(conv, submit)
    (reply,) = conv.results
    assert reply.score is not None and reply.report_url is None  # no link to a page that is gone
    assert reply.feedback is False  # nor buttons for a check that is gone
    assert len(conv.galleries) == 1  # the gallery was fetched before the check was erased
    assert service.redis.hget(f"df:job:{ids[0]}", "retain") is None and traces(service, ids[0]) == []
