"""The Slack app: the real slack-bolt AsyncApp served by aiohttp on 127.0.0.1, its Web API
calls going to a fake Slack server, with the real service behind it. Requests to the
app are signed as Slack signs them (or forged, to see them refused)."""

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web

from bots.core import FRIENDLY, NO_LINK, RATE_LIMITED, ServiceClient
from bots.settings import BotSettings
from bots.slack_bot import SHORTCUT_ID, build_app, web_app

from .conftest import shared
from .fake_slack import FakeSlack

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def signed(body: str, secret: str = SECRET, ts: int | None = None) -> dict:
    ts = int(time.time()) if ts is None else ts
    sig = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": f"v0={sig}",
            "Content-Type": "application/x-www-form-urlencoded"}


def mention_event(user: str, channel: str, ts: str, text: str) -> dict:
    return {"token": "legacy", "team_id": "T1", "api_app_id": "A1", "type": "event_callback",
            "event_id": f"Ev{uuid.uuid4().hex}", "event_time": int(time.time()),
            "event": {"type": "app_mention", "user": user, "channel": channel, "ts": ts, "text": text}}


async def post_event(http, url: str, event: dict) -> None:
    """One signed Events API request, as Slack sends it."""
    body = json.dumps(event)
    headers = signed(body)
    headers["Content-Type"] = "application/json"
    async with http.post(url, data=body, headers=headers) as r:
        assert r.status == 200


@pytest.fixture
async def slack(service, request):
    fake = FakeSlack()
    await fake.start()
    settings = BotSettings(slack_bot_token="xoxb-test", slack_signing_secret=SECRET,
                           slack_api_url=fake.url + "/api/", api_url=service.base,
                           api_token=service.token(f"slack-{uuid.uuid4().hex[:8]}"),
                           redis_url=service.redis_url, **getattr(request, "param", {}))
    client = ServiceClient(settings.api_url, settings.api_token)
    app, bot = build_app(settings, client)
    runner = web.AppRunner(web_app(app))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/slack/events"
    async with aiohttp.ClientSession() as http:
        yield fake, url, http
    if bot.tasks:
        await asyncio.wait(bot.tasks, timeout=60)
    await runner.cleanup()
    await client.close()
    await fake.stop()


def command_body(text: str) -> str:
    return urlencode({"command": "/deepfake", "text": text, "user_id": "U1", "user_name": "ana",
                      "channel_id": "C1", "channel_name": "verification", "team_id": "T1",
                      "team_domain": "newsroom", "response_url": "http://127.0.0.1:9/unused",
                      "trigger_id": f"1.{uuid.uuid4().int % 10**12}", "api_app_id": "A1", "token": "legacy"})


async def test_slash_command_acks_posts_and_answers_in_the_thread(slack, loopback):
    fake, url, http = slack
    loopback.routes["/v/dfdc.mp4"] = (200, {"Content-Type": "video/mp4"},
                                          shared("media", "devset", "videos", "dfdc_abofeumbvv_fake.mp4").read_bytes())
    body = command_body(f"{loopback.url('/v/dfdc.mp4')} please")
    t0 = time.monotonic()
    async with http.post(url, data=body, headers=signed(body)) as r:
        assert r.status == 200
        ack = await r.json() if r.content_type == "application/json" else {"text": await r.text()}
    assert time.monotonic() - t0 < 3.0  # Slack's acknowledgement deadline
    assert "Checking" in ack["text"]
    root = await fake.wait_for(lambda m, p: m == "chat.postMessage" and "thread_ts" not in p)
    assert root["channel"] == "C1" and "asked for a deepfake check" in root["text"]
    await fake.wait_for(lambda m, p: m == "files.completeUploadExternal")
    status = [p for p in fake.calls_of("chat.postMessage") if p.get("thread_ts")]
    assert status and status[0]["text"] == "Checking…"
    thread_ts = status[0]["thread_ts"]
    assert thread_ts == root["_ts"] and all(p["thread_ts"] == thread_ts for p in status)  # the visible message's thread
    updates = fake.calls_of("chat.update")
    texts = [u["text"] for u in updates]
    assert any("Downloading" in t for t in texts) and any("Looking for faces" in t for t in texts)
    final = updates[-1]
    assert "probability" in final["text"]
    kinds = [b["type"] for b in final["blocks"]]
    assert kinds[0] == "section" and "actions" in kinds
    # one shot: no per-shot line repeating the headline; what the bands mean, said once
    assert not any("fields" in b for b in final["blocks"])
    notes = [e["text"] for b in final["blocks"] if b["type"] == "context" for e in b["elements"]]
    assert any(n.startswith("Below 35%: likely authentic") for n in notes)
    button = next(b for b in final["blocks"] if b["type"] == "actions")["elements"][0]
    assert button["text"]["text"] == "Full report" and "/r/" in button["url"]
    complete = fake.calls_of("files.completeUploadExternal")[-1]
    assert complete["thread_ts"] == thread_ts and complete["channel_id"] == "C1"
    fid = complete["files"][0]["id"]
    assert fake.uploads[fid][:8] == b"\x89PNG\r\n\x1a\n"
    assert all(p["_auth"] == "Bearer xoxb-test" for m, p in fake.calls if m != "upload")


