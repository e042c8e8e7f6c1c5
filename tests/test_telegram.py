"""The Telegram bot: the real python-telegram-bot Application against a fake Bot API on
127.0.0.1, with the real service (redis-server, Celery worker, API) behind it."""

import asyncio
import html
import json
import uuid

import aiohttp
import pytest

from bots.core import FRIENDLY, NO_FACE, NO_LINK, RATE_LIMITED, ServiceClient
from bots.settings import BotSettings
from bots.telegram_bot import build_application

from .conftest import _free_port, shared
from .fake_telegram import FakeTelegram

TOKEN = "123456:TEST-token"


@pytest.fixture
async def tg(service):
    fake = FakeTelegram(TOKEN)
    await fake.start()
    settings = BotSettings(telegram_bot_token=TOKEN, telegram_base_url=fake.url, api_url=service.base,
                           api_token=service.token(f"telegram-{uuid.uuid4().hex[:8]}"), user_rate_limit=3)
    client = ServiceClient(settings.api_url, settings.api_token)
    app, bot = build_application(settings, client)
    await app.initialize()
    await app.start()
    await app.updater.start_polling(poll_interval=0.0, timeout=1)
    yield fake
    await app.updater.stop()
    if bot.tasks:
        await asyncio.wait(bot.tasks, timeout=60)
    await app.stop()
    await app.shutdown()
    await client.close()
    await fake.stop()


def replies_to(fake, method, message_id):
    return [p for p in fake.calls_of(method) if (p.get("reply_parameters") or {}).get("message_id") == message_id]


async def test_private_link_gets_status_edits_result_and_gallery(tg, loopback):
    loopback.routes["/news/anchor.mp4"] = (200, {"Content-Type": "video/mp4"},
                                               shared("media", "devset", "videos", "anchor_fake.mp4").read_bytes())
    msg = tg.push(tg.message(f"is this real? {loopback.url('/news/anchor.mp4')}"))
    photo = await tg.wait_for(lambda m, p: m == "sendPhoto")
    status = replies_to(tg, "sendMessage", msg["message_id"])
    assert status and status[0]["text"] == "Checking…"
    edits = [p["text"] for p in tg.calls_of("editMessageText")]
    assert any("Downloading" in t for t in edits) and any("Looking for faces" in t for t in edits)
    assert any("Scoring" in t for t in edits)
    final = tg.calls_of("editMessageText")[-1]
    assert final["parse_mode"] == "HTML" and "% probability" in final["text"]
    assert "Full report</a>" in final["text"] and "Below 35%: likely authentic" in final["text"]
    assert "Shot 1" not in final["text"]  # one shot: the headline says it all
    assert photo["reply_parameters"]["message_id"] == msg["message_id"]
    assert photo["photo"]["bytes"][:8] == b"\x89PNG\r\n\x1a\n"
    buttons = photo["reply_markup"]["inline_keyboard"][0]
    assert [b["text"] for b in buttons] == ["Full report", "Model card"]
    assert buttons[0]["url"].startswith("http://127.0.0.1") and "/r/" in buttons[0]["url"]
    assert any(p["action"] == "upload_photo" for p in tg.calls_of("sendChatAction"))


async def test_groups_only_answer_when_addressed(tg, loopback):
    loopback.routes["/film.mp4"] = (200, {"Content-Type": "video/mp4"},
                                        shared("media", "devset", "videos", "film_fake.mp4").read_bytes())
    link = loopback.url("/film.mp4")
    chatter = tg.push(tg.message(f"look {link}", chat_type="supergroup", chat_id=-100))
    await asyncio.sleep(3)
    assert not replies_to(tg, "sendMessage", chatter["message_id"])  # not addressed: ignored
    cmd = tg.push(tg.message("/check", chat_type="supergroup", chat_id=-100, reply_to_message=chatter))
    await tg.wait_for(lambda m, p: m == "sendPhoto" and p["reply_parameters"]["message_id"] == chatter["message_id"])
    assert replies_to(tg, "sendMessage", chatter["message_id"])  # answered in reply to the linked message
    assert not replies_to(tg, "sendMessage", cmd["message_id"])
    mention = tg.push(tg.message(f"@deepcheck_bot {link}", chat_type="supergroup", chat_id=-100,
                                 message_thread_id=7, is_topic_message=True))
    photo = await tg.wait_for(lambda m, p: m == "sendPhoto"
                              and p["reply_parameters"]["message_id"] == mention["message_id"])
    assert int(photo["message_thread_id"]) == 7  # the forum topic is kept


