"""The Report, assembled from what the stages found in one medium: its shots (clusters with
their score, representative face and thumbnail; the keyframe), the warnings, the models,
the reliability gate's verdict. The MeVer aggregation (cluster mean, shot = max of its
clusters, medium = max of its shots) is :mod:`detector.aggregate`'s; this module only
applies it and writes the result down.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import numpy as np

from . import gate
from . import report as R
from .aggregate import cluster_score, max_or_none
from .fetch import Fetched
from .people import person_label
from .probe import MediaInfo
from .settings import DetectorSettings
from .shots import ShotSpan

THUMB_SIDE = 112


@dataclass
class Findings:
    """What the stages found: the shots, every detected face (``detector.pipeline._Face``:
    shot, frame index, box, detection probability, crop, score and member scores once
    scored), each shot's kept clusters (face indices) and how many it dropped, each shot's
    sampled frame count, and small copies of the frames (keyframe candidates; ``-1 - shot``
    for a shot without a face)."""

    spans: list[ShotSpan]
    faces: list
    clusters: dict[int, list[list[int]]]
    dropped: list[int]
    sampled: list[int]
    thumbs: dict[int, np.ndarray]
    people: list[list[tuple[int, int]]] = field(default_factory=list)  # (shot, cluster id) per person
    # person index -> the heat map of their most suspicious face (detector.explain.HeatMap, its overlay)
    heatmaps: dict[int, tuple] = field(default_factory=dict)

    def person_faces(self, k: int) -> list[tuple[int, float, int]]:
        """Person ``k``'s most suspicious face in each of their clusters, as (shot, cluster
        score, face index), the most suspicious first: [0] is the face the heat map explains."""
        out = []
        for s, c in self.people[k]:
            members = self.clusters[s][c]
            i = max(members, key=lambda i: self.faces[i].score)
            out.append((s, cluster_score(self.faces[j].score for j in members), i))
        out.sort(key=lambda t: (-t[1], -self.faces[t[2]].score))
        return out

    def kept(self) -> list:
        return [self.faces[i] for cl in self.clusters.values() for c in cl for i in c]


def jpeg_b64(rgb: np.ndarray, quality: int = 85) -> str:
    """An RGB image as base64 JPEG, as the Report carries pictures."""
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return base64.b64encode(buf.tobytes()).decode("ascii")


def thumb_b64(crop: np.ndarray) -> str:
    import cv2

    return jpeg_b64(cv2.resize(crop, (THUMB_SIDE, THUMB_SIDE), interpolation=cv2.INTER_AREA))


def face_model(f, info: MediaInfo) -> R.FaceScore:
    x1, y1, x2, y2 = f.box
    return R.FaceScore(frame_index=f.frame_index,
                       time_s=round(f.frame_index / (info.fps or 1.0), 3) if info.kind == "video" else 0.0,
                       box=R.Box(x1=round(x1, 1), y1=round(y1, 1), x2=round(x2, 1), y2=round(y2, 1)),
                       detection_prob=round(f.prob, 4), score=round(f.score, 4), member_scores=f.member_scores)


def shot_models(info: MediaInfo, found: Findings) -> tuple[list[R.Shot], dict[int, np.ndarray]]:
    """Each shot's Report entry, and its keyframe image (by shot index) for the gallery:
    the frame of its most suspicious cluster's representative face, else its first face's,
    else its first sampled frame."""
    fps, faces = info.fps or 1.0, found.faces
    shots: list[R.Shot] = []
    keyframes: dict[int, np.ndarray] = {}
    for k, span in enumerate(found.spans):
        cl_models = []
        for cid, members in enumerate(found.clusters[k]):
            score = cluster_score(faces[i].score for i in members)
            rep = min(members, key=lambda i: abs(faces[i].score - score))
            cl_models.append(R.Cluster(id=cid, face_count=len(members), score=round(score, 4),
                                       representative=face_model(faces[rep], info),
                                       thumbnail_jpeg_b64=thumb_b64(faces[rep].crop)))
        if cl_models:
            key = max(cl_models, key=lambda c: c.score).representative.frame_index
        else:
            key = next((f.frame_index for f in faces if f.shot == k), -1 - k)
        if (img := found.thumbs.get(key)) is not None:
            keyframes[k] = img
        video = info.kind == "video"
        shots.append(R.Shot(
            index=k, start_frame=span.start_frame, end_frame=span.end_frame,
            start_s=round(span.start_frame / fps, 3) if video else 0.0,
            end_s=round(span.end_frame / fps, 3) if video else 0.0,
            sampled_frames=found.sampled[k], faces_detected=sum(1 for f in faces if f.shot == k),
            score=max_or_none(c.score for c in cl_models), keyframe_index=max(key, 0), clusters=cl_models,
            dropped_clusters=found.dropped[k]))
    return shots, keyframes


def people_models(info: MediaInfo, found: Findings, shots: list[R.Shot]) -> list[R.Person]:
    """Each person's Report entry: the shots they appear in, their score (max over their
    clusters), their most suspicious faces (each cluster's most suspicious, with a thumbnail)."""
    faces = found.faces
    out = []
    for k, refs in enumerate(found.people):
        tops = [R.PersonFace(**face_model(faces[i], info).model_dump(), shot=s, cluster_score=round(score, 4),
                             thumbnail_jpeg_b64=thumb_b64(faces[i].crop))
                for s, score, i in found.person_faces(k)[:R.PERSON_FACES]]
        why = {}
        if k in found.heatmaps:
            hm, jpeg = found.heatmaps[k]
            why = dict(heatmap_jpeg_b64=jpeg, heatmap_note=hm.sentence, heatmap_members=hm.members)
        out.append(R.Person(label=person_label(k), shots=sorted({s for s, _ in refs}),
                            clusters=[R.ClusterRef(shot=s, cluster=c) for s, c in refs],
                            score=max(shots[s].clusters[c].score for s, c in refs), faces=tops, **why))
    return out


def warnings_for(info: MediaInfo, found: Findings, shots: list[R.Shot], skipped: list) -> list[R.Warning_]:
    """No face scored (and why), shots without a scored face, members left out for want of weights."""
    out: list[R.Warning_] = []
    if all(sh.score is None for sh in shots):
        msg = ("No face was found in this image." if info.kind == "image" else
               "No face was found in the sampled frames of this video.")
        if found.faces:
            msg = "Faces were detected, but none appeared often enough in a shot to be scored."
        out.append(R.Warning_(code="no_faces", message=msg + " The detector only judges faces, "
                              "so it gives no score: this says nothing about whether the medium is authentic."))
    else:
        unscored = [sh.index + 1 for sh in shots if sh.score is None]
        if unscored and info.kind == "video":
            out.append(R.Warning_(code="shots_without_faces",
                                  message=f"No face was scored in shot(s) {', '.join(map(str, unscored))}."))
    if skipped:
        out.append(R.Warning_(code="members_not_scored", message=(
            f"{len(skipped)} ensemble member(s) have no verified trained weights and were not used: "
            + ", ".join(sk.name for sk in skipped) + ".")))
    return out


def gate_reasons(fetched: Fetched, info: MediaInfo, found: Findings, scored: bool, s: DetectorSettings) -> list:
    """Why the score cannot be read as a finding (too small faces, too compressed, too few frames)."""
    kept = found.kept()
    return gate.reasons(
        kind=info.kind, path=fetched.path, size_bytes=fetched.size_bytes, width=info.width,
        height=info.height, fps=info.fps, duration_s=info.duration_s, scored=scored,
        face_sides=[min(f.box[2] - f.box[0], f.box[3] - f.box[1]) for f in kept],
        face_frames=len({(f.shot, f.frame_index) for f in kept}),
        limits=gate.Thresholds(s.gate_min_face_px, s.gate_min_video_bpp, s.gate_min_jpeg_quality,
                               s.gate_min_face_frames))


def shots_note(kind: str, shots: list[R.Shot], gated: bool) -> str | None:
    """What a shot is and which one is the most suspicious, for a video of several shots (no
    number where the reliability gate holds it back)."""
    if kind != "video" or len(shots) < 2:
        return None
    text = f"The video has {len(shots)} shots (a shot runs from one camera cut to the next)"
    scored = [sh for sh in shots if sh.score is not None]
    if not scored:
        return text + "; no face was found in any of them."
    if gated:
        return text + f"; faces were found in {len(scored)} of them."
    top = max(scored, key=lambda sh: sh.score)
    return (text + f"; the most suspicious is shot {top.index + 1} ({R.fmt_clock(top.start_s)}–"
            f"{R.fmt_clock(top.end_s)}), at {top.score * 100:.0f}%.")


def source_of(fetched: Fetched) -> R.Source:
    """What the asker sent, as the Report names it."""
    return R.Source(input=fetched.input, url=fetched.url, via=fetched.via, title=fetched.title,
                    sha256=fetched.sha256, size_bytes=fetched.size_bytes)


def build_report(fetched: Fetched, info: MediaInfo, found: Findings, ensemble, settings: DetectorSettings,
                 device: str, timings: dict[str, float]) -> tuple[R.Report, dict[int, np.ndarray]]:
    """The Report of one medium, and each shot's keyframe image for the gallery."""
    shots, keyframes = shot_models(info, found)
    overall = max_or_none(sh.score for sh in shots)
    reasons = gate_reasons(fetched, info, found, overall is not None, settings)
    verdict = R.verdict_for(overall) if not reasons else R.Verdict.inconclusive
    models = [R.ModelInfo(name=m.member.name, version=m.member.version, architecture=m.member.architecture,
                          weights_sha256=m.weights_sha256, input_size=m.input_size, licence=m.member.licence,
                          training_data=m.member.training_data, crop=m.crop.label())
              for m in ensemble.members]
    image_faces = [face_model(found.faces[i], info) for cl in found.clusters.get(0, []) for i in cl] \
        if info.kind == "image" else []
    return R.Report(
        status="scored" if overall is not None else "no_faces",
        score=None if overall is None else round(overall, 4),
        verdict=verdict, verdict_label=verdict.label,
        source=source_of(fetched),
        media=R.Media(kind=info.kind, width=info.width, height=info.height, fps=info.fps,
                      frame_count=info.frame_count, duration_s=round(info.duration_s, 3) if info.duration_s else None),
        shots=shots, faces=image_faces, people=people_models(info, found, shots), models=models, combination=ensemble.combination,
        timings_s=dict(timings), warnings=warnings_for(info, found, shots, ensemble.skipped), device=device,
        inconclusive_reasons=[R.Warning_(code=r.code, message=r.message) for r in reasons],
        verdict_note=gate.sentence(reasons) or None,
        shots_note=shots_note(info.kind, shots, gated=bool(reasons))), keyframes
