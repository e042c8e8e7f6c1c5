"""The whole analysis: fetch -> probe -> shots -> faces -> clusters -> ensemble ->
aggregate -> Report (+ gallery PNG).

:class:`Analyzer` holds the models; build one per process and call ``load()`` once
(a worker does this after fork). ``analyze`` takes a fetched file and returns an
:class:`Analysis`; expected outcomes such as "no face" are a Report with
``status="no_faces"`` and no score, never an exception and never a made-up number.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import report as R
from .aggregate import cluster_score, max_or_none
from .assemble import Findings, build_report, jpeg_b64
from .cluster import clusters_from_labels, connected_components
from .embed import face_context
from .ensemble import Ensemble
from .errors import DeviceUnavailable
from .faces import CropSpec, FaceDetector, crop_square
from .fetch import Fetched, cleanup, fetch
from .lazy import LazyModel
from .manifest import Manifest, load_manifest
from .people import link_people, spread
from .precision import resolve_precision
from .probe import Limits, MediaInfo, probe
from .scan import Prefetch, VideoScan
from .settings import DetectorSettings
from .shots import ShotSpan, split_shots
from .tracks import confirmed, group_tracks, link_tracks
from .vocabulary import Event, Stage, State
from .weights import WeightStore

log = logging.getLogger(__name__)

KEYFRAME_MAX_SIDE = 640
FRAME_BATCH = 16


ProgressFn = Callable[[Event], None]  # the pipeline's events, in the job vocabulary


def _noop(_: Event) -> None:
    pass


@dataclass(frozen=True)
class ScoredFace:
    shot: int
    cluster: int
    logits: dict[str, float]  # member -> calibrated logit
    frame_index: int = 0
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)


@dataclass
class Analysis:
    report: R.Report
    gallery_png: bytes | None
    # Each member's score under the same aggregation as the ensemble's (for evaluation).
    member_scores: dict[str, float | None] = field(default_factory=dict)
    # Every scored face as (ensemble score, {member: score}), for face-level metrics.
    face_scores: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    # Every scored face's place and calibrated member logits, for fitting the ensemble rule.
    scored_faces: list[ScoredFace] = field(default_factory=list)
    # Frames the one-pass decoder decoded, left out (non-reference frames nobody looks at), and
    # decoded again to fill a gap where a cut could lie; None for images and the two-pass path.
    frames_decoded: int | None = None
    # Faces the embedder was run on (every face in the 1.x clustering; only ambiguous ones now),
    # and of them, those embedded only to link people across shots (up to 3 a cluster).
    faces_embedded: int = 0
    embedded_for_people: int = 0
    frames_left_out: int | None = None
    frames_redecoded: int | None = None


@dataclass
class _Face:
    shot: int
    frame_index: int
    box: tuple[float, float, float, float]
    prob: float
    position: int  # among its shot's sampled frames
    embedding: np.ndarray | None  # computed at detection ("all"), else only if clustering needs it
    context: tuple | None  # (crop, box in it) to embed it later without its frame
    crop: np.ndarray  # at the pipeline's margin, for thumbnails
    member_crops: dict  # CropSpec -> the crop the members with that spec score
    score: float | None = None
    member_scores: dict[str, float] = field(default_factory=dict)
    member_logits: dict[str, float] = field(default_factory=dict)  # calibrated, unrounded


def resolve_device(requested: str | None) -> str:
    import torch

    if requested:
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise DeviceUnavailable(f"{requested!r} was asked for, but no CUDA device is available.")
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


class _Timer:
    def __init__(self):
        self.t: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.t[stage] = round(self.t.get(stage, 0.0) + time.perf_counter() - t0, 4)


def _small(img: np.ndarray, side: int) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    s = min(1.0, side / max(h, w))
    if s >= 1.0:
        return img.copy()
    return cv2.resize(img, (int(round(w * s)), int(round(h * s))), interpolation=cv2.INTER_AREA)


class Analyzer(LazyModel):
    def __init__(self, settings: DetectorSettings | None = None, device: str | None = None,
                 manifest: Manifest | None = None):
        from .embed import FaceEmbedder

        self.settings = settings or DetectorSettings()
        self.device = resolve_device(device or self.settings.device)
        s = self.settings
        self.detector = FaceDetector(self.device, s.face_min_prob, s.face_min_size, s.detect_max_side,
                                     full_res_refine=s.detect_full_res_refine,
                                     min_face_px=s.detect_min_face_px, small_min_prob=s.face_confirm_prob)
        self.embedder = FaceEmbedder()
        self.ensemble = Ensemble(manifest or load_manifest(), WeightStore(s.resolved_weights_dir()),
                                 self.device, s.members, s.batch_size, CropSpec(margin=s.face_margin),
                                 resolve_precision(self.device, s.precision), all_bf16=s.precision == "bf16")

    def _load(self) -> None:
        """Every model, once; raises NoTrainedWeights before any work is done."""
        self.ensemble.load()
        self.detector.load()
        self.embedder.load()

    # -- the analysis -------------------------------------------------------------------

    def analyze(self, fetched: Fetched, progress: ProgressFn | None = None,
                gallery: bool = True, timings: dict[str, float] | None = None) -> Analysis:
        progress = progress or _noop
        timer = _Timer()
        timer.t.update(timings or {})
        s = self.settings
        with timer("load_models"):
            self.load()
        progress(Event(Stage.PROBING, "Reading the file"))
        with timer("probe"):
            info = probe(fetched.path, s.max_duration_s,
                         Limits(s.face_min_size, s.max_image_pixels, s.max_video_pixels))
        faces, sampled, thumbs, spans, decoded = self._detect(fetched.path, info, progress, timer)

        if faces:  # progress names only the stages that run
            progress(Event(Stage.CLUSTERING, "Grouping faces by person",
                           counts={"shots": len(spans), "faces": len(faces)}))
        embedding_s = timer.t.setdefault("embeddings", 0.0)
        with timer("clusters"):
            clusters, dropped, embedded = self._cluster(faces, spans, sampled, timer)
        # the embeddings it needed are their own stage
        timer.t["clusters"] = round(timer.t["clusters"] - (timer.t.get("embeddings", 0.0) - embedding_s), 4)
        people, for_people = self._people(faces, clusters, timer)
        embedded += for_people
        kept = [i for cl in clusters.values() for c in cl for i in c]
        if kept:
            progress(Event(Stage.SCORING, f"Scoring {len(kept)} face(s)", done=0, total=len(kept),
                           counts={"faces": len(kept)}))
        with timer("scoring"):
            if kept:
                scored = self.ensemble.score([faces[i].member_crops for i in kept])
                per = scored.probabilities()
                for k, i in enumerate(kept):
                    faces[i].score = float(scored.combined[k])
                    faces[i].member_scores = {n: round(float(v[k]), 4) for n, v in per.items()}
                    faces[i].member_logits = {n: float(v[k]) for n, v in scored.logits.items()}
        if kept:
            progress(Event(Stage.SCORING, "Scored", done=len(kept), total=len(kept)))

        found = Findings(spans, faces, clusters, dropped, sampled, thumbs, people)
        if kept and s.explain_people:
            with timer("explain"):
                found.heatmaps = self._explain(found)
        report, keyframes = build_report(fetched, info, found, self.ensemble, self.settings, self.device, timer.t)
        png = None
        if gallery:
            progress(Event(Stage.RENDERING, "Drawing the gallery"))
            from .gallery import render_gallery

            with timer("gallery"):
                png = render_gallery(report, keyframes)
            report.timings_s = dict(timer.t)
        progress(Event(Stage.DONE, report.verdict_label, state=State.DONE, score=report.score,
                       verdict=R.Verdict(report.verdict).value, counts={"shots": len(report.shots), "faces": len(kept)}))
        members = {}
        for m in self.ensemble.members:
            name = m.member.name
            members[name] = max_or_none(
                max_or_none(cluster_score(faces[i].member_scores[name] for i in c) for c in clusters[k])
                for k in clusters)
        scored = [(faces[i].score, faces[i].member_scores) for i in kept]
        places = [ScoredFace(k, c, faces[i].member_logits, faces[i].frame_index, faces[i].box) for k in clusters
                  for c, cl in enumerate(clusters[k]) for i in cl]
        return Analysis(report, png, members, scored, places, faces_embedded=embedded, embedded_for_people=for_people,
                        frames_decoded=decoded[0], frames_left_out=decoded[1], frames_redecoded=decoded[2])

    def _frames(self, path: Path, info: MediaInfo, progress: ProgressFn, timer: _Timer):
        """The frames to look at, as events: ``("early", index, RGB)`` for a frame the sampler
        will probably take (one-pass: looked at while the rest decodes) and ``("frame", shot,
        index, RGB or None)`` for each frame it takes, in order (None: sent early). With it,
        functions giving the shots and the frames (decoded, left out, decoded again) (complete
        once the events are exhausted; None where the two-pass path does not count)."""
        from .frames import iter_unique

        s = self.settings
        budget = s.frames_per_shot(self.device)
        if info.kind == "image":
            from PIL import Image

            with timer("decode"):
                rgb = np.asarray(Image.open(path).convert("RGB"))
            return iter([("frame", 0, 0, rgb)]), lambda: [ShotSpan(0, 1)], lambda: (None, None, None)
        if s.decode == "one-pass":
            progress(Event(Stage.SEGMENTING, "Reading the video: shots and faces in one pass"))
            overlap = s.overlap(self.device)
            scan = VideoScan(path, info.fps, budget, s.min_shot_s, s.shot_threshold, info.frame_count)
            events = Prefetch(scan.events(early=True)) if overlap else scan.events(early=False)
            return events, lambda: scan.spans, lambda: (scan.frames_decoded, scan.frames_left_out, scan.frames_redecoded)
        progress(Event(Stage.SEGMENTING, "Splitting the video into shots"))
        with timer("shots"):
            spans = split_shots(path, info.fps, info.frame_count, s.min_shot_s, s.shot_threshold).shots
        progress(Event(Stage.SEGMENTING, f"{len(spans)} shot(s)", counts={"shots": len(spans)}))
        return (("frame", *f) for f in iter_unique(path, spans, budget)), lambda: spans, lambda: (None, None, None)

    def _detect(self, path: Path, info: MediaInfo, progress: ProgressFn, timer: _Timer):
        """Decode the sampled frames, detect and crop their faces, batch by batch."""
        budget = self.settings.frames_per_shot(self.device)
        events, shots, decoded = self._frames(path, info, progress, timer)
        looked: dict[int, tuple] = {}  # frame index -> (keyframe-size copy, [(Detection, embedding, context, thumb, crops)])

        def expected() -> int:  # frames to look at: the settled shots', and a guess for the rest
            known = shots()
            end = known[-1].end_frame if known else 0
            return sum(min(budget, sp.end_frame - sp.start_frame) for sp in known) + \
                (min(budget, info.frame_count - end) if info.kind == "video" and info.frame_count > end else 0)

        progress(Event(Stage.DETECTING_FACES, "Looking for faces", done=0, total=expected()))

        def look(batch: list[tuple[int, np.ndarray]]) -> None:
            if not batch:
                return
            looked.update(self._look_at(batch, info.kind, timer))
            n = len(looked)
            sure = sum(f[0].prob >= self.settings.face_min_prob for v in looked.values() for f in v[1])
            progress(Event(Stage.DETECTING_FACES, f"{sure} face(s) so far",
                       done=n, total=max(n, expected()), counts={"shots": len(shots())}))

        taken: list[tuple[int, int]] = []  # (shot, frame index) the sampler took, in order
        early, late = [], []
        it = iter(events)
        while True:
            with timer("decode"):  # with the decode overlapped: the time spent waiting for it
                ev = next(it, None)
            if ev is None:
                break
            if ev[0] == "early":
                early.append(ev[1:])
                if len(early) == FRAME_BATCH or events.backlog == 0:
                    look(early)
                    early = []
                continue
            _, shot, idx, rgb = ev
            taken.append((shot, idx))
            if rgb is not None:
                late.append((idx, rgb))
                if len(late) == FRAME_BATCH:
                    look(late)
                    late = []
        look(early)
        look(late)
        spans = shots()
        return (*_gather(taken, looked, len(spans), self.settings.face_min_prob), spans, decoded())

    def _look_at(self, batch: list[tuple[int, np.ndarray]], kind: str, timer: _Timer) -> dict[int, tuple]:
        """Faces in each (index, RGB) frame: a keyframe-size copy of the frame and, per face,
        (Detection, embedding (1.x only), context to embed it later, thumbnail, member crops)."""
        s = self.settings
        specs = self.ensemble.crop_specs()  # each member's crop, cut once per spec
        thumb_side = max(specs.values())
        every = s.cluster_embeddings == "all"
        with timer("faces"):
            dets = self.detector.detect([rgb for _, rgb in batch], s.detect_max_side_image if kind == "image" else None)
        if every:  # the 1.x clustering: every face's embedding, now
            with timer("embeddings"):
                embs = [self.embedder.embed(rgb, [d.box for d in fd]) for (_, rgb), fd in zip(batch, dets)]
        else:
            embs = [[None] * len(fd) for fd in dets]
        with timer("crops"):
            return {idx: (_small(rgb, KEYFRAME_MAX_SIDE), [
                (d, e, None if every else face_context(rgb, d.box),
                 _small(crop_square(rgb, d.box, s.face_margin), thumb_side),
                 {spec: _small(spec.cut(rgb, d.box), side) for spec, side in specs.items()})
                for d, e in zip(fd, fe)]) for (idx, rgb), fd, fe in zip(batch, dets, embs)}

    def _cluster(self, faces: list[_Face], spans: list[ShotSpan], sampled: list[int], timer: _Timer):
        """Each shot's kept clusters (face indices), how many it dropped, and how many faces
        were embedded. ``all``: every face's embedding in one graph (1.x); ``ambiguous``: IoU
        tracks, embeddings only between tracks that could be one person (:mod:`detector.tracks`)."""
        s = self.settings
        clusters: dict[int, list[list[int]]] = {}
        dropped: dict[int, int] = {}
        embedded = 0
        for shot in range(len(spans)):
            idx = [i for i, f in enumerate(faces) if f.shot == shot]
            if not idx:
                clusters[shot], dropped[shot] = [], 0
                continue
            if s.cluster_embeddings == "all":  # each was embedded when it was found
                embedded += len(idx)
                labels = connected_components(np.stack([faces[i].embedding for i in idx]),
                                              s.cluster_max_distance)
            else:
                def embed(local: list[int], idx: list[int] = idx) -> np.ndarray:  # called in this iteration
                    return self._embed([faces[idx[j]] for j in local], timer)

                pos = [faces[i].position for i in idx]
                track = link_tracks(pos, [faces[i].box for i in idx])
                labels, n = group_tracks(pos, track, embed, s.cluster_max_distance)
                embedded += n
            groups, dropped[shot] = clusters_from_labels(labels, sampled[shot], s.min_cluster_fraction)
            clusters[shot] = [[idx[j] for j in g] for g in groups]
        return clusters, dropped, embedded

    def _explain(self, found: Findings) -> dict[int, tuple]:
        """The heat maps (detector.explain) of the most suspicious people's most suspicious
        faces (at most ``explain_people``, as many as the gallery shows), with each overlay on
        the thumbnail crop as a JPEG."""
        from .explain import grad_cam, overlay

        out = {}
        tops = {k: found.person_faces(k)[0] for k in range(len(found.people))}  # (shot, score, face)
        for k in sorted(tops, key=lambda k: -tops[k][1])[:self.settings.explain_people]:  # most suspicious first
            f = found.faces[tops[k][2]]
            try:
                hm = grad_cam(self.ensemble, f.member_crops, f.box, CropSpec(margin=self.settings.face_margin))
            except RuntimeError:  # autograd refused a member's graph: the picture is left out, the score stands
                log.exception("no heat map for person %d", k)
                continue
            if hm is not None:
                out[k] = (hm, jpeg_b64(overlay(f.crop, hm.heat), quality=88))
        return out

    def _embed(self, some: list[_Face], timer: _Timer) -> np.ndarray:
        """Descriptors of faces found without one (from their kept context), kept on each face
        so that linking people across shots reuses them."""
        with timer("embeddings"):
            embs = self.embedder.embed_crops([f.context[0] for f in some], [f.context[1] for f in some])
        for f, e in zip(some, embs):
            f.embedding = e
        return embs

    def _people(self, faces: list[_Face], clusters: dict[int, list[list[int]]],
                timer: _Timer) -> tuple[list[list[tuple[int, int]]], int]:
        """The people of the medium: lists of (shot, cluster id), and how many more faces had
        to be embedded to tell them apart. Within one shot each cluster is its own person; only
        when clusters are in two or more shots are their centroids compared
        (:mod:`detector.people`). People are lettered by first appearance, left to right."""
        def left(key: tuple[int, int]) -> float:  # a cluster's mean box centre, to letter people left to right
            return float(np.mean([(faces[i].box[0] + faces[i].box[2]) / 2 for i in clusters[key[0]][key[1]]]))

        keys = sorted(((k, c) for k in clusters for c in range(len(clusters[k]))), key=lambda kc: (kc[0], left(kc)))
        if len({k for k, _ in keys}) < 2:
            return [[key] for key in keys], 0
        picked = {key: [faces[i] for i in spread(clusters[key[0]][key[1]])] for key in keys}
        missing = list({id(f): f for fs in picked.values() for f in fs if f.embedding is None}.values())
        if missing:
            self._embed(missing, timer)
        with timer("people"):
            centroids = np.stack([np.mean([f.embedding for f in picked[key]], axis=0) for key in keys])
            groups = link_people([k for k, _ in keys], centroids, self.settings.people_max_distance)
        return [[keys[i] for i in g] for g in groups], len(missing)


def _gather(taken: list[tuple[int, int]], looked: dict[int, tuple], n_shots: int, min_prob: float):
    """The faces in the order the sampler took their frames, each shot's sampled-frame count,
    and the keyframe candidates (frames with faces; a shot without any: its first frame).
    A less sure face (found on a frame searched downscaled) stays only where a sure face of a
    neighbouring sampled frame confirms it (:func:`detector.tracks.confirmed`); a photo's
    never do (it has no neighbours)."""
    faces: list[_Face] = []
    sampled = [0] * n_shots
    for shot, idx in taken:
        sampled[shot] += 1
        for d, e, ctx, shown, cut in looked[idx][1]:
            faces.append(_Face(shot, idx, d.box, d.prob, sampled[shot] - 1, e, ctx, shown, cut))
    keep = [True] * len(faces)
    for shot in range(n_shots):
        mine = [i for i, f in enumerate(faces) if f.shot == shot]
        ok = confirmed([faces[i].position for i in mine], [faces[i].box for i in mine],
                       [faces[i].prob for i in mine], min_prob)
        for i, sure in zip(mine, ok):
            keep[i] = sure
    faces = [f for f, k in zip(faces, keep) if k]
    with_faces = {f.frame_index for f in faces}
    thumbs: dict[int, np.ndarray] = {}  # frame index -> small copy; -1 - shot for a faceless shot
    for shot, idx in taken:
        if idx in with_faces:
            thumbs[idx] = looked[idx][0]
        elif -1 - shot not in thumbs:
            thumbs[-1 - shot] = looked[idx][0]
    return faces, sampled, thumbs


def run(source: str, analyzer: Analyzer, progress: ProgressFn | None = None,
        workdir: Path | None = None, gallery: bool = True) -> Analysis:
    """Fetch ``source`` (URL or path), analyse it, delete what was downloaded."""
    progress = progress or _noop
    analyzer.load()  # no trained weights: refuse before downloading anything
    with tempfile.TemporaryDirectory(dir=workdir, prefix="deepfake-") as tmp:
        progress(Event(Stage.DOWNLOADING, "Downloading" if "://" in source[:16] else "Opening the file"))
        t0 = time.perf_counter()
        fetched = fetch(source, Path(tmp) / "media", analyzer.settings)
        fetch_s = round(time.perf_counter() - t0, 4)
        try:
            return analyzer.analyze(fetched, progress, gallery=gallery, timings={"fetch": fetch_s})
        finally:
            cleanup(fetched)
