"""The Slack app (slack-bolt async), served by aiohttp, or over Socket Mode.

- ``/deepfake <url>``: acknowledged at once with an ephemeral "checking…", then a visible
  message in the channel; the result is answered in that message's thread.
- The message shortcut "Check for deepfake" (callback id ``check_for_deepfake``) and
  mentions of the app with a link answer in the thread of that message.
The result: a Block Kit summary (verdict, per-shot fields, warnings, "Full report"
button) and the gallery via ``files_upload_v2`` with ``thread_ts``.

    deepfake-slack        # HTTP on SLACK_LISTEN:SLACK_PORT /slack/events, or Socket Mode
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError
from slack_bolt import BoltResponse
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from detector.vocabulary import Problem

from .core import (
    FEEDBACK_BUTTONS,
    FRIENDLY,
    NO_LINK,
    RATE_LIMITED,
    CheckBot,
    CheckRefused,
    Conversation,
    Reply,
    ServiceClient,
    ServiceError,
    UserTold,
    about_lines,
    checking_text,
    find_links,
    friendly,
    plan_links,
)
from .settings import BotSettings, startup

log = logging.getLogger(__name__)
SHORTCUT_ID = "check_for_deepfake"


SEEN_TTL_S = 600  # longer than the 5 minutes a signed request is accepted for


FEEDBACK_ACTION = re.compile(r"^feedback_(right|wrong)$")


def mrkdwn_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mrkdwn_unescape(text: str) -> str:
    """Slack sends &, < and > in message text as entities (a link's ``&`` as ``&amp;``)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def slack_links(text: str | None, extra: list[str] | None = None) -> list[str]:
    """The links in a Slack message text (entities decoded, so ``?a=1&amp;b=2`` is ``?a=1&b=2``)."""
    return find_links(mrkdwn_unescape(text or ""), extra)


def request_key(body: dict) -> str | None:
    """What identifies one user action across Slack's retries and any replay of its request:
    an event's ``event_id`` (a retry carries the same one, newly signed), or the
    ``trigger_id`` of a command or shortcut (a replay is the same signed body)."""
    if body.get("type") == "event_callback" and body.get("event_id"):
        return f"event:{body['event_id']}"
    if body.get("trigger_id"):
        return f"trigger:{body['trigger_id']}"
    return None


def dedupe(r: aioredis.Redis):
    """Global middleware (after bolt verified the signature): a request whose action was
    already answered is acknowledged with an empty 200 and does nothing."""

    async def middleware(body: dict, next) -> BoltResponse | None:
        key = request_key(body)
        try:
            first = not key or await r.set(f"df:slack:seen:{key}", "1", nx=True, ex=SEEN_TTL_S)
        except RedisError as e:  # answer the user rather than drop the request; a retry may repeat it
            log.warning("cannot reach Redis to deduplicate Slack request %s: %s", key, e)
            first = True
        if not first:
            log.info("Slack request %s answered before: acknowledged without work", key)
            return BoltResponse(status=200, body="")
        await next()
        return None

    return middleware


def render_blocks(reply: Reply) -> list[dict]:
    blocks: list[dict] = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{mrkdwn_escape(reply.headline)}*"}}]
    if reply.seen_before:
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": "Checked before; this is the stored result."}]})
    if reply.notes:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": mrkdwn_escape(n)}
                                                       for n in reply.notes]})
    if reply.people:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(
            mrkdwn_escape(p) for p in reply.people[:10])}})
    if reply.shots:
        fields = [{"type": "mrkdwn", "text": mrkdwn_escape(s)} for s in reply.shots[:10]]
        blocks.append({"type": "section", "fields": fields})
        if len(reply.shots) > 10:
            blocks.append({"type": "context", "elements": [
                {"type": "mrkdwn", "text": f"…and {len(reply.shots) - 10} more shots in the full report."}]})
    for w in reply.warnings[:5]:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f":warning: {mrkdwn_escape(w)}"}]})
    actions = []
    if reply.report_url:
        actions.append({"type": "button", "text": {"type": "plain_text", "text": "Full report"},
                        "url": reply.report_url, "action_id": "open_report"})
    if reply.feedback and reply.check_id:  # "looks right / looks wrong": one opinion per person, changeable
        actions += [{"type": "button", "text": {"type": "plain_text", "text": text, "emoji": True},
                     "action_id": f"feedback_{opinion}", "value": reply.check_id}
                    for opinion, text in FEEDBACK_BUTTONS.items()]
    if actions:
        blocks.append({"type": "actions", "elements": actions})
    return blocks


