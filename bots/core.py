"""Platform-neutral bot logic: find links, talk to the service, turn a job into a reply.

Adapters (Telegram, Slack) stay thin: they parse the platform's message, call
:class:`ServiceClient`, follow the job's events and render a :class:`Reply`.
No analysis happens here: the bots only read the service's Report.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from abc import ABC, abstractmethod
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from detector.report import SCORE_MEANS, ReportVersionError, fmt_clock, read_report
from detector.vocabulary import Problem, Stage, State, problem_code

from .client import ServiceClient, ServiceError

log = logging.getLogger(__name__)
URL_RE = re.compile(r"https?://[^\s<>\"'`|]+", re.IGNORECASE)
TRAILING = ".,;:!?)]}>\u00bb\u201d\u2019"


def find_links(text: str | None, extra: list[str] | None = None) -> list[str]:
    """http(s) links in a message text plus links the platform gives separately
    (entities, previews), in order, without duplicates."""
    found = []
    for m in URL_RE.finditer(text or ""):
        url = m.group(0).rstrip(TRAILING)
        if url.count("(") < url.count(")"):
            url = url[: url.rfind(")")]
        found.append(url)
    for u in extra or []:
        if u and u.lower().startswith(("http://", "https://")):
            found.append(u)
    return list(dict.fromkeys(found))


# -- what users read ----------------------------------------------------------------------

STAGE_TEXT = {
    Stage.QUEUED: "Waiting in the queue…",
    Stage.DOWNLOADING: "Downloading the medium…",
    Stage.PROBING: "Opening the file…",
    Stage.SEGMENTING: "Splitting the video into shots…",
    Stage.DETECTING_FACES: "Looking for faces…",
    Stage.CLUSTERING: "Grouping faces by person…",
    Stage.SCORING: "Scoring the faces…",
    Stage.RENDERING: "Drawing the gallery…",
    Stage.DONE: "Done.",
    Stage.FAILED: "The check failed.",
}

# One sentence for every problem code (tests/test_vocabulary.py keeps it complete). Those
# of the service's own set-up or of the bot's requests are not the asker's doing: they say so.
_NOT_READY = "The checking service isn't ready yet. Please try again later, or tell the people who run it."
_OUR_SIDE = "Something went wrong on the checking service's side; please try again later."
FRIENDLY = {
    Problem.UNSUPPORTED_URL: "I can only check public http(s) links to videos and images.",
    Problem.PRIVATE_ADDRESS: "That link points to a private or local network address, so I can't open it.",
    Problem.NOT_FOUND: "I couldn't find anything at that link. Is it public, and is it still online?",
    Problem.UNREACHABLE: "I couldn't reach that link right now. Please try again in a few minutes.",
    Problem.TOO_LARGE: "That file is too large for me to check.",
    Problem.TOO_LONG: "That video is too long for me to check; please send a shorter clip.",
    Problem.NOT_A_MEDIUM: "I found no video or image at that link.",
    Problem.CORRUPT_MEDIA: "I couldn't open that file; it seems to be damaged or in a format I can't read.",
    Problem.TOO_MANY_PIXELS: "That image or video is too large in pixels for me to open safely.",
    Problem.TOO_SMALL: "That image or video is too small to contain a face I could check.",
    Problem.BAD_FILE_NAME: "The file's name is too long; please rename it and send it again.",
    Problem.NO_TRAINED_WEIGHTS: "The checking service isn't ready yet (its detectors are not installed).",
    Problem.WEIGHTS_UNVERIFIED: "The checking service isn't ready yet (a detector file failed its integrity check).",
    Problem.BAD_SETTING: _NOT_READY,
    Problem.DEVICE_UNAVAILABLE: _NOT_READY,
    Problem.DETECTOR_ERROR: _OUR_SIDE,
    Problem.RATE_LIMITED: "You're sending checks faster than I can take them; please wait a minute.",
    Problem.TIMEOUT: "The check took too long; a shorter clip may work.",
    Problem.WORKER_CRASHED: "The analysis stopped unexpectedly several times on this medium, so I gave up on it.",
    Problem.WORKER_LOST: "The check stopped on the service's side and could not be resumed; please send it again.",
    Problem.INTERNAL_ERROR: _OUR_SIDE,
    Problem.UNAUTHORISED: "This bot has no token for the checking service; please tell the people who run it.",
    Problem.BAD_TOKEN: "The checking service refused this bot's token; please tell the people who run it.",
    Problem.FORBIDDEN: "The checking service refused this request.",
    Problem.BAD_REQUEST: _OUR_SIDE,
    Problem.REQUEST_TOO_LARGE: "That file is too large for me to send to the checking service.",
    Problem.REQUEST_TIMEOUT: "The checking service timed out while I was sending the check; please try again.",
    Problem.UNKNOWN_CHECK: "The checking service no longer knows this check (it may have expired); please send it again.",
    Problem.NO_GALLERY: "The check has no gallery image yet.",
    Problem.CHECK_RUNNING: "The check is still running; it can be deleted once it has ended.",
    Problem.NO_VERDICT: "This check ended without a verdict, so there is nothing to agree or disagree with.",
    Problem.SUBMISSION_IN_PROGRESS: "This check is still being handed to the service; I'll follow it once it is.",
    Problem.TOO_MANY_STREAMS: "The checking service is following too many checks right now; please try again in a minute.",
    Problem.SERVICE_UNAVAILABLE: "The checking service is not available right now. Please try again later.",
    Problem.UNHEALTHY: "The checking service is not available right now. Please try again later.",
    Problem.SERVICE_DOWN: "The checking service is not answering right now. Please try again later.",
}
NO_LINK = ("Send me a link to a video or image (or the file itself), and I'll estimate how likely "
           "it is that the faces in it were manipulated.")
NO_FACE = ("I couldn't find a face to analyse, so I can't say whether this is a deepfake. "
           "That says nothing about whether it is authentic.")
NEWER_REPORT = ("The check finished, but its report is in a newer format than this bot reads. "
                "Open the report page below; please tell the people who run the bot.")
BAND_ICON = {"likely_authentic": "🟢", "uncertain": "🟡", "likely_manipulated": "🔴", "inconclusive": "⚪"}


def friendly(problem: dict | None) -> str:
    """The sentence for a failed check's or an API request's problem (a code this version does
    not know: the service's own detail)."""
    try:
        return FRIENDLY[Problem(problem_code(problem))]
    except ValueError:
        return (problem or {}).get("detail") or "The check failed."


def stage_text(event: dict) -> str:
    try:
        text = STAGE_TEXT[Stage(event.get("stage", ""))]
    except ValueError:  # a stage a newer service names
        text = event.get("message") or "Working…"
    counts = event.get("counts") or {}
    bits = []
    if counts.get("shots"):
        bits.append(f"{counts['shots']} shot{'s' if counts['shots'] != 1 else ''}")
    if counts.get("faces"):
        bits.append(f"{counts['faces']} face{'s' if counts['faces'] != 1 else ''}")
    return text + (f" ({', '.join(bits)})" if bits else "")


@dataclass
class Reply:
    """A finished check, as every channel shows it."""

    headline: str  # "🔴 Likely manipulated: 87% probability that the faces were manipulated", or why not
    score: float | None = None
    notes: list[str] = field(default_factory=list)  # what the bands mean; the shots, and the most suspicious
    people: list[str] = field(default_factory=list)  # "Person B (shots 2, 5, 7): 81%", with several people or shots
    shots: list[str] = field(default_factory=list)  # "Shot 1 (0:00.0–0:04.5): 87%", only with several shots
    items: list[str] = field(default_factory=list)  # an album: "Photo 2: 81%" for each of its media
    warnings: list[str] = field(default_factory=list)
    report_url: str | None = None
    gallery_url: str | None = None
    seen_before: bool = False
    reliable: bool = False  # a score shown as a finding (not held back by the reliability gate)
    check_id: str | None = None
    feedback: bool = False  # offer "looks right / looks wrong" (a verdict the service keeps)


def reply_from_view(view: dict, model_card_url: str | None = None) -> Reply:
    links = view.get("links", {})
    if view.get("state") == State.FAILED:
        return Reply(headline=friendly(view.get("problem")), report_url=links.get("report_page"))
    try:
        r = read_report(view["report"])
    except ReportVersionError:
        return Reply(headline=NEWER_REPORT, report_url=links.get("report_page"))
    gated = r.score is not None and bool(r.verdict_note)  # no number shown as a finding
    if r.score is None:
        headline = f"{BAND_ICON['inconclusive']} {NO_FACE}"
    elif gated:  # the reliability gate: why, and what to do next
        headline = f"{BAND_ICON['inconclusive']} {r.verdict_note}"
    else:
        headline = f"{BAND_ICON.get(r.verdict.value, '')} {r.verdict_label}: {r.score * 100:.0f}% {SCORE_MEANS}"
    notes = [r.bands_note] if r.score is not None and not gated else []
    if r.shots_note:
        notes.append(r.shots_note)
    several_shots = r.media.kind == "video" and len(r.shots) > 1
    people = [f"{p.where(r.media.kind)}: {'faces found, no reliable score' if gated else f'{p.score * 100:.0f}%'}"
              for p in r.people] if len(r.people) > 1 or (several_shots and r.people) else []
    shots = []
    if several_shots:  # one shot, or an image: the headline says it all
        for s in r.shots:
            score = ("no face" if s.score is None else "faces found, no reliable score" if gated
                     else f"{s.score * 100:.0f}%")
            shots.append(f"Shot {s.index + 1} ({fmt_clock(s.start_s)}–{fmt_clock(s.end_s)}): {score}")
    warnings = [w.message for w in r.warnings if w.code not in ("members_not_scored", "no_faces")]
    return Reply(headline=headline, score=r.score, notes=notes, people=people, shots=shots, warnings=warnings,
                 report_url=links.get("report_page"), gallery_url=links.get("gallery"),
                 seen_before=bool(view.get("seen_before")), reliable=r.score is not None and not gated,
                 check_id=view.get("id"), feedback=r.score is not None)


def about_lines(card: dict) -> tuple[str, list[str], list[str]]:
    """(intended use, measured results, caveats) of the model card, as plain sentences."""
    measured = []
    for ev in card.get("evaluations", []):
        if not ev.get("default_ensemble", True):  # a chat summarises what users get
            continue
        lvl = ev.get("video_level") or ev.get("face_level")
        if lvl and lvl["ensemble"].get("auc") is not None:
            e = lvl["ensemble"]
            what = "videos" if ev.get("video_level") else "faces"
            measured.append(f"{ev['name']}: AUC {e['auc']:.2f}, balanced accuracy {e['balanced_accuracy']:.2f} "
                            f"on {e['n']} {what}")
    rob = card.get("robustness")
    if rob and len(rob.get("rows", [])) > 1:
        clean = rob["rows"][0]["balanced_accuracy"]
        worst = min(r["balanced_accuracy"] for r in rob["rows"][1:])
        measured.append(f"under a white-box attack (PGD) balanced accuracy falls from {clean:.2f} to {worst:.2f}")
    fb = card.get("user_feedback")
    if fb and fb.get("checks_with_feedback"):
        measured.append(f"readers disputed {fb['disputed']} of the {fb['checks_with_feedback']} verdicts "
                        "they gave feedback on")
    trained = [m["name"] for m in card.get("members", []) if m.get("trained") and m.get("in_default_ensemble", True)]
    if trained:
        measured.append("detectors: " + ", ".join(trained))
    return card.get("intended_use", ""), measured, card.get("caveats", [])


class RateLimiter:
    """Per-user sliding window, in the bot process: ``limit`` checks per ``window_s``."""

    def __init__(self, limit: int = 5, window_s: float = 600.0):
        self.limit, self.window = limit, window_s
        self.hits: dict[str, deque] = defaultdict(deque)

    def allow(self, user: str) -> bool:
        now = time.monotonic()
        q = self.hits[user]
        while q and now - q[0] > self.window:
            q.popleft()
        if len(q) >= self.limit:
            return False
        q.append(now)
        return True


class UserTold(Exception):
    """A failure the user was already told about in the check's own status message; its
    cause is the bug, for the adapter's one error handler to log."""


class Conversation(ABC):
    """Where one check is answered, as a platform shows it: the hooks the one check flow
    (:meth:`CheckBot.answer`) calls. An adapter implements them with its own API calls and
    swallows its own "message not modified"-style errors; the flow holds no platform type."""

    @abstractmethod
    async def status(self, text: str) -> None:
        """Show ``text`` as the check's status (progress, or the failure sentence)."""

    @abstractmethod
    async def result(self, reply: Reply) -> None:
        """Replace the status with the finished check."""

    @abstractmethod
    async def gallery(self, reply: Reply, png: bytes) -> None:
        """Post the gallery image in the same thread."""

    async def working(self, event: dict) -> None:
        """Called on every progress event (e.g. to keep a "typing…" indicator alive)."""
        return None  # by default there is nothing to keep alive


class CheckBot:
    """What both adapters hold: the service client, the per-user limit, and the one check
    flow; an adapter parses its platform's message and renders through a Conversation."""

    def __init__(self, settings, client: ServiceClient):
        self.settings = settings
        self.client = client
        self.limiter = RateLimiter(settings.user_rate_limit, settings.user_rate_window_s)
        self.tasks: set[asyncio.Task] = set()

    def track(self) -> None:
        """Keep the running task (a check its framework started) referenced until it ends, so
        it is neither garbage-collected nor forgotten at shutdown."""
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def answer(self, conv: Conversation, submit: Callable[[], Awaitable[dict]]) -> None:
        """The check flow of every channel: submit, follow the stages, render the result, then
        the gallery. A service problem becomes its sentence; a bug is told to the user and
        raised as :class:`UserTold` for the adapter's error handler."""
        try:
            view = await self.client.follow(await submit(), lambda ev: conv.status(stage_text(ev)), conv.working)
            await self._deliver(conv, reply_from_view(view), [view["id"]])
        except ServiceError as e:
            await conv.status(friendly(e.problem))
        except CheckRefused as e:
            await conv.status(str(e))
        except Exception as e:
            await conv.status(SOMETHING_WRONG)
            raise UserTold() from e


    async def answer_album(self, conv: Conversation, submits: list[tuple[str, Callable[[], Awaitable[dict]]]]) -> None:
        """An album (several media sent as one message): each medium is its own check on the
        service, followed side by side; the asker gets one status, one reply naming every
        item, and the most suspicious item's gallery."""
        done = 0

        async def one(submit) -> dict | str:
            nonlocal done
            try:
                view = await self.client.follow(await submit(), _ignore)
            except ServiceError as e:
                view = friendly(e.problem)
            except CheckRefused as e:
                view = str(e)
            done += 1
            await conv.status(f"Checking {len(submits)} items… ({done} of {len(submits)} done)")
            return view

        try:
            views = await asyncio.gather(*(one(s) for _, s in submits))
            await self._deliver(conv, album_reply([name for name, _ in submits], views),
                                [v["id"] for v in views if isinstance(v, dict)])
        except Exception as e:
            await conv.status(SOMETHING_WRONG)
            raise UserTold() from e

    async def _deliver(self, conv: Conversation, reply: Reply, job_ids: list[str]) -> None:
        """Show a finished check (its result, then its gallery); under zero retention, without
        the links and buttons of a check that is then erased."""
        if not self.client.retain:  # the report page and the check are erased once answered
            reply.report_url, reply.feedback = None, False
        await conv.result(reply)
        if reply.score is not None and reply.gallery_url:  # nothing to show without a scored face
            png = await self.client.gallery(reply.gallery_url)
            if png:
                await conv.gallery(reply, png)
        if not self.client.retain:
            for job_id in job_ids:
                await self._erase(job_id)

    async def give_feedback(self, job_id: str, opinion: str, user: str) -> str:
        """Store one person's opinion of a verdict (a button they pressed); the sentence to show
        them: thanks, a change noted, or why it was not stored."""
        try:
            answer = await self.client.feedback(job_id, opinion, user)
        except ServiceError as e:
            return friendly(e.problem)
        return feedback_text(opinion, answer.get("previous"))

    async def _erase(self, job_id: str) -> None:
        try:
            await self.client.delete(job_id)
        except ServiceError as e:  # it expires after the service's delivery grace anyway
            log.warning("check %s not erased: %s", job_id, e)


class CheckRefused(Exception):
    """The adapter could not hand the medium over (e.g. the platform would not give the
    file); its message is the sentence for the user."""


async def _ignore(_event: dict) -> None:
    return None


def album_reply(names: list[str], views: list[dict | str]) -> Reply:
    """One reply for an album: the most suspicious item's result (its headline, notes,
    people, gallery and feedback buttons), with a line for every item. ``views`` are the
    items' final job views, or the sentence of an item that could not be checked."""
    replies = [reply_from_view(v) if isinstance(v, dict) else Reply(headline=v) for v in views]
    scored = [k for k, r in enumerate(replies) if r.reliable]
    top_k = max(scored, key=lambda k: replies[k].score) if scored else 0
    top = replies[top_k]
    items = []
    for k, (name, r) in enumerate(zip(names, replies)):
        if r.score is None:
            what = "no face found" if isinstance(views[k], dict) and views[k].get("state") == State.DONE else r.headline
        elif k not in scored:
            what = "faces found, no reliable score"
        else:
            what = f"{r.score * 100:.0f}%"
        items.append(f"{name} {k + 1}: {what}")
    note = (f"The album has {len(names)} items; the most suspicious is {names[top_k].lower()} {top_k + 1}."
            if scored else f"The album has {len(names)} items; none gave a reliable score.")
    return Reply(headline=top.headline, score=top.score, notes=[note] + top.notes, people=top.people,
                 shots=top.shots, items=items, warnings=top.warnings, report_url=top.report_url,
                 gallery_url=top.gallery_url, reliable=top.reliable, check_id=top.check_id, feedback=top.feedback)


MAX_ALBUM_ITEMS = 10  # Telegram's own limit of an album
MAX_LINKS_PER_MESSAGE = 3  # each is its own check, with its own status and reply


def plan_links(links: list[str], allow: Callable[[], bool]) -> tuple[list[str], str | None]:
    """The links of one message to check (at most MAX_LINKS_PER_MESSAGE, each counted by the
    per-user limit ``allow``), and a sentence naming the ones left out, or None."""
    first, over = links[:MAX_LINKS_PER_MESSAGE], links[MAX_LINKS_PER_MESSAGE:]
    checked = []
    for url in first:
        if not allow():
            break
        checked.append(url)
    limited = first[len(checked):]
    parts = []
    if over:
        parts.append(f"I check at most {MAX_LINKS_PER_MESSAGE} links per message; not checked: {', '.join(over)}.")
    if limited and checked:
        parts.append(f"Not checked, because of the limit on checks per person: {', '.join(limited)}.")
    return checked, " ".join(parts) or None


def checking_text(url: str, several: bool) -> str:
    """The first status of a check: which link, when a message holds several."""
    return f"Checking {url}…" if several else "Checking…"


FEEDBACK_BUTTONS = {"right": "👍 Looks right", "wrong": "👎 Looks wrong"}
FEEDBACK_ASK = "Does this verdict look right to you?"


def feedback_text(opinion: str, previous: str | None) -> str:
    """What a person reads after pressing a feedback button."""
    said = "looks right" if opinion == "right" else "looks wrong"
    if previous == opinion:
        return f"You already said this verdict {said}; it is noted once."
    if previous:
        return f"Changed: you now say this verdict {said}. Thank you."
    return f"Thank you: noted that this verdict {said} to you. You can change it with the other button."


SOMETHING_WRONG = "Something went wrong on my side; please try again later."
RATE_LIMITED = "You've asked for several checks in a short time; please wait a few minutes and try again."