async def test_user_errors_get_their_sentence(tg):
    hello = tg.push(tg.message("hello there"))
    got = await tg.wait_for(lambda m, p: m == "sendMessage" and p["reply_parameters"]["message_id"] == hello["message_id"])
    assert got["text"] == NO_LINK
    private = tg.push(tg.message("http://10.0.0.7/secret.mp4"))
    await tg.wait_for(lambda m, p: m == "sendMessage" and p["reply_parameters"]["message_id"] == private["message_id"])
    edit = await tg.wait_for(lambda m, p: m == "editMessageText" and "private" in p["text"])
    assert "private or local network address" in edit["text"]
    big = tg.push(tg.message(None, video={"file_id": "huge", "file_unique_id": "h", "width": 1, "height": 1,
                                          "duration": 600, "file_size": 50 * 2**20}))
    got = await tg.wait_for(lambda m, p: m == "sendMessage" and p["reply_parameters"]["message_id"] == big["message_id"])
    assert "20 MB" in got["text"] and not tg.calls_of("getFile")


async def test_attached_video_is_downloaded_and_checked(tg):
    clip = shared("media", "devset", "face_clips", "real_aayrffkzxn.mp4_0_0.mp4").read_bytes()
    tg.files["vid1"] = clip
    msg = tg.push(tg.message(None, video={"file_id": "vid1", "file_unique_id": "v1", "width": 300, "height": 300,
                                          "duration": 10, "file_size": len(clip)},
                             forward_origin={"type": "hidden_user", "date": 1, "sender_user_name": "Someone"}))
    photo = await tg.wait_for(lambda m, p: m == "sendPhoto" and p["reply_parameters"]["message_id"] == msg["message_id"])
    assert photo["photo"]["size"] > 1000
    assert tg.calls_of("getFile")[0]["file_id"] == "vid1"


async def test_per_user_rate_limit(tg):
    msgs = [tg.push(tg.message("http://10.0.0.8/x.mp4", user_id=99)) for _ in range(4)]
    last = msgs[-1]["message_id"]
    got = await tg.wait_for(lambda m, p: m == "sendMessage" and p["reply_parameters"]["message_id"] == last)
    assert got["text"] == RATE_LIMITED