class SlackConversation(Conversation):
    """One check's answer in a Slack thread: a status message updated in place, the result
    as Block Kit in it, the gallery uploaded with ``files_upload_v2`` in the same thread."""

    def __init__(self, client: AsyncWebClient, channel: str, thread_ts: str, first: str = "Checking…"):
        self.client, self.channel, self.thread_ts, self.first = client, channel, thread_ts, first
        self.ts: str | None = None

    async def open(self) -> None:
        msg = await self.client.chat_postMessage(channel=self.channel, thread_ts=self.thread_ts,
                                                 text=mrkdwn_escape(self.first))
        self.ts = msg["ts"]

    async def _update(self, text: str, blocks: list | None = None) -> None:
        try:
            await self.client.chat_update(channel=self.channel, ts=self.ts, text=text, blocks=blocks or [])
        except SlackApiError as e:
            log.warning("chat.update failed: %s", e)

    async def status(self, text: str) -> None:
        await self._update(text)

    async def result(self, reply: Reply) -> None:
        await self._update(reply.headline, render_blocks(reply))

    async def gallery(self, reply: Reply, png: bytes) -> None:
        await self.client.files_upload_v2(channel=self.channel, thread_ts=self.thread_ts, file=png,
                                          filename="deepfake-check.png", title="Faces and shots",
                                          alt_txt="Keyframe of each shot, bordered by its score")


DECISION_TTL_S = 60.0  # far longer than bolt takes to start a request's lazy listener


