"""The one Report schema every channel renders (Telegram, Slack, the API, the CLI).

Versioning follows the MeVer paper (section 5.3): ``REPORT_VERSION`` is a semantic
version of the *analysis output*: major = the output changes shape or meaning,
minor = the pipeline or its models change, patch = aggregation or minor fixes.
A client checks the major number before reading a report.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import Enum
from typing import Literal

from pydantic import BaseModel, Field

# 1.1: reliability gate (inconclusive_reasons), calibrated members
# 1.2: each member scores its own face crop (models[].crop); the ensemble's rule (combination)
# 1.3: the default models change: meve-mobilenetv2 4.0.0 under the stacking rule replaces MesoNet
# 1.4: plain words for readers: bands_note, shots_note; inconclusive reasons say what to do next
# 1.5: people: each shot's clusters linked into identities over the whole video
REPORT_VERSION = "1.5.0"

# Score bands over the ensemble's mean of *calibrated* member probabilities (each member
# Platt-scaled on a validation split, detector.calibration): under 0.35 the faces are
# more than 65% likely authentic, from 0.65 more than 65% likely manipulated.
AUTHENTIC_BELOW = 0.35
MANIPULATED_FROM = 0.65
# What the score is, said the same way in every channel (text replies, gallery, popup, page).
SCORE_MEANS = "probability that the faces were manipulated"


def bands_note() -> str:
    """What the bands mean, for every result that shows a score."""
    return (f"Below {AUTHENTIC_BELOW:.0%}: likely authentic; {AUTHENTIC_BELOW:.0%} to {MANIPULATED_FROM:.0%}: "
            f"uncertain; {MANIPULATED_FROM:.0%} and above: likely manipulated.")


class Verdict(str, Enum):
    likely_authentic = "likely_authentic"
    uncertain = "uncertain"
    likely_manipulated = "likely_manipulated"
    inconclusive = "inconclusive"

    @property
    def label(self) -> str:
        return VERDICT_LABELS[self]


VERDICT_LABELS = {
    Verdict.likely_authentic: "Likely authentic",
    Verdict.uncertain: "Uncertain",
    Verdict.likely_manipulated: "Likely manipulated",
    Verdict.inconclusive: "Inconclusive",
}


VERDICT_COLOURS = {
    Verdict.likely_authentic: "#2e9e4f",
    Verdict.uncertain: "#e0a100",
    Verdict.likely_manipulated: "#d62f2f",
    Verdict.inconclusive: "#8a8a8a",
}


def score_colour(score: float | None) -> str:
    """The colour every channel uses for a score's band."""
    return VERDICT_COLOURS[verdict_for(score)]


def fmt_clock(seconds: float | None) -> str:
    """m:ss.s, as shot times are shown everywhere."""
    m, sec = divmod(seconds or 0.0, 60)
    return f"{int(m)}:{sec:04.1f}"


def verdict_for(score: float | None) -> Verdict:
    if score is None:
        return Verdict.inconclusive
    if score < AUTHENTIC_BELOW:
        return Verdict.likely_authentic
    if score >= MANIPULATED_FROM:
        return Verdict.likely_manipulated
    return Verdict.uncertain


class Box(BaseModel):
    """A face box in pixels of the original frame: left, top, right, bottom."""

    x1: float
    y1: float
    x2: float
    y2: float


class FaceScore(BaseModel):
    frame_index: int
    time_s: float
    box: Box
    detection_prob: float
    score: float
    member_scores: dict[str, float] = Field(default_factory=dict)


class Cluster(BaseModel):
    id: int
    face_count: int
    score: float  # mean of its faces' scores
    representative: FaceScore  # the face nearest the cluster's mean score
    thumbnail_jpeg_b64: str | None = None


class PersonFace(FaceScore):
    """A person's most suspicious face in one shot (``score`` is this face's own)."""

    shot: int  # Shot.index
    cluster_score: float  # the person's score in that shot: their cluster's mean, as the shot shows it
    thumbnail_jpeg_b64: str | None = None


class ClusterRef(BaseModel):
    shot: int  # Shot.index
    cluster: int  # Cluster.id within that shot


PERSON_FACES = 4