async def test_webhook_checks_the_secret(service):
    fake = FakeTelegram(TOKEN)
    await fake.start()
    settings = BotSettings(telegram_bot_token=TOKEN, telegram_base_url=fake.url, api_url=service.base,
                           api_token=service.token("telegram-hook"))
    client = ServiceClient(settings.api_url, settings.api_token)
    app, _ = build_application(settings, client)
    port = _free_port()
    await app.initialize()
    await app.start()
    await app.updater.start_webhook(listen="127.0.0.1", port=port, url_path="telegram", secret_token="s3cret",
                                    webhook_url=f"http://127.0.0.1:{port}/telegram")
    try:
        hook = fake.calls_of("setWebhook")[-1]
        assert hook["secret_token"] == "s3cret" and hook["url"].endswith("/telegram")
        update = {"update_id": 1, "message": fake.message("/start", entities=[
            {"type": "bot_command", "offset": 0, "length": 6}])}
        async with aiohttp.ClientSession() as s:
            async with s.post(f"http://127.0.0.1:{port}/telegram", json=update,
                              headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"}) as r:
                assert r.status == 403
            async with s.post(f"http://127.0.0.1:{port}/telegram", json=update) as r:
                assert r.status == 403
            await asyncio.sleep(0.5)
            assert not fake.calls_of("sendMessage")
            async with s.post(f"http://127.0.0.1:{port}/telegram", json=update,
                              headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret"}) as r:
                assert r.status == 200
        got = await fake.wait_for(lambda m, p: m == "sendMessage", timeout=20)
        assert "Send me a link" in got["text"]
    finally:
        await app.updater.stop()
        await app.stop()
        await app.shutdown()
        await client.close()
        await fake.stop()


async def test_no_face_and_too_long_get_their_sentences(tg, tmp_path):
    import io

    import numpy as np
    from PIL import Image

    from detector.demo import make_multishot_video, shipped_photo

    sky = (np.linspace(0, 255, 300 * 400 * 3) % 255).astype(np.uint8).reshape(300, 400, 3)
    buf = io.BytesIO()
    Image.fromarray(sky).save(buf, format="JPEG")
    tg.files["sky"] = buf.getvalue()
    msg = tg.push(tg.message(None, photo=[{"file_id": "sky", "file_unique_id": "s", "width": 400, "height": 300,
                                           "file_size": len(buf.getvalue())}]))
    await tg.wait_for(lambda m, p: m == "sendMessage" and p["reply_parameters"]["message_id"] == msg["message_id"])
    edit = await tg.wait_for(lambda m, p: m == "editMessageText" and "face" in p["text"] and "%" not in p["text"]
                             and p.get("parse_mode") == "HTML")
    assert html.escape(NO_FACE) in edit["text"] and "Image:" not in edit["text"] and "Below 35%" not in edit["text"]
    edits = [p["text"] for p in tg.calls_of("editMessageText")]
    assert not any(t.startswith(("Scoring", "Grouping")) for t in edits)  # stages that did not run
    long_clip = make_multishot_video([shipped_photo()], tmp_path / "long.mp4", seconds_per_shot=40, fps=5,
                                     size=(160, 120)).read_bytes()  # over the test service's 30 s limit
    tg.files["long"] = long_clip
    msg = tg.push(tg.message(None, video={"file_id": "long", "file_unique_id": "l", "width": 160, "height": 120,
                                          "duration": 40, "file_size": len(long_clip)}))
    edit = await tg.wait_for(lambda m, p: m == "editMessageText" and html.escape(FRIENDLY["too-long"]) in p["text"])
    assert edit["parse_mode"] == "HTML"
    photos = [p for p in tg.calls_of("sendPhoto")]
    assert photos == []  # no gallery for a result without a scored face, nor for a failure


async def test_every_link_of_a_message_is_checked_and_the_rest_named(tg, loopback):
    for name in ("obama.jpg", "biden.jpg"):
        loopback.routes[f"/{name}"] = (200, {"Content-Type": "image/jpeg"},
                                       shared("media", "unlabeled", name).read_bytes())
    a, b = loopback.url("/obama.jpg"), loopback.url("/biden.jpg")
    msg = tg.push(tg.message(f"two photos: {a} and {b}"))
    await tg.wait_for(lambda m, p: len(replies_to(tg, "sendPhoto", msg["message_id"])) == 2)
    firsts = [p["text"] for p in replies_to(tg, "sendMessage", msg["message_id"])]
    assert firsts == [f"Checking {a}…", f"Checking {b}…"]  # one check, one status, one reply each

    # the limit of 3 checks per user (this fixture): 2 used; of 4 more links, 1 is checked
    more = [loopback.url(f"/obama.jpg?copy={k}") for k in range(4)]
    msg = tg.push(tg.message(" ".join(more)))
    note = await tg.wait_for(lambda m, p: m == "sendMessage" and p["reply_parameters"]["message_id"] == msg["message_id"]
                             and p["text"].startswith("I check at most"))
    assert f"not checked: {more[3]}." in note["text"]
    assert f"because of the limit on checks per person: {more[1]}, {more[2]}." in note["text"]
    await tg.wait_for(lambda m, p: len(replies_to(tg, "sendPhoto", msg["message_id"])) == 1)
    statuses = [p["text"] for p in replies_to(tg, "sendMessage", msg["message_id"]) if p["text"].startswith("Checking")]
    assert statuses == [f"Checking {more[0]}…"]


async def test_people_across_shots_are_named_in_the_reply(tg, loopback, two_people_video):
    loopback.routes["/people.mp4"] = (200, {"Content-Type": "video/mp4"}, two_people_video.read_bytes())
    msg = tg.push(tg.message(loopback.url("/people.mp4")))
    await tg.wait_for(lambda m, p: m == "sendPhoto" and p["reply_parameters"]["message_id"] == msg["message_id"])
    final = tg.calls_of("editMessageText")[-1]["text"]
    assert "Person A (shots 1, 3): " in final and "Person B (shots 2, 4): " in final
    assert final.index("Person A") < final.index("Person B") < final.index("Shot 1 (")


async def test_feedback_buttons_store_one_changeable_opinion_per_person(tg, loopback, service):
    loopback.routes["/fb/obama3.jpg"] = (200, {"Content-Type": "image/jpeg"},
                                         shared("media", "unlabeled", "obama3.jpg").read_bytes())
    msg = tg.push(tg.message(loopback.url("/fb/obama3.jpg")))
    await tg.wait_for(lambda m, p: m == "sendPhoto" and p["reply_parameters"]["message_id"] == msg["message_id"])
    final = tg.calls_of("editMessageText")[-1]
    buttons = final["reply_markup"]["inline_keyboard"][0]
    assert [b["text"] for b in buttons] == ["👍 Looks right", "👎 Looks wrong"]
    right, wrong = (b["callback_data"] for b in buttons)
    job_id = right.split(":")[2]
    assert right == f"fb:right:{job_id}" and wrong == f"fb:wrong:{job_id}"

    async def pressed(data, user_id):
        qid = tg.press(data, user_id=user_id, message_id=final["message_id"])
        return await tg.wait_for(lambda m, p: m == "answerCallbackQuery" and p["callback_query_id"] == qid)

    assert (await pressed(right, 5))["text"].startswith("Thank you: noted that this verdict looks right")
    assert (await pressed(wrong, 5))["text"].startswith("Changed: you now say this verdict looks wrong")
    assert (await pressed(wrong, 6))["text"].startswith("Thank you")  # someone else in the chat
    stored = [json.loads(v)["opinion"] for v in service.redis.hgetall(f"df:feedback:{job_id}").values()]
    assert sorted(stored) == ["wrong", "wrong"]  # one each; the first person changed theirs
    unknown = await pressed("fb:wrong:" + "0" * 32, 5)
    assert unknown["text"] == FRIENDLY["unknown-check"]


async def test_an_album_is_one_check_with_one_reply(tg):
    names = ("obama.jpg", "biden.jpg", "kate_siegel.jpg")
    msgs = []
    for k, name in enumerate(names):
        data = shared("media", "unlabeled", name).read_bytes()
        tg.files[f"alb{k}"] = data
        msgs.append(tg.push(tg.message(None, media_group_id="album-1", photo=[
            {"file_id": f"alb{k}", "file_unique_id": f"ua{k}", "width": 800, "height": 600, "file_size": len(data)}])))
    photo = await tg.wait_for(lambda m, p: m == "sendPhoto" and p["reply_parameters"]["message_id"] == msgs[0]["message_id"])
    await asyncio.sleep(1.0)  # nothing else comes
    ids = {m["message_id"] for m in msgs}
    statuses = [p for p in tg.calls_of("sendMessage") if (p.get("reply_parameters") or {}).get("message_id") in ids]
    assert [p["text"] for p in statuses] == ["Checking 3 items…"]  # one status, for the first item
    assert len([p for p in tg.calls_of("sendPhoto") if p["reply_parameters"]["message_id"] in ids]) == 1
    final = tg.calls_of("editMessageText")[-1]["text"]
    assert all(f"Photo {k}: " in final for k in (1, 2, 3)) and "The album has 3 items" in final
    assert sorted(p["file_id"] for p in tg.calls_of("getFile")[-3:]) == ["alb0", "alb1", "alb2"]
    assert photo["photo"]["bytes"][:8] == b"\x89PNG\r\n\x1a\n"