class SlackCheckBot(CheckBot):
    """Each listener is an ``ack`` (within Slack's 3 s) and a ``lazy`` function that bolt
    starts beside it for the slow work. Both ask :meth:`decide` what to do with the
    request; whichever runs first decides it, once, so the rate limit counts it once."""

    redis: aioredis.Redis | None = None  # the deduplication store (build_app sets it)

    def __init__(self, settings, client: ServiceClient):
        super().__init__(settings, client)
        self._decided: dict[str, tuple[float, str, list[str], str | None]] = {}

    def decide(self, key: str, user: str, text: str | None) -> tuple[str, list[str], str | None]:
        """("about" | "no-link" | "limited" | "check", the links to check, a sentence naming
        the links left out) for one request; synchronous, so the ack and the lazy listener
        cannot both decide."""
        now = time.monotonic()
        for k in [k for k, (t, *_) in self._decided.items() if now - t > DECISION_TTL_S]:
            del self._decided[k]
        if key not in self._decided:
            links, urls, left_out = slack_links(text), [], None
            if (text or "").strip().lower() in ("about", "help", "model card"):
                kind = "about"
            elif not links:
                kind = "no-link"
            else:
                urls, left_out = plan_links(links, lambda: self.limiter.allow(user))
                kind = "check" if urls else "limited"
            self._decided[key] = (now, kind, urls, left_out)
        _, kind, urls, left_out = self._decided[key]
        return kind, urls, left_out

    # -- /deepfake --------------------------------------------------------------------------
    async def command_ack(self, ack, command, body) -> None:
        kind, urls, _ = self.decide(body["trigger_id"], command["user_id"], command.get("text"))
        if kind == "about":
            await ack(await self.about_text())  # ephemeral
        else:
            await ack({"no-link": NO_LINK, "limited": RATE_LIMITED}.get(kind)
                      or f"Checking {', '.join(mrkdwn_escape(u) for u in urls)} …")

    async def command_check(self, command, body, client: AsyncWebClient) -> None:
        kind, urls, left_out = self.decide(body["trigger_id"], command["user_id"], command.get("text"))
        if kind != "check":
            return
        self.track()
        channel = command["channel_id"]
        try:
            root = await client.chat_postMessage(
                channel=channel, text=f"<@{command['user_id']}> asked for a deepfake check of "
                f"{', '.join(mrkdwn_escape(u) for u in urls)}", unfurl_links=False, unfurl_media=False)
        except SlackApiError as e:
            log.warning("cannot post in %s: %s", channel, e)
            return
        await self.run_all(client, channel, root["ts"], self.links(urls), left_out)

    async def about_text(self) -> str:
        try:
            card = await self.client.model_card()
        except ServiceError as e:
            return friendly(e.problem)
        use, measured, caveats = about_lines(card)
        return (f"*About these checks*\n{mrkdwn_escape(use)}\n\n*Measured*\n"
                + "\n".join(f"• {mrkdwn_escape(m)}" for m in measured)
                + "\n\n*Limits*\n" + "\n".join(f"• {mrkdwn_escape(c)}" for c in caveats)
                + f"\n<{self.settings.model_card_url}|Model card>")

    # -- the message shortcut and mentions: answered in the message's thread ---------------
    @staticmethod
    async def ack_now(ack) -> None:
        await ack()

    async def shortcut(self, shortcut, client: AsyncWebClient) -> None:
        msg = shortcut.get("message", {})
        await self._from_message(client, shortcut["channel"]["id"], shortcut["user"]["id"], msg,
                                 msg.get("thread_ts") or msg["ts"])

    async def feedback(self, body, action, client: AsyncWebClient) -> None:
        """A "looks right / looks wrong" button under a verdict: stored for the person who
        pressed it (team and user), answered with a message only they see, in the thread."""
        opinion = action["action_id"].removeprefix("feedback_")
        team = (body.get("team") or {}).get("id", "")
        user = body["user"]["id"]
        text = await self.give_feedback(action.get("value", ""), opinion, f"{team}:{user}")
        msg = body.get("message") or {}
        await client.chat_postEphemeral(channel=body["channel"]["id"], user=user, text=mrkdwn_escape(text),
                                        thread_ts=msg.get("thread_ts") or msg.get("ts"))

    async def mention(self, event, client: AsyncWebClient) -> None:
        await self._from_message(client, event["channel"], event.get("user", ""), event,
                                 event.get("thread_ts") or event["ts"])

    async def _from_message(self, client: AsyncWebClient, channel: str, user: str, msg: dict, thread_ts: str) -> None:
        self.track()
        extra = [a.get("original_url") or a.get("from_url") for a in msg.get("attachments", []) or []]
        links = slack_links(msg.get("text"), [u for u in extra if u])
        files = [f for f in msg.get("files") or [] if str(f.get("mimetype", "")).startswith(("video/", "image/"))]
        if not links and files:  # a shared file: downloaded with the bot token (files:read)
            await self._files(client, channel, user, files, thread_ts)
            return
        if not links:
            await client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=NO_LINK)
            return
        urls, left_out = plan_links(links, lambda: self.limiter.allow(user))
        if not urls:
            await client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=RATE_LIMITED)
            return
        await self.run_all(client, channel, thread_ts, self.links(urls), left_out)

    async def _files(self, client: AsyncWebClient, channel: str, user: str, files: list[dict], thread_ts: str) -> None:
        """Each shared image or video (at most MAX_LINKS_PER_MESSAGE, each counted by the limit)
        checked as an upload; the bot token is sent only to Slack's own file host."""
        names = [f.get("name") or f.get("id", "file") for f in files]
        by_name = dict(zip(names, files))
        picked, left_out = plan_links(names, lambda: self.limiter.allow(user))
        if not picked:
            await client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=RATE_LIMITED)
            return

        def submit(f: dict, name: str):
            async def go() -> dict:
                data = await self._download(client, f.get("url_private_download") or f.get("url_private") or "")
                return await self.client.submit_file(data, name)
            return go

        await self.run_all(client, channel, thread_ts, [(n, submit(by_name[n], n)) for n in picked], left_out)

    async def _download(self, client: AsyncWebClient, url: str) -> bytes:
        """A shared file's bytes, with the bot token, from Slack's file host only."""
        host = (urlsplit(url).hostname or "").lower()
        if urlsplit(url).scheme not in ("https", "http") or host not in self.file_hosts():
            raise CheckRefused("I can only open files shared in Slack itself.")
        limit = self.settings.slack_max_file_bytes
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(timeout=timeout) as s, \
                s.get(url, headers={"Authorization": f"Bearer {client.token}"}, allow_redirects=False) as r:
            if r.status != 200:  # Slack answers a missing scope or token with a redirect to sign in
                raise CheckRefused("Slack would not give me that file; the app needs the files:read scope.")
            if (r.content_length or 0) > limit:
                raise CheckRefused(FRIENDLY[Problem.TOO_LARGE])
            data = bytearray()
            async for chunk in r.content.iter_chunked(1 << 20):
                data += chunk
                if len(data) > limit:
                    raise CheckRefused(FRIENDLY[Problem.TOO_LARGE])
        return bytes(data)

    def file_hosts(self) -> set[str]:
        """Where a shared file may be fetched with the token: Slack's file hosts, and the host
        of the Web API this app is pointed at (a test's fake)."""
        return {"files.slack.com", "slack-files.com", (urlsplit(self.settings.slack_api_url).hostname or "").lower()}

    async def run_all(self, client: AsyncWebClient, channel: str, thread_ts: str,
                      checks: list[tuple[str, Callable[[], Awaitable[dict]]]], left_out: str | None) -> None:
        """Each (what, submit) its own check in the thread, side by side; then what was left
        out, named."""
        several = len(checks) > 1 or left_out is not None
        await asyncio.gather(*(self.run(client, channel, thread_ts, what, submit, several) for what, submit in checks))
        if left_out:
            try:
                await client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=mrkdwn_escape(left_out))
            except SlackApiError as e:
                log.warning("cannot post in %s: %s", channel, e)

    def links(self, urls: list[str]) -> list[tuple[str, Callable[[], Awaitable[dict]]]]:
        return [(u, lambda u=u: self.client.submit_url(u)) for u in urls]

    async def run(self, client: AsyncWebClient, channel: str, thread_ts: str, what: str,
                  submit: Callable[[], Awaitable[dict]], several: bool = False) -> None:
        conv = SlackConversation(client, channel, thread_ts, checking_text(what, several))
        try:
            await conv.open()
            await self.answer(conv, submit)
        except UserTold as e:  # the one place a Slack check's bug is logged
            log.error("check of %s failed", what, exc_info=e.__cause__)
        except SlackApiError as e:
            log.warning("cannot answer in %s: %s", channel, e)


