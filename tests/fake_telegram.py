"""A small fake of the Telegram Bot API on 127.0.0.1, recording every call.

It answers the methods the bot uses with objects shaped as the Bot API documents them,
serves ``getUpdates`` from a queue the test fills, and files from ``/file/bot<token>/``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time

from aiohttp import web

from .fake_api import FakeApi

BOT_USER = {"id": 4242, "is_bot": True, "first_name": "Deepfake check", "username": "deepcheck_bot",
            "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False}


class FakeTelegram(FakeApi):
    def __init__(self, token: str):
        super().__init__()
        self.token = token
        self.updates: asyncio.Queue = asyncio.Queue()
        self.files: dict[str, bytes] = {}  # file_id -> bytes
        self.ids = itertools.count(1000)
        self.update_ids = itertools.count(1)

    def routes(self, app: web.Application) -> None:
        app.router.add_post(f"/bot{self.token}/{{method}}", self.api)
        app.router.add_get(f"/file/bot{self.token}/{{path:.+}}", self.file)

    # -- test helpers ---------------------------------------------------------------------
    def message(self, text: str | None = None, chat_type: str = "private", chat_id: int = 77, user_id: int = 5,
                entities: list | None = None, **extra) -> dict:
        msg = {"message_id": next(self.ids), "date": int(time.time()),
               "chat": {"id": chat_id, "type": chat_type, **({"title": "Newsroom"} if chat_type != "private"
                                                              else {"first_name": "Ana"})},
               "from": {"id": user_id, "is_bot": False, "first_name": "Ana"}}
        if text is not None:
            msg["text"] = text
            if entities is None:
                entities = [{"type": "url", "offset": text.find("http"), "length": len(text.split("http", 1)[1]) + 4}
                            ] if "http" in text else []
                if text.startswith("/"):
                    entities.insert(0, {"type": "bot_command", "offset": 0, "length": len(text.split()[0])})
                if "@" in text:
                    at = text.index("@")
                    entities.append({"type": "mention", "offset": at, "length": len(text[at:].split()[0])})
            msg["entities"] = entities
        msg.update(extra)
        return msg

    def push(self, message: dict) -> dict:
        self.updates.put_nowait({"update_id": next(self.update_ids), "message": message})
        return message

    def press(self, data: str, user_id: int = 5, chat_id: int = 77, message_id: int = 1) -> str:
        """A user pressing an inline button (a callback query); returns the query's id."""
        qid = str(next(self.ids))
        msg = {"message_id": message_id, "date": int(time.time()), "from": BOT_USER, "text": "result",
               "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"}}
        self.updates.put_nowait({"update_id": next(self.update_ids), "callback_query": {
            "id": qid, "from": {"id": user_id, "is_bot": False, "first_name": "Ana"}, "chat_instance": "ci",
            "data": data, "message": msg}})
        return qid

    # -- the server -----------------------------------------------------------------------
    async def file(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        data = self.files.get(path.rsplit("/", 1)[-1])
        return web.Response(body=data) if data is not None else web.Response(status=404)

    async def _params(self, request: web.Request) -> dict:
        if request.content_type == "application/json":
            return await request.json()
        params = {}
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                data = await part.read()
                if part.filename:
                    params[part.name] = {"filename": part.filename, "size": len(data), "bytes": data}
                else:
                    params[part.name] = data.decode()
        else:
            params = dict(await request.post())
        for k, v in list(params.items()):
            if isinstance(v, str) and v[:1] in "{[":
                try:
                    params[k] = json.loads(v)
                except ValueError:
                    pass
        return params

    def _sent(self, p: dict, **content) -> dict:
        chat_id = int(p["chat_id"])
        msg = {"message_id": next(self.ids), "date": int(time.time()), "from": BOT_USER,
               "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"}, **content}
        if p.get("message_thread_id"):
            msg["message_thread_id"] = int(p["message_thread_id"])
            msg["is_topic_message"] = True
        return msg

    async def api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        p = await self._params(request)
        self.calls.append((method, p))
        if method == "getUpdates":
            timeout = min(float(p.get("timeout", 0) or 0), 1.0)
            try:
                upd = await asyncio.wait_for(self.updates.get(), timeout=max(timeout, 0.05))
                result = [upd]
            except TimeoutError:
                result = []
        elif method == "getMe":
            result = BOT_USER
        elif method == "sendMessage":
            result = self._sent(p, text=p["text"])
        elif method == "editMessageText":
            result = self._sent(p, text=p["text"])
            result["message_id"] = int(p["message_id"])
        elif method == "sendPhoto":
            result = self._sent(p, photo=[{"file_id": "ph1", "file_unique_id": "u1", "width": 800,
                                           "height": 600}], caption=p.get("caption", ""))
        elif method == "getFile":
            fid = p["file_id"]
            result = {"file_id": fid, "file_unique_id": "u" + fid, "file_size": len(self.files.get(fid, b"")),
                      "file_path": f"documents/{fid}"}
        else:  # sendChatAction, setWebhook, deleteWebhook, setMyCommands...
            result = True
        return web.json_response({"ok": True, "result": result})