class Person(BaseModel):
    """One identity over the whole medium: the clusters of different shots whose faces look
    alike (detector.people). Their score is the max over their clusters."""

    label: str  # "A", "B", ... in order of first appearance
    shots: list[int]  # Shot.index of every shot they appear in, in order
    clusters: list[ClusterRef]
    score: float
    # Their most suspicious faces: each cluster's most suspicious face, the most suspicious
    # cluster first, at most PERSON_FACES, with thumbnails: the gallery's row for this person.
    faces: list[PersonFace] = Field(default_factory=list)
    # Why (detector.explain): a heat map over faces[0], the regions that moved the ensemble's
    # score most, with one plain sentence; none where no member allows it or it was not asked.
    heatmap_jpeg_b64: str | None = None
    heatmap_note: str | None = None
    heatmap_members: list[str] = Field(default_factory=list)

    @property
    def representative(self) -> PersonFace | None:
        """Their representative crop: the most suspicious face of their most suspicious cluster."""
        return self.faces[0] if self.faces else None

    def where(self, kind: str = "video") -> str:
        """'Person B (shots 2, 5, 7)', 1-based as shots are shown; an image has no shots."""
        if kind != "video":
            return f"Person {self.label}"
        n = [str(k + 1) for k in self.shots]
        return f"Person {self.label} (shot{'s' if len(n) > 1 else ''} {', '.join(n)})"


class Shot(BaseModel):
    index: int
    start_frame: int
    end_frame: int  # exclusive
    start_s: float
    end_s: float
    sampled_frames: int
    faces_detected: int
    score: float | None  # max over kept clusters; None when no cluster was kept
    keyframe_index: int
    clusters: list[Cluster] = Field(default_factory=list)
    dropped_clusters: int = 0  # clusters under the minimum size


class Media(BaseModel):
    kind: Literal["image", "video"]
    width: int
    height: int
    fps: float | None = None
    frame_count: int | None = None
    duration_s: float | None = None


class Source(BaseModel):
    input: str  # what the user gave: a URL or a file name
    url: str | None = None
    via: Literal["file", "http", "yt-dlp"] = "file"
    title: str | None = None
    sha256: str
    size_bytes: int


class ModelInfo(BaseModel):
    name: str
    version: str
    architecture: str
    weights_sha256: str
    input_size: int
    licence: str
    training_data: str
    crop: str | None = None  # the face crop it scores, e.g. "square x0.85" of the detected box


class Warning_(BaseModel):
    code: str
    message: str


class Report(BaseModel):
    report_version: str = REPORT_VERSION
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    status: Literal["scored", "no_faces"]
    score: float | None
    verdict: Verdict
    verdict_label: str
    source: Source
    media: Media
    shots: list[Shot]
    faces: list[FaceScore] = Field(default_factory=list)  # images: every face kept
    people: list[Person] = Field(default_factory=list)  # identities across shots, by first appearance
    models: list[ModelInfo]
    combination: str | None = None  # how the members' scores make the score
    timings_s: dict[str, float] = Field(default_factory=dict)
    warnings: list[Warning_] = Field(default_factory=list)
    # The reliability gate (detector.gate): when not empty the verdict is inconclusive
    # and ``verdict_note`` says why; ``score`` is kept for experts, not shown as a finding.
    inconclusive_reasons: list[Warning_] = Field(default_factory=list)
    verdict_note: str | None = None
    # Plain words every renderer shows: what the bands mean; for a video of several shots,
    # what a shot is and which one is the most suspicious (None: one shot, or an image).
    bands_note: str = Field(default_factory=bands_note)
    shots_note: str | None = None
    device: str

    def to_json(self, **kw) -> str:
        return self.model_dump_json(**kw)

    @classmethod
    def from_json(cls, data: str | bytes) -> Report:
        return cls.model_validate_json(data)


class ReportVersionError(ValueError):
    """A report of another major version: its fields may mean something else."""


def read_report(data: dict | str | bytes) -> Report:
    """A stored or received report as every consumer reads it (the bots, the report page):
    its major version checked against this code's, then parsed into the Report model."""
    raw = json.loads(data) if isinstance(data, (str, bytes)) else data
    version = str(raw.get("report_version", "")) if isinstance(raw, dict) else ""
    if version.split(".")[0] != REPORT_VERSION.split(".")[0]:
        raise ReportVersionError(f"report_version {version or '(none)'} is not {REPORT_VERSION.split('.')[0]}.x, "
                                 f"the major version this code reads")
    return Report.model_validate(raw)