def build_app(settings: BotSettings, client: ServiceClient,
              r: aioredis.Redis | None = None) -> tuple[AsyncApp, SlackCheckBot]:
    web_client = AsyncWebClient(token=settings.slack_bot_token, base_url=settings.slack_api_url)
    app = AsyncApp(signing_secret=settings.slack_signing_secret, client=web_client)
    r = r or aioredis.Redis.from_url(settings.redis_url)
    app.middleware(dedupe(r))
    bot = SlackCheckBot(settings, client)
    bot.redis = r
    app.command("/deepfake")(ack=bot.command_ack, lazy=[bot.command_check])
    app.shortcut(SHORTCUT_ID)(ack=bot.ack_now, lazy=[bot.shortcut])
    app.event("app_mention")(ack=bot.ack_now, lazy=[bot.mention])
    app.action(FEEDBACK_ACTION)(ack=bot.ack_now, lazy=[bot.feedback])
    app.action("open_report")(bot.ack_now)  # a link button: Slack opens it, and expects an ack

    @app.event("message")
    async def _ignore_other_messages(body):  # the app reads only what addresses it
        return None

    return app, bot


def web_app(app: AsyncApp) -> web.Application:
    """bolt's own aiohttp application, serving Slack's requests on POST /slack/events."""
    return app.web_app(path="/slack/events")


def main() -> None:
    s = startup("slack")
    app, bot = build_app(s, ServiceClient(s.api_url, s.api_token, retain=not s.zero_retention))

    async def close_clients(_app=None) -> None:  # no "Unclosed client session" at exit
        await bot.client.close()
        await bot.redis.aclose()

    if s.slack_app_token:
        from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler

        async def socket_mode() -> None:
            try:
                await AsyncSocketModeHandler(app, s.slack_app_token).start_async()
            finally:
                await close_clients()

        asyncio.run(socket_mode())
    else:
        if not s.slack_signing_secret:
            raise SystemExit("SLACK_SIGNING_SECRET is not set (HTTP mode verifies every request)")
        w = web_app(app)
        w.on_cleanup.append(close_clients)
        web.run_app(w, host=s.slack_listen, port=s.slack_port)


if __name__ == "__main__":
    main()
