"""The Telegram bot (python-telegram-bot v22, async ``Application``).

Private chats: any message with a link, or an attached video, photo, animation or
document (forwarded posts too), starts a check. Groups: only ``/check`` (also as a reply
to a message with a link or media) or a mention of the bot. The bot answers the message
that holds the medium: one status message edited as the job moves, then the result text
and the gallery photo with "Full report" and "Model card" buttons.

    deepfake-telegram            # polling (development) or webhook (TELEGRAM_WEBHOOK_URL set)
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
import time

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, MessageEntity, ReplyParameters, Update
from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from .core import (
    FEEDBACK_BUTTONS,
    MAX_ALBUM_ITEMS,
    NO_LINK,
    RATE_LIMITED,
    SOMETHING_WRONG,
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

BOT_API_DOWNLOAD_LIMIT = 20 * 1024 * 1024  # the public Bot API's getFile limit
HELP = ("Send me a link to a video or an image, or the file itself (forwarded posts work too; an album "
        "is checked as one), and I'll estimate how likely it is that the faces in it were manipulated, shot "
        "by shot and person by person. Under each result, tell me whether it looks right or wrong.\n\n"
        "In groups, reply to a message with /check, or mention me with a link.\n"
        "/about tells what the detectors can and cannot do.")


def render_html(reply: Reply) -> str:
    """The result as Telegram HTML; every piece of text is escaped."""
    lines = [f"<b>{html.escape(reply.headline)}</b>"]
    if reply.seen_before:
        lines.append("<i>Checked before; this is the stored result.</i>")
    lines += [f"<i>{html.escape(n)}</i>" for n in reply.notes]
    if reply.items:
        lines.append("")
        lines += [html.escape(i) for i in reply.items]
    if reply.people:
        lines.append("")
        lines += [html.escape(p) for p in reply.people]
    if reply.shots:
        lines.append("")
        lines += [html.escape(s) for s in reply.shots]
    for w in reply.warnings:
        lines.append(f"⚠️ {html.escape(w)}")
    if reply.report_url:
        lines.append(f'\n<a href="{html.escape(reply.report_url, quote=True)}">Full report</a>')
    return "\n".join(lines)


FEEDBACK_DATA = re.compile(r"^fb:(right|wrong):([0-9a-f]{32})$")  # callback data: 41 of Telegram's 64 bytes


def feedback_markup(reply: Reply) -> InlineKeyboardMarkup | None:
    """The "looks right / looks wrong" buttons under a verdict (none without one)."""
    if not (reply.feedback and reply.check_id):
        return None
    return InlineKeyboardMarkup([[InlineKeyboardButton(text, callback_data=f"fb:{opinion}:{reply.check_id}")
                                  for opinion, text in FEEDBACK_BUTTONS.items()]])


def _media(msg: Message):
    """The medium attached to a message, largest photo size first."""
    if msg.video:
        return msg.video, "video.mp4"
    if msg.animation:
        return msg.animation, msg.animation.file_name or "animation.mp4"
    if msg.video_note:
        return msg.video_note, "video_note.mp4"
    if msg.photo:
        return msg.photo[-1], "photo.jpg"
    if msg.document:
        return msg.document, msg.document.file_name or "document"
    return None, None


def _links(msg: Message) -> list[str]:
    extra = [e.url for e in (msg.entities or ()) + (msg.caption_entities or ())
             if e.type == MessageEntity.TEXT_LINK and e.url]
    preview = getattr(msg, "link_preview_options", None)
    if preview is not None and preview.url:
        extra.append(preview.url)
    return find_links(msg.text or msg.caption, extra)


ALBUM_WAIT_S = 1.5  # an album's items arrive within about a second of each other


class TelegramCheckBot(CheckBot):
    def __init__(self, settings, client: ServiceClient):
        super().__init__(settings, client)
        self.albums: dict[tuple, list[Message]] = {}  # (chat, media group) -> its messages so far
        self.album_seen: dict[tuple, float] = {}  # when its last message came in
    # -- commands ---------------------------------------------------------------------------
    async def start(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.effective_message.reply_text(HELP)

    async def about(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        try:
            card = await self.client.model_card()
        except ServiceError as e:
            await update.effective_message.reply_text(friendly(e.problem))
            return
        use, measured, caveats = about_lines(card)
        text = (f"<b>About these checks</b>\n{html.escape(use)}\n\n<b>Measured</b>\n"
                + "\n".join(f"• {html.escape(m)}" for m in measured)
                + "\n\n<b>Limits</b>\n" + "\n".join(f"• {html.escape(c)}" for c in caveats)
                + f'\n<a href="{html.escape(self.settings.model_card_url, quote=True)}">Model card</a>')
        await update.effective_message.reply_text(text, parse_mode=ParseMode.HTML)

    async def check_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        msg = update.effective_message
        target = msg.reply_to_message if msg.reply_to_message and not (_links(msg) or _media(msg)[0]) else msg
        await self.check(update, context, target, explicit=True)

    async def private_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self.check(update, context, update.effective_message, explicit=True)

    async def group_mention(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        msg = update.effective_message
        if f"@{context.bot.username}".lower() not in (msg.text or msg.caption or "").lower():
            return  # a mention of someone else
        target = msg.reply_to_message if msg.reply_to_message and not (_links(msg) or _media(msg)[0]) else msg
        await self.check(update, context, target, explicit=True)

    async def feedback_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A "looks right / looks wrong" button: stored for the person who pressed it (one
        opinion each, changeable), answered with a short notice only they see."""
        q = update.callback_query
        m = FEEDBACK_DATA.match(q.data or "")
        if m is None:
            await q.answer()
            return
        text = await self.give_feedback(m.group(2), m.group(1), str(q.from_user.id))
        await q.answer(text)

    # -- an album: its media arrive as separate messages sharing a media_group_id ------------
    async def album_item(self, update: Update, context: ContextTypes.DEFAULT_TYPE, target: Message) -> None:
        """Collect an album's messages; the first one starts the wait for the rest."""
        key = (target.chat_id, target.media_group_id)
        first = key not in self.albums
        self.albums.setdefault(key, []).append(target)
        self.album_seen[key] = time.monotonic()
        if first:
            context.application.create_task(self._album(update, context, key), update=update,
                                            name=f"album-{target.chat_id}-{target.media_group_id}")

    async def _album(self, update: Update, context: ContextTypes.DEFAULT_TYPE, key) -> None:
        while time.monotonic() - self.album_seen[key] < ALBUM_WAIT_S:  # the last item came in
            await asyncio.sleep(ALBUM_WAIT_S / 4)
        msgs = sorted(self.albums.pop(key), key=lambda m: m.message_id)
        del self.album_seen[key]
        first = msgs[0]
        user = str(update.effective_user.id if update.effective_user else first.chat_id)
        if not self.limiter.allow(user):  # an album is one check for the per-user limit
            await self._say(first, RATE_LIMITED)
            return
        taken, left = msgs[:MAX_ALBUM_ITEMS], msgs[MAX_ALBUM_ITEMS:]
        if len(taken) == 1:  # e.g. in a group, only the item whose caption addressed the bot
            media, filename = _media(first)
            await self._run(context, first, await self._say(first, "Checking…"), None, media, filename)
            return
        status = await self._say(first, f"Checking {len(taken)} items…")
        submits = []
        for m in taken:
            media, filename = _media(m)
            name = "Photo" if m.photo else "Video" if (m.video or m.animation or m.video_note) else "File"
            submits.append((name, self._file_submit(context, media, filename)))
        if left:
            await self._say(first, f"I check at most {MAX_ALBUM_ITEMS} items of an album; {len(left)} not checked.")
        await self.answer_album(TelegramConversation(first, status, self.settings.model_card_url), submits)

    def _file_submit(self, context, media, filename, advice: str = ""):
        """Submitting a Telegram file: downloaded through the Bot API, then uploaded to the
        service; ``advice`` ends the sentence of a file Telegram would not give."""
        async def submit() -> dict:
            if not self.settings.telegram_local_mode and (media.file_size or 0) > BOT_API_DOWNLOAD_LIMIT:
                raise CheckRefused("That file is larger than the 20 MB that Telegram lets bots download.")
            try:
                tg_file = await context.bot.get_file(media.file_id)
                data = bytes(await tg_file.download_as_bytearray())
            except TelegramError as e:
                log.warning("telegram would not give the file: %s", e)
                raise CheckRefused("Telegram would not give me that file" + (advice or ".")) from e
            return await self.client.submit_file(data, filename)
        return submit

    # -- a check ----------------------------------------------------------------------------
    async def check(self, update: Update, context: ContextTypes.DEFAULT_TYPE, target: Message,
                    explicit: bool) -> None:
        links = _links(target)
        media, filename = _media(target)
        if target.media_group_id and media is not None and not links:  # one item of an album
            await self.album_item(update, context, target)
            return
        if not links and media is None:
            if explicit:
                await self._say(target, NO_LINK)
            return
        user = str(update.effective_user.id if update.effective_user else target.chat_id)
        if links:  # several links: each its own check (up to MAX_LINKS_PER_MESSAGE), the rest named
            urls, left_out = plan_links(links, lambda: self.limiter.allow(user))
        else:
            urls, left_out = ([None], None) if self.limiter.allow(user) else ([], None)
        if not urls:
            await self._say(target, RATE_LIMITED)
            return
        if media is not None and not links and not self.settings.telegram_local_mode \
                and (media.file_size or 0) > BOT_API_DOWNLOAD_LIMIT:
            await self._say(target, "That file is larger than the 20 MB that Telegram lets bots download. "
                            "Send a link to it instead, or a shorter clip.")
            return
        for k, url in enumerate(urls):
            status = await self._say(target, checking_text(url, len(links) > 1))
            # The application owns the task: awaited on stop, its exception handed to on_error.
            context.application.create_task(
                self._run(context, target, status, url, media, filename),
                update=update, name=f"check-{target.chat_id}-{target.message_id}-{k}")
        if left_out:
            await self._say(target, left_out)

    async def _say(self, target: Message, text: str, html_mode: bool = False) -> Message:
        return await target.get_bot().send_message(
            chat_id=target.chat_id, text=text, parse_mode=ParseMode.HTML if html_mode else None,
            reply_parameters=ReplyParameters(message_id=target.message_id, allow_sending_without_reply=True),
            message_thread_id=target.message_thread_id if target.is_topic_message else None,
            disable_web_page_preview=True)

    async def _run(self, context, target: Message, status: Message, url: str | None, media, filename) -> None:
        async def submit_url() -> dict:
            return await self.client.submit_url(url)

        submit = submit_url if url else self._file_submit(context, media, filename, "; please send a link instead.")
        await self.answer(TelegramConversation(target, status, self.settings.model_card_url), submit)


