"""Feedback on a verdict from the people who read it: ``PUT /v1/checks/{id}/feedback``
({"opinion": "right" | "wrong", "user": the client's id for the person}) and
``GET /v1/checks/{id}/feedback?user=...``. One opinion per person per check, replaced when
they change their mind; stored with the check (worker.feedback) under a pseudonym of the
token's name and the user id; readable by the tokens that may read the check."""

from __future__ import annotations

from aiohttp import web

from detector.vocabulary import TERMINAL, Problem, State
from worker import feedback

from .context import STORE, TOKEN_NAME, json_body, readable_job
from .problems import ApiProblem


def _user(raw) -> str | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, (str, int)) or len(str(raw)) > feedback.MAX_USER_CHARS:
        raise ApiProblem(400, Problem.BAD_REQUEST, "The user cannot be used",
                         f"Send user as a string of at most {feedback.MAX_USER_CHARS} characters "
                         "(the id your platform gives the person), or leave it out when the token is one person's.")
    return str(raw)


def _ended_with_a_verdict(rec: dict[str, str]) -> None:
    if rec.get("state") not in TERMINAL:
        raise ApiProblem(409, Problem.CHECK_RUNNING, "The check is still running",
                         "Give feedback once it has ended (its events end with done).", headers={"Retry-After": "5"})
    if rec.get("state") != State.DONE or not rec.get("report"):
        raise ApiProblem(409, Problem.NO_VERDICT, "The check has no verdict",
                         "It failed, so there is no verdict to agree or disagree with.")


async def put_feedback(request: web.Request) -> web.Response:
    rec = await readable_job(request)
    body = await json_body(request)
    if not isinstance(body, dict):
        raise ApiProblem(400, Problem.BAD_REQUEST, "The body is not an object", 'Send {"opinion": "right"}.')
    try:
        opinion = feedback.Opinion(body.get("opinion"))
    except ValueError:
        raise ApiProblem(400, Problem.BAD_REQUEST, "No opinion",
                         'Send {"opinion": "right"} (this looks right) or {"opinion": "wrong"} (this looks wrong).') from None
    _ended_with_a_verdict(rec)
    client = request[TOKEN_NAME]
    who = feedback.pseudonym(client, _user(body.get("user")))
    before, counts = await request.app[STORE].set_feedback(rec["id"], who, opinion, client)
    return web.json_response({"check": rec["id"], "opinion": opinion.value, "previous": before, "feedback": counts})


async def get_feedback(request: web.Request) -> web.Response:
    rec = await readable_job(request)
    who = feedback.pseudonym(request[TOKEN_NAME], _user(request.query.get("user")))
    mine, counts = await request.app[STORE].get_feedback(rec["id"], who)
    return web.json_response({"check": rec["id"], "opinion": mine, "feedback": counts})
