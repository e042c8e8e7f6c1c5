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

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError
from slack_bolt import BoltResponse
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from .core import (
    NO_LINK,
    RATE_LIMITED,
    SOMETHING_WRONG,
    CheckBot,
    Reply,
    ServiceClient,
    ServiceError,
    about_lines,
    find_links,
    friendly,
    reply_from_view,
    stage_text,
)
from .settings import BotSettings, startup

log = logging.getLogger(__name__)
SHORTCUT_ID = "check_for_deepfake"


SEEN_TTL_S = 600  # longer than the 5 minutes a signed request is accepted for


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
    if reply.shots:
        fields = [{"type": "mrkdwn", "text": mrkdwn_escape(s)} for s in reply.shots[:10]]
        blocks.append({"type": "section", "fields": fields})
        if len(reply.shots) > 10:
            blocks.append({"type": "context", "elements": [
                {"type": "mrkdwn", "text": f"…and {len(reply.shots) - 10} more shots in the full report."}]})
    for w in reply.warnings[:5]:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f":warning: {mrkdwn_escape(w)}"}]})
    if reply.report_url:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Full report"}, "url": reply.report_url,
             "action_id": "open_report"}]})
    return blocks


class SlackCheckBot(CheckBot):
    redis: aioredis.Redis | None = None  # the deduplication store (build_app sets it)

    async def command(self, ack, command, client: AsyncWebClient) -> None:
        if (command.get("text") or "").strip().lower() in ("about", "help", "model card"):
            await ack(await self.about_text())  # ephemeral
            return
        links = slack_links(command.get("text"))
        if not links:
            await ack(NO_LINK)
            return
        if not self.limiter.allow(command["user_id"]):
            await ack(RATE_LIMITED)
            return
        await ack(f"Checking {mrkdwn_escape(links[0])} …")  # ephemeral, within Slack's 3 s
        self.spawn(self._command_thread(client, command["channel_id"], command["user_id"], links[0]))

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

    async def _command_thread(self, client: AsyncWebClient, channel: str, user: str, url: str) -> None:
        try:
            root = await client.chat_postMessage(channel=channel,
                                                 text=f"<@{user}> asked for a deepfake check of {mrkdwn_escape(url)}",
                                                 unfurl_links=False, unfurl_media=False)
        except SlackApiError as e:
            log.warning("cannot post in %s: %s", channel, e)
            return
        await self.run(client, channel, root["ts"], url)

    async def shortcut(self, ack, shortcut, client: AsyncWebClient) -> None:
        await ack()
        msg = shortcut.get("message", {})
        channel = shortcut["channel"]["id"]
        await self._from_message(client, channel, shortcut["user"]["id"], msg, msg.get("thread_ts") or msg["ts"])

    async def mention(self, event, client: AsyncWebClient) -> None:
        await self._from_message(client, event["channel"], event.get("user", ""), event,
                                 event.get("thread_ts") or event["ts"])

    async def _from_message(self, client: AsyncWebClient, channel: str, user: str, msg: dict, thread_ts: str) -> None:
        extra = [a.get("original_url") or a.get("from_url") for a in msg.get("attachments", []) or []]
        links = slack_links(msg.get("text"), [u for u in extra if u])
        if not links:
            await client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=NO_LINK)
            return
        if not self.limiter.allow(user):
            await client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=RATE_LIMITED)
            return
        self.spawn(self.run(client, channel, thread_ts, links[0]))

    async def run(self, client: AsyncWebClient, channel: str, thread_ts: str, url: str) -> None:
        status = await client.chat_postMessage(channel=channel, thread_ts=thread_ts, text="Checking…")

        async def update(text: str, blocks: list | None = None) -> None:
            try:
                await client.chat_update(channel=channel, ts=status["ts"], text=text, blocks=blocks or [])
            except SlackApiError as e:
                log.warning("chat.update failed: %s", e)

        try:
            view = await self.client.submit_url(url)
            view = await self.client.follow(view, lambda ev: update(stage_text(ev)))
            reply = reply_from_view(view)
            await update(reply.headline, render_blocks(reply))
            if reply.score is not None and reply.gallery_url:  # nothing to show without a scored face
                png = await self.client.gallery(reply.gallery_url)
                if png:
                    await client.files_upload_v2(channel=channel, thread_ts=thread_ts, file=png,
                                                 filename="deepfake-check.png", title="Faces and shots",
                                                 alt_txt="Keyframe of each shot, bordered by its score")
        except ServiceError as e:
            await update(friendly(e.problem))
        except Exception:
            log.exception("check failed")
            await update(SOMETHING_WRONG)


def build_app(settings: BotSettings, client: ServiceClient,
              r: aioredis.Redis | None = None) -> tuple[AsyncApp, SlackCheckBot]:
    web_client = AsyncWebClient(token=settings.slack_bot_token, base_url=settings.slack_api_url)
    app = AsyncApp(signing_secret=settings.slack_signing_secret, client=web_client)
    r = r or aioredis.Redis.from_url(settings.redis_url)
    app.middleware(dedupe(r))
    bot = SlackCheckBot(settings, client)
    bot.redis = r
    app.command("/deepfake")(bot.command)
    app.shortcut(SHORTCUT_ID)(bot.shortcut)
    app.event("app_mention")(bot.mention)

    @app.event("message")
    async def _ignore_other_messages(body):  # the app reads only what addresses it
        return None

    return app, bot


def web_app(app: AsyncApp) -> web.Application:
    """bolt's own aiohttp application, serving Slack's requests on POST /slack/events."""
    return app.web_app(path="/slack/events")


def main() -> None:
    s = startup("slack")
    app, bot = build_app(s, ServiceClient(s.api_url, s.api_token))

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