async def test_forged_and_stale_requests_are_refused(slack):
    fake, url, http = slack
    body = command_body("https://example.org/v.mp4")
    async with http.post(url, data=body, headers=signed(body, secret="not-the-secret")) as r:
        assert r.status == 401
    async with http.post(url, data=body, headers=signed(body, ts=int(time.time()) - 600)) as r:
        assert r.status == 401
    async with http.post(url, data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}) as r:
        assert r.status == 401
    await asyncio.sleep(0.5)
    assert not fake.calls_of("chat.postMessage")


async def ack_text(http, url: str, text: str) -> str:
    """Send a signed /deepfake command; the text of the app's acknowledgement."""
    body = command_body(text)
    async with http.post(url, data=body, headers=signed(body)) as r:
        assert r.status == 200
        raw = await r.text()
    return json.loads(raw)["text"] if r.content_type == "application/json" else raw


async def test_user_errors_in_slack(slack):
    fake, url, http = slack
    assert NO_LINK in await ack_text(http, url, "what about this?")
    body = command_body("http://192.168.1.20/x.mp4")
    async with http.post(url, data=body, headers=signed(body)) as r:
        assert r.status == 200
    upd = await fake.wait_for(lambda m, p: m == "chat.update" and "private" in p["text"])
    assert "private or local network address" in upd["text"]


async def test_a_page_without_media_gets_its_sentence(slack, loopback):
    fake, url, http = slack
    loopback.routes["/article"] = (200, {"Content-Type": "text/html"}, b"<html><p>just words</p></html>")
    body = command_body(loopback.url("/article"))
    async with http.post(url, data=body, headers=signed(body)) as r:
        assert r.status == 200
    upd = await fake.wait_for(lambda m, p: m == "chat.update" and FRIENDLY["not-a-medium"] in p["text"])
    assert upd["channel"] == "C1"


async def test_message_shortcut_and_mention_answer_in_that_thread(slack, loopback):
    fake, url, http = slack
    loopback.routes["/film.mp4"] = (200, {"Content-Type": "video/mp4"},
                                        shared("media", "devset", "videos", "film_fake.mp4").read_bytes())
    payload = {"type": "message_action", "callback_id": SHORTCUT_ID, "trigger_id": f"2.{uuid.uuid4().hex}",
               "team": {"id": "T1", "domain": "newsroom"}, "user": {"id": "U2", "name": "bo"},
               "channel": {"id": "C2", "name": "desk"}, "response_url": "http://127.0.0.1:9/unused",
               "message_ts": "1700000000.000100",
               "message": {"type": "message", "text": f"seen on social: <{loopback.url('/film.mp4')}>",
                           "ts": "1700000000.000100", "user": "U3"}, "token": "legacy", "api_app_id": "A1"}
    body = urlencode({"payload": json.dumps(payload)})
    async with http.post(url, data=body, headers=signed(body)) as r:
        assert r.status == 200
    done = await fake.wait_for(lambda m, p: m == "files.completeUploadExternal" and p.get("channel_id") == "C2")
    assert done["thread_ts"] == "1700000000.000100"
    assert all(p["thread_ts"] == "1700000000.000100" for p in fake.calls_of("chat.postMessage"))

    await post_event(http, url, mention_event("U4", "C3", "1700000001.000200",
                                             f"<@UBOT> check {loopback.url('/film.mp4')}"))
    done = await fake.wait_for(lambda m, p: m == "files.completeUploadExternal" and p.get("channel_id") == "C3")
    assert done["thread_ts"] == "1700000001.000200"


