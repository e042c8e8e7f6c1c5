"""The job vocabulary, declared once: the stages a check goes through, the states of a
check, the problem codes a check or a request can end with, and how one progress event
is encoded.

Every producer (the pipeline, the worker tasks, the API) and every consumer (the API's
event stream, the bots, the command line) takes its names from here; the extension's and
the bots' sentence tables are checked against :class:`Problem` and :class:`Stage` by
``tests/test_vocabulary.py``. No Redis, torch or web dependency: anything may import it.
"""

from __future__ import annotations

import json
from dataclasses import KW_ONLY, dataclass, field
from enum import StrEnum


class State(StrEnum):
    """Where a check is: waiting, being worked on, or ended one way or the other."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


TERMINAL = frozenset({State.DONE, State.FAILED})


class Stage(StrEnum):
    """What a check is doing, in the order a video goes through them (an image skips
    ``segmenting``; a check found by content skips everything after ``downloading``)."""

    QUEUED = "queued"  # waiting for a worker (again after its download: the analysis queue)
    DOWNLOADING = "downloading"  # the link's medium fetched, or the upload opened
    PROBING = "probing"  # what the file is: image or video, size, length
    SEGMENTING = "segmenting"  # shots (one decode also samples the frames faces are looked for in)
    DETECTING_FACES = "detecting_faces"
    CLUSTERING = "clustering"  # faces grouped by person, per shot
    SCORING = "scoring"  # the ensemble over every face kept
    RENDERING = "rendering"  # the gallery image
    DONE = "done"
    FAILED = "failed"

    @property
    def label(self) -> str:
        """The short name the command line prints beside the stage's message."""
        return _LABELS[self]


# The order the stages come in (the extension's progress bar follows it).
STAGE_ORDER = (Stage.QUEUED, Stage.DOWNLOADING, Stage.PROBING, Stage.SEGMENTING, Stage.DETECTING_FACES,
               Stage.CLUSTERING, Stage.SCORING, Stage.RENDERING, Stage.DONE)
_LABELS = {Stage.QUEUED: "queue", Stage.DOWNLOADING: "fetch", Stage.PROBING: "probe", Stage.SEGMENTING: "shots",
           Stage.DETECTING_FACES: "faces", Stage.CLUSTERING: "clusters", Stage.SCORING: "scoring",
           Stage.RENDERING: "gallery", Stage.DONE: "done", Stage.FAILED: "failed"}


class Problem(StrEnum):
    """Every problem code: the end of an RFC 9457 ``type`` URI in the API, the ``code`` of a
    failed check, and the key the bots and the extension choose their sentence by."""

    # the medium behind a link, or an upload (detector.errors: a user can cause them)
    UNSUPPORTED_URL = "unsupported-url"
    PRIVATE_ADDRESS = "private-address"
    UNREACHABLE = "unreachable"
    NOT_FOUND = "not-found"
    TOO_LARGE = "too-large"
    TOO_LONG = "too-long"
    TOO_MANY_PIXELS = "too-many-pixels"
    TOO_SMALL = "too-small"
    NOT_A_MEDIUM = "not-a-medium"
    CORRUPT_MEDIA = "corrupt-media"
    # the service's own set-up (detector.errors)
    DETECTOR_ERROR = "detector-error"
    NO_TRAINED_WEIGHTS = "no-trained-weights"
    WEIGHTS_UNVERIFIED = "weights-unverified"
    BAD_SETTING = "bad-setting"
    DEVICE_UNAVAILABLE = "device-unavailable"
    # a check's run (worker)
    TIMEOUT = "timeout"
    WORKER_CRASHED = "worker-crashed"
    WORKER_LOST = "worker-lost"
    INTERNAL_ERROR = "internal-error"
    # a request to the API
    UNAUTHORISED = "unauthorised"
    BAD_TOKEN = "bad-token"
    FORBIDDEN = "forbidden"
    BAD_REQUEST = "bad-request"
    REQUEST_TOO_LARGE = "request-too-large"
    REQUEST_TIMEOUT = "request-timeout"
    BAD_FILE_NAME = "bad-file-name"
    UNKNOWN_CHECK = "unknown-check"
    NO_GALLERY = "no-gallery"
    SUBMISSION_IN_PROGRESS = "submission-in-progress"
    CHECK_RUNNING = "check-running"
    NO_VERDICT = "no-verdict"  # feedback on a check that ended without a verdict
    RATE_LIMITED = "rate-limited"
    TOO_MANY_STREAMS = "too-many-streams"
    SERVICE_UNAVAILABLE = "service-unavailable"
    UNHEALTHY = "unhealthy"
    # a client's own: the service did not answer at all
    SERVICE_DOWN = "service-down"


def problem_code(problem: dict | None) -> str:
    """The code of a failed check's problem, or of a problem+json body (its ``type``'s end)."""
    problem = problem or {}
    return problem.get("code") or str(problem.get("type", "")).rsplit("/", 1)[-1]


@dataclass
class Event:
    """One progress event of a check, as the worker appends it to the check's stream (Redis
    string fields) and the API sends it on (JSON, ``/v1/checks/{id}/events``). The last one
    (state done or failed) says how the check ended: ``score`` and ``verdict``, or ``code``."""

    stage: Stage
    message: str
    _: KW_ONLY  # the rest by name: Event(Stage.SCORING, "Scored", done=3, total=3)
    state: State = State.RUNNING
    ts: float | None = None
    done: int | None = None  # within the stage: done of total (faces looked at, scored)
    total: int | None = None
    counts: dict[str, int] = field(default_factory=dict)  # shots, faces found so far
    score: float | None = None  # done: the check's probability (None: inconclusive)
    verdict: str | None = None  # done: the report's band
    code: Problem | None = None  # failed: the problem

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def to_json(self) -> dict:
        """The event as the API's stream sends it: numbers as numbers, absent fields left out."""
        out: dict = {"stage": str(self.stage), "message": self.message, "state": str(self.state)}
        for k in ("ts", "done", "total", "verdict"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        if self.counts:
            out["counts"] = self.counts
        if self.state is State.DONE:
            out["score"] = self.score
        if self.code is not None:
            out["code"] = str(self.code)
        return out

    @classmethod
    def from_json(cls, d: dict) -> Event:
        return cls(stage=Stage(d["stage"]), message=d.get("message", ""), state=State(d.get("state", "running")),
                   ts=d.get("ts"), done=d.get("done"), total=d.get("total"), counts=d.get("counts") or {},
                   score=d.get("score"), verdict=d.get("verdict"), code=as_problem(d.get("code")))

    def to_fields(self) -> dict[str, str]:
        """Flat string fields, as a Redis stream entry holds them: ``to_json``'s, with the
        numbers and counts JSON-encoded."""
        return {k: json.dumps(v) if k in _ENCODED else v for k, v in self.to_json().items()}

    @classmethod
    def from_fields(cls, f: dict[str, str]) -> Event:
        return cls.from_json({k: json.loads(v) if k in _ENCODED else v for k, v in f.items()})


_ENCODED = frozenset({"ts", "done", "total", "counts", "score"})  # JSON-encoded in a stream entry


def as_problem(raw: str | None) -> Problem | None:
    """A problem code as read back; one this version does not know (an older or newer worker's)
    is kept as the general one rather than refused."""
    if not raw:
        return None
    try:
        return Problem(raw)
    except ValueError:
        return Problem.DETECTOR_ERROR