class TelegramConversation(Conversation):
    """One check's answer in Telegram: the status message edited in place, the result as
    HTML in it, the gallery as a photo replying to the asker's message, with buttons."""

    def __init__(self, target: Message, status: Message, model_card_url: str):
        self.target, self.status_msg, self.model_card_url = target, status, model_card_url
        self.bot = target.get_bot()
        self.thread = target.message_thread_id if target.is_topic_message else None
        self.last_action = 0.0

    async def _edit(self, text: str, html_mode: bool = False, markup: InlineKeyboardMarkup | None = None) -> None:
        try:
            await self.bot.edit_message_text(text, chat_id=self.status_msg.chat_id,
                                             message_id=self.status_msg.message_id,
                                             parse_mode=ParseMode.HTML if html_mode else None,
                                             disable_web_page_preview=True, reply_markup=markup)
        except BadRequest as e:  # "message is not modified" and the like
            log.debug("edit skipped: %s", e)

    async def status(self, text: str) -> None:
        await self._edit(text)

    async def result(self, reply: Reply) -> None:
        await self._edit(render_html(reply), html_mode=True, markup=feedback_markup(reply))

    async def working(self, event: dict) -> None:  # Telegram shows a chat action for about 5 s
        if time.monotonic() - self.last_action > 4.0:
            self.last_action = time.monotonic()
            await self.bot.send_chat_action(self.target.chat_id, ChatAction.TYPING, message_thread_id=self.thread)

    async def gallery(self, reply: Reply, png: bytes) -> None:
        await self.bot.send_chat_action(self.target.chat_id, ChatAction.UPLOAD_PHOTO, message_thread_id=self.thread)
        buttons = ([InlineKeyboardButton("Full report", url=reply.report_url)] if reply.report_url else []) + \
            [InlineKeyboardButton("Model card", url=self.model_card_url)]
        await self.bot.send_photo(
            self.target.chat_id, photo=png, caption=reply.headline[:1000],
            reply_parameters=ReplyParameters(message_id=self.target.message_id, allow_sending_without_reply=True),
            message_thread_id=self.thread, reply_markup=InlineKeyboardMarkup([buttons]))


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The one error handler: every exception of a handler or of a check started with
    ``create_task`` ends here, is logged with its update, and is told to the user once."""
    err = context.error
    told = isinstance(err, UserTold)
    cause = err.__cause__ if told and err.__cause__ else err
    log.error("update %s failed", getattr(update, "update_id", None),
              exc_info=(type(cause), cause, cause.__traceback__))
    if not told and isinstance(update, Update) and update.effective_message:
        try:
            await update.effective_message.reply_text(SOMETHING_WRONG)
        except TelegramError as e:
            log.warning("could not tell the user: %s", e)


def build_application(settings: BotSettings, client: ServiceClient) -> tuple[Application, TelegramCheckBot]:
    builder = ApplicationBuilder().token(settings.telegram_bot_token).concurrent_updates(True)
    if settings.telegram_base_url:
        base = settings.telegram_base_url.rstrip("/")
        builder = builder.base_url(f"{base}/bot").base_file_url(f"{base}/file/bot")
        builder = builder.local_mode(settings.telegram_local_mode)
    async def close_client(_app: Application) -> None:  # no "Unclosed client session" at exit
        await client.close()

    app = builder.post_shutdown(close_client).build()
    app.add_error_handler(on_error)
    bot = TelegramCheckBot(settings, client)
    app.add_handler(CommandHandler(["start", "help"], bot.start))
    app.add_handler(CommandHandler("about", bot.about))
    app.add_handler(CommandHandler("check", bot.check_command))
    app.add_handler(CallbackQueryHandler(bot.feedback_button, pattern=FEEDBACK_DATA))
    private = filters.ChatType.PRIVATE & ~filters.COMMAND
    app.add_handler(MessageHandler(private & (filters.TEXT | filters.CAPTION | filters.PHOTO | filters.VIDEO
                                              | filters.ANIMATION | filters.Document.ALL | filters.VIDEO_NOTE),
                                   bot.private_message))
    app.add_handler(MessageHandler(filters.ChatType.GROUPS & (filters.Entity(MessageEntity.MENTION)
                                                              | filters.CaptionEntity(MessageEntity.MENTION)),
                                   bot.group_mention))
    return app, bot


def main() -> None:
    s = startup("telegram")
    app, _ = build_application(s, ServiceClient(s.api_url, s.api_token, retain=not s.zero_retention))
    if s.telegram_webhook_url:
        app.run_webhook(listen=s.telegram_listen, port=s.telegram_port, url_path="telegram",
                        secret_token=s.telegram_webhook_secret or None,
                        webhook_url=s.telegram_webhook_url.rstrip("/") + "/telegram")
    else:
        app.run_polling(allowed_updates=Update.ALL_TYPES)


if __name__ == "__main__":
    main()
