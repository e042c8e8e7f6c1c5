"""A small fake of the Slack Web API on 127.0.0.1, recording every call, including the
file-upload steps of ``files_upload_v2`` (getUploadURLExternal, the upload, complete)."""

from __future__ import annotations

import itertools
import json
import time
from urllib.parse import parse_qsl

from aiohttp import web

from .fake_api import FakeApi


class FakeSlack(FakeApi):
    def __init__(self):
        super().__init__()
        self.uploads: dict[str, bytes] = {}
        self.shared_files: dict[str, bytes] = {}  # files users shared, served at /files-pri/{id}
        self.bot_token = "xoxb-test"
        self.seq = itertools.count(1)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/{method}", self.api)
        app.router.add_post("/upload/{file_id}", self.upload)
        app.router.add_get("/files-pri/{file_id}", self.private_file)

    async def private_file(self, request: web.Request) -> web.Response:
        """A file a user shared (``url_private_download``): only with the bot's token."""
        fid = request.match_info["file_id"]
        self.calls.append(("download", {"file_id": fid, "_auth": request.headers.get("Authorization", "")}))
        if request.headers.get("Authorization") != f"Bearer {self.bot_token}":
            return web.Response(status=302, headers={"Location": f"{self.url}/signin"})  # as Slack answers
        return web.Response(body=self.shared_files[fid], content_type="video/mp4")

    def ts(self) -> str:
        return f"{int(time.time())}.{next(self.seq):06d}"

    async def upload(self, request: web.Request) -> web.Response:
        data = await request.read()
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            part = await reader.next()
            data = await part.read()
        self.uploads[request.match_info["file_id"]] = data
        self.calls.append(("upload", {"file_id": request.match_info["file_id"], "size": len(data)}))
        return web.Response(text="OK - 1")

    async def api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        raw = await request.text()
        if request.content_type == "application/json":
            p = json.loads(raw or "{}")
        else:
            p = dict(parse_qsl(raw))
        p = {**dict(request.query), **p}  # some SDK methods send their arguments as query parameters
        for k in ("blocks", "files"):
            if isinstance(p.get(k), str):
                p[k] = json.loads(p[k])
        p["_auth"] = request.headers.get("Authorization", "")
        self.calls.append((method, p))
        out: dict = {"ok": True}
        if method == "auth.test":
            out.update(user_id="UBOT", bot_id="BBOT", team_id="T1", team="Newsroom", user="deepcheck",
                       url="https://newsroom.example/")
        elif method in ("chat.postMessage", "chat.update"):
            ts = p.get("ts") or self.ts()
            p["_ts"] = ts  # what the caller was told
            out.update(channel=p.get("channel"), ts=ts, message={"text": p.get("text", ""), "ts": ts})
        elif method == "chat.postEphemeral":
            out.update(message_ts=self.ts())
        elif method == "files.getUploadURLExternal":
            fid = f"F{next(self.seq)}"
            out.update(file_id=fid, upload_url=f"{self.url}/upload/{fid}")
        elif method == "files.completeUploadExternal":
            out.update(files=[{"id": f["id"], "title": f.get("title", "")} for f in p.get("files", [])])
        elif method == "files.info":
            out.update(file={"id": p.get("file"), "name": "deepfake-check.png"})
        return web.json_response(out)
