"""The bots' client of the checking service's API (``/v1/checks``): one aiohttp session per
bot, one request helper that turns every answer into JSON or a ServiceError, and the
event stream a check is followed by."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

import aiohttp

from detector.vocabulary import STAGE_ORDER, TERMINAL, Problem

log = logging.getLogger(__name__)
_STAGE_INDEX = {st.value: i for i, st in enumerate(STAGE_ORDER)}


class ServiceError(Exception):
    def __init__(self, problem: dict):
        super().__init__(problem.get("detail") or problem.get("title"))
        self.problem = problem


class ServiceClient:
    """The bots' client of the API (`/v1/checks`), one aiohttp session per bot."""

    def __init__(self, base_url: str, token: str, timeout: float = 30.0, retain: bool = True):
        self.base = base_url.rstrip("/")
        self.retain = retain  # False: zero retention (submitted so, deleted once answered)
        self.headers = {"Authorization": f"Bearer {token}"}
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self.headers, timeout=self.timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _request(self, method: str, url: str, *, raw: bool = False, **kw):
        """One call to the service: its JSON body (``raw``: its bytes, None unless 200). A
        problem+json answer raises ServiceError with it; no answer at all is ``service-down``."""
        try:
            async with self.session.request(method, url if "://" in url else self.base + url, **kw) as r:
                if raw:
                    return await r.read() if r.status == 200 else None
                body = await r.json(content_type=None)
                if r.status >= 400:
                    raise ServiceError(body if isinstance(body, dict) else {"detail": str(body)})
                return body
        except (TimeoutError, aiohttp.ClientError) as e:
            raise ServiceError({"code": Problem.SERVICE_DOWN, "detail": str(e) or type(e).__name__}) from e

    async def submit_url(self, url: str) -> dict:
        return await self._request("POST", "/v1/checks", json={"url": url, "retain": self.retain})

    async def submit_file(self, data: bytes, filename: str) -> dict:
        form = aiohttp.FormData()
        form.add_field("retain", "true" if self.retain else "false")
        form.add_field("file", data, filename=filename, content_type="application/octet-stream")
        return await self._request("POST", "/v1/checks", data=form)

    async def feedback(self, job_id: str, opinion: str, user: str) -> dict:
        """One person's opinion of a check's verdict ("right" or "wrong"), replacing theirs."""
        return await self._request("PUT", f"/v1/checks/{job_id}/feedback", json={"opinion": opinion, "user": user})

    async def delete(self, job_id: str) -> None:
        """Erase an ended check on the service (zero retention, once its reply is shown)."""
        try:
            async with self.session.delete(f"{self.base}/v1/checks/{job_id}") as r:
                if r.status >= 400:
                    raise ServiceError(await r.json(content_type=None))
        except (TimeoutError, aiohttp.ClientError) as e:
            raise ServiceError({"code": Problem.SERVICE_DOWN, "detail": str(e) or type(e).__name__}) from e

    async def model_card(self) -> dict:
        """The service's model card (the API builds it from the worker's measurements)."""
        return await self._request("GET", "/v1/model-card", headers={"Accept": "application/json"})

    async def view(self, job_id: str) -> dict:
        return await self._request("GET", f"/v1/checks/{job_id}")

    async def gallery(self, url: str) -> bytes | None:
        """The gallery PNG, or None: a reply already sent stands without its picture."""
        try:
            return await self._request("GET", url, raw=True)
        except ServiceError as e:
            log.warning("gallery %s not fetched: %s", url, e)
            return None

    async def follow(self, view: dict, on_stage, on_event=None) -> dict:
        """Follow a submitted job to its end: ``await on_stage(event)`` when a later stage
        begins, ``await on_event(event)`` for every event; returns the final job view (carried
        by the terminal event; fetched once more from a service that does not send it)."""
        if view["state"] in TERMINAL:
            return view
        stage, reached = None, -1
        async for ev in self.events(view["id"]):
            if ev.get("state") in TERMINAL:
                if isinstance(ev.get("view"), dict):  # the service sends the final view with it
                    return ev["view"]
                break
            at = _STAGE_INDEX.get(ev.get("stage"), reached)  # a stage a newer service names: shown
            if ev.get("stage") != stage and at >= reached:  # forward only: the analysis queue after
                stage, reached = ev.get("stage"), at  # the download is not shown as going back
                await on_stage(ev)
            if on_event is not None:
                await on_event(ev)
        return await self.view(view["id"])

    async def events(self, job_id: str, max_wait_s: float = 1800) -> AsyncIterator[dict]:
        """The job's progress events, ending with the terminal one; reconnects from the
        last event id when the stream breaks."""
        last = None
        deadline = time.monotonic() + max_wait_s
        timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
        while time.monotonic() < deadline:
            headers = {"Last-Event-ID": last} if last else {}
            try:
                async with self.session.get(f"{self.base}/v1/checks/{job_id}/events", headers=headers,
                                            timeout=timeout) as r:
                    if r.status >= 400:
                        raise ServiceError(await r.json(content_type=None))
                    data, ev_id = None, None
                    async for raw in r.content:
                        line = raw.decode("utf-8").rstrip("\r\n")
                        if line.startswith("id: "):
                            ev_id = line[4:]
                        elif line.startswith("data: "):
                            data = json.loads(line[6:])
                        elif line == "" and data is not None:
                            last = ev_id or last
                            yield data
                            if data.get("state") in TERMINAL:
                                return
                            data = None
            except (TimeoutError, aiohttp.ClientError):
                pass
            await asyncio.sleep(1.0)
        raise ServiceError({"code": Problem.TIMEOUT, "detail": "The check did not finish in time."})