async def test_about_summarises_the_services_model_card(slack):
    fake, url, http = slack
    text = await ack_text(http, url, "about")
    assert text.startswith("*About these checks*") and "*Limits*" in text
    from detector.manifest import load_manifest

    # read from the API's /v1/model-card (the stack's default ensemble), not from the bot's host
    assert "detectors: " + ", ".join(load_manifest().ensemble.members) in text
    assert "/v1/model-card|Model card>" in text


async def test_a_replayed_command_and_a_retried_event_start_nothing(slack, loopback):
    """Slack retries an event it thinks was not acknowledged (same event_id, newly signed,
    X-Slack-Retry-Num) and anyone holding a signed request can send it again within the
    five minutes it is valid: each user action is answered once."""
    fake, url, http = slack
    loopback.routes["/photo.jpg"] = (200, {"Content-Type": "image/jpeg"},
                                     shared("media", "unlabeled", "obama.jpg").read_bytes())
    body = command_body(loopback.url("/photo.jpg"))
    headers = signed(body)
    for _ in range(2):  # the same signed request twice
        async with http.post(url, data=body, headers=headers) as r:
            assert r.status == 200
    await fake.wait_for(lambda m, p: m == "files.completeUploadExternal" and p.get("channel_id") == "C1")

    event = {"token": "legacy", "team_id": "T1", "api_app_id": "A1", "type": "event_callback",
             "event_id": f"Ev{uuid.uuid4().hex}", "event_time": int(time.time()),
             "event": {"type": "app_mention", "user": "U4", "channel": "C5", "ts": "1700000002.000300",
                       "text": f"<@UBOT> check {loopback.url('/photo.jpg')}"}}
    raw = json.dumps(event)
    for retry in (None, "1", "2"):
        h = signed(raw, ts=int(time.time()) + (int(retry) if retry else 0))  # a retry is signed anew
        h["Content-Type"] = "application/json"
        if retry:
            h.update({"X-Slack-Retry-Num": retry, "X-Slack-Retry-Reason": "http_timeout"})
        async with http.post(url, data=raw, headers=h) as r:
            assert r.status == 200
    await fake.wait_for(lambda m, p: m == "files.completeUploadExternal" and p.get("channel_id") == "C5")
    await asyncio.sleep(1.5)  # time for a duplicate to show, had one started
    roots = [p for p in fake.calls_of("chat.postMessage") if p["channel"] == "C1" and "thread_ts" not in p]
    assert len(roots) == 1  # one visible post for the command
    starts = [p for p in fake.calls_of("chat.postMessage") if p.get("text") == "Checking…"]
    assert sorted(p["channel"] for p in starts) == ["C1", "C5"]  # one check each
    assert len(fake.calls_of("files.completeUploadExternal")) == 2
    assert loopback.requests.count("/photo.jpg") <= 2  # at most one download per action


async def test_a_link_with_an_escaped_ampersand_is_fetched_as_sent(slack, loopback):
    """Slack sends ``&`` inside links as ``&amp;``: a signed CDN link must reach the CDN
    with its real query, and the visible post must show the link as the user wrote it."""
    fake, url, http = slack
    loopback.routes["/cdn/photo.jpg"] = (200, {"Content-Type": "image/jpeg"},
                                         shared("media", "unlabeled", "obama.jpg").read_bytes())
    link = loopback.url("/cdn/photo.jpg") + "?sig=abc123&exp=99"
    body = command_body(f"<{link.replace('&', '&amp;')}>")
    async with http.post(url, data=body, headers=signed(body)) as r:
        assert r.status == 200
    root = await fake.wait_for(lambda m, p: m == "chat.postMessage" and "thread_ts" not in p)
    assert "sig=abc123&amp;exp=99" in root["text"] and "&amp;amp;" not in root["text"]  # mrkdwn for "&"
    await fake.wait_for(lambda m, p: m == "files.completeUploadExternal")
    assert "/cdn/photo.jpg?sig=abc123&exp=99" in loopback.full_requests


