"""RFC 9457 problem details: every API error is ``application/problem+json``."""

from __future__ import annotations

import json

from aiohttp import web

PROBLEM_TYPE = "https://deepfake-check.org/problems/"


class ApiProblem(Exception):
    def __init__(self, status: int, code: str, title: str, detail: str | None = None,
                 headers: dict[str, str] | None = None, **extra):
        super().__init__(detail or title)
        self.status, self.code, self.title = status, code, title
        self.detail = detail or title
        self.headers = headers or {}
        self.extra = extra


def problem_response(status: int, code: str, title: str, detail: str, instance: str | None = None,
                     headers: dict[str, str] | None = None, **extra) -> web.Response:
    body = {"type": PROBLEM_TYPE + code, "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    body.update(extra)
    return web.Response(status=status, text=json.dumps(body), content_type="application/problem+json",
                        headers=headers)


def from_detector_error(err) -> ApiProblem:
    d = err.to_dict()
    return ApiProblem(d["status"], d["code"], d["title"], d["detail"])