@pytest.mark.parametrize("slack", [{"user_rate_limit": 1}], indirect=True)
async def test_the_ack_and_the_lazy_listener_count_a_command_once(slack, loopback):
    """bolt runs a command's ack and its lazy listener side by side; they share one decision,
    so with a limit of one check, the first command is checked and the second refused."""
    fake, url, http = slack
    loopback.routes["/photo.jpg"] = (200, {"Content-Type": "image/jpeg"},
                                     shared("media", "unlabeled", "obama.jpg").read_bytes())
    assert "Checking" in await ack_text(http, url, loopback.url("/photo.jpg"))
    await fake.wait_for(lambda m, p: m == "chat.update" and "probability" in p.get("text", ""))
    assert await ack_text(http, url, loopback.url("/photo.jpg")) == RATE_LIMITED
    await asyncio.sleep(1.0)  # time for a second check to show, had one started
    assert len([p for p in fake.calls_of("chat.postMessage") if "thread_ts" not in p]) == 1


async def test_a_message_with_two_links_gets_two_checks_in_its_thread(slack, loopback):
    fake, url, http = slack
    for name in ("obama.jpg", "biden.jpg"):
        loopback.routes[f"/two/{name}"] = (200, {"Content-Type": "image/jpeg"},
                                           shared("media", "unlabeled", name).read_bytes())
    a, b = loopback.url("/two/obama.jpg"), loopback.url("/two/biden.jpg")
    await post_event(http, url, mention_event("U7", "C7", "1700000007.000100",
                                             f"<@UBOT> are these real? <{a}> <{b}>"))
    await fake.wait_for(lambda m, p: len([q for q in fake.calls_of("files.completeUploadExternal")
                                          if q.get("channel_id") == "C7"]) == 2)
    starts = sorted(p["text"] for p in fake.calls_of("chat.postMessage") if p["channel"] == "C7")
    assert starts == sorted([f"Checking {a}…", f"Checking {b}…"])
    assert all(p["thread_ts"] == "1700000007.000100" for p in fake.calls_of("chat.postMessage") if p["channel"] == "C7")


async def test_a_shared_video_file_is_downloaded_with_the_bot_token_and_checked(slack):
    fake, url, http = slack
    fake.shared_files["F900"] = shared("media", "devset", "videos", "film_fake.mp4").read_bytes()
    payload = {"type": "message_action", "callback_id": SHORTCUT_ID, "trigger_id": f"9.{uuid.uuid4().hex}",
               "team": {"id": "T1", "domain": "newsroom"}, "user": {"id": "U9", "name": "cy"},
               "channel": {"id": "C9", "name": "desk"}, "response_url": "http://127.0.0.1:9/unused",
               "message_ts": "1700000009.000100",
               "message": {"type": "message", "subtype": "file_share", "text": "is this real?",
                           "ts": "1700000009.000100", "user": "U3",
                           "files": [{"id": "F900", "name": "clip.mp4", "mimetype": "video/mp4",
                                      "url_private_download": f"{fake.url}/files-pri/F900"}]},
               "token": "legacy", "api_app_id": "A1"}
    body = urlencode({"payload": json.dumps(payload)})
    async with http.post(url, data=body, headers=signed(body)) as r:
        assert r.status == 200
    done = await fake.wait_for(lambda m, p: m == "files.completeUploadExternal" and p.get("channel_id") == "C9")
    assert done["thread_ts"] == "1700000009.000100"
    (download,) = fake.calls_of("download")
    assert download["_auth"] == "Bearer xoxb-test"  # the bot token, to Slack's file host only
    final = [p for p in fake.calls_of("chat.update") if p["channel"] == "C9"][-1]
    assert "probability that the faces were manipulated" in final["text"] or "Inconclusive" in final["text"]
    assert not any(p.get("text") == NO_LINK for p in fake.calls_of("chat.postMessage") if p["channel"] == "C9")


async def test_the_bot_token_goes_to_slacks_file_hosts_only(loopback):
    from slack_sdk.web.async_client import AsyncWebClient

    from bots.core import CheckRefused
    from bots.slack_bot import SlackCheckBot

    bot = SlackCheckBot(BotSettings(slack_api_url="https://slack.com/api/"), ServiceClient("http://127.0.0.1:9", "t"))
    assert bot.file_hosts() == {"files.slack.com", "slack-files.com", "slack.com"}
    loopback.routes["/x.mp4"] = (200, {"Content-Type": "video/mp4"}, b"x")
    with pytest.raises(CheckRefused):  # a "file" elsewhere: refused before any connection
        await bot._download(AsyncWebClient(token="xoxb-secret"), loopback.url("/x.mp4"))
    assert loopback.requests == []


async def test_people_across_shots_are_named_in_the_thread(slack, loopback, two_people_video):
    fake, url, http = slack
    loopback.routes["/people.mp4"] = (200, {"Content-Type": "video/mp4"}, two_people_video.read_bytes())
    await post_event(http, url, mention_event("U8", "C8", "1700000008.000100",
                                             f"<@UBOT> who is this? <{loopback.url('/people.mp4')}>"))
    await fake.wait_for(lambda m, p: m == "files.completeUploadExternal" and p.get("channel_id") == "C8")
    result = [p for p in fake.calls_of("chat.update") if p["channel"] == "C8" and p.get("blocks")][-1]
    texts = json.dumps(result["blocks"])
    assert "Person A (shots 1, 3): " in texts and "Person B (shots 2, 4): " in texts


async def test_feedback_buttons_store_one_changeable_opinion_per_person(slack, loopback, service):
    fake, url, http = slack
    loopback.routes["/fb/biden.jpg"] = (200, {"Content-Type": "image/jpeg"},
                                        shared("media", "unlabeled", "biden.jpg").read_bytes())
    await post_event(http, url, mention_event("U9", "C9", "1700000009.000100",
                                             f"<@UBOT> real? <{loopback.url('/fb/biden.jpg')}>"))
    await fake.wait_for(lambda m, p: m == "files.completeUploadExternal" and p.get("channel_id") == "C9")
    result = [p for p in fake.calls_of("chat.update") if p["channel"] == "C9" and p.get("blocks")][-1]
    actions = [e for b in result["blocks"] if b["type"] == "actions" for e in b["elements"]]
    fb = {e["action_id"]: e for e in actions if e["action_id"].startswith("feedback_")}
    assert [e["text"]["text"] for e in fb.values()] == ["👍 Looks right", "👎 Looks wrong"]
    job_id = fb["feedback_right"]["value"]
    assert fb["feedback_wrong"]["value"] == job_id

    async def press(action_id, user):
        payload = {"type": "block_actions", "trigger_id": f"3.{uuid.uuid4().hex}", "api_app_id": "A1",
                   "token": "legacy", "team": {"id": "T1", "domain": "newsroom"},
                   "user": {"id": user, "team_id": "T1"}, "channel": {"id": "C9", "name": "desk"},
                   "container": {"type": "message", "message_ts": result["ts"], "channel_id": "C9"},
                   "message": {"type": "message", "ts": result["ts"], "thread_ts": "1700000009.000100", "text": "…"},
                   "actions": [{"type": "button", "action_id": action_id, "block_id": "fb", "value": job_id,
                                "action_ts": str(time.time())}]}
        form = urlencode({"payload": json.dumps(payload)})
        n = len([p for p in fake.calls_of("chat.postEphemeral") if p["user"] == user])
        async with http.post(url, data=form, headers=signed(form)) as r:
            assert r.status == 200
        await fake.wait_for(lambda m, p: len([q for q in fake.calls_of("chat.postEphemeral") if q["user"] == user]) > n)
        told = [q for q in fake.calls_of("chat.postEphemeral") if q["user"] == user][-1]
        assert told["channel"] == "C9" and told["thread_ts"] == "1700000009.000100"
        return told["text"]

    assert (await press("feedback_wrong", "U9")).startswith("Thank you: noted that this verdict looks wrong")
    assert (await press("feedback_right", "U9")).startswith("Changed: you now say this verdict looks right")
    assert (await press("feedback_wrong", "U10")).startswith("Thank you")
    stored = sorted(json.loads(v)["opinion"] for v in service.redis.hgetall(f"df:feedback:{job_id}").values())
    assert stored == ["right", "wrong"]
