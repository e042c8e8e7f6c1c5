"""Typed settings for the pipeline, read from ``DEEPFAKE_*`` environment variables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from . import gate, probe


def _comma_list(value):
    """A list setting as people type it: ``a,b`` (or ``a, b``), or JSON ``["a", "b"]``."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


# list[str] read from the environment as a comma-separated list or JSON
CommaList = Annotated[list[str], NoDecode, BeforeValidator(_comma_list)]
# the same, where an empty value means "not set" (None)
OptionalCommaList = Annotated[list[str] | None, NoDecode, BeforeValidator(lambda v: _comma_list(v) or None)]


def _default_cache() -> Path:
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "deepfake-check"


class DetectorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEEPFAKE_", extra="ignore")

    cache_dir: Path = Field(default_factory=_default_cache)
    weights_dir: Path | None = None  # default: <cache_dir>/weights

    # Fetch limits
    max_bytes: int = 200 * 1024 * 1024
    max_duration_s: float = 600.0
    max_height: int = 720  # platform downloads: best format at or under this height
    # Decoded size limits, checked from the header before anything is decoded (a 100 KB PNG
    # can claim 30000 x 30000 pixels): 120 MP an image (phone panoramas), 8K a video frame.
    max_image_pixels: int = probe.MAX_IMAGE_PIXELS
    max_video_pixels: int = probe.MAX_VIDEO_PIXELS
    fetch_timeout_s: float = 30.0
    # Hosts (names or IPs) exempt from the private-address guard; for tests only.
    allow_private_hosts: CommaList = Field(default_factory=list)

    # Video analysis
    min_shot_s: float = 1.5
    shot_threshold: float = 27.0  # PySceneDetect ContentDetector score for a cut
    # "one-pass": one decode finds the cuts and keeps the frames the sampler takes
    # (detector/scan.py); "two-pass": PySceneDetect's pass, then the sampler's (1.x).
    decode: Literal["one-pass", "two-pass"] = "one-pass"
    # One-pass only: decode in a thread of its own while faces are looked for in the frames the
    # sampler will take if no further cut comes. "auto": where faces are found on a GPU. On the
    # 2-core CPU it does not pay (the two compete for the cores; the 1080p DFDC clips took
    # 1.57 / 1.90 s overlapped, 1.40-1.75 / 1.72-1.84 s in turn), so there it is off.
    overlap_decode: Literal["auto", "on", "off"] = "auto"
    frames_per_shot_gpu: int = 64
    frames_per_shot_cpu: int = 16
    # Frames are downscaled to this max side to find faces (MTCNN stages 1-2); the last stage
    # judges each proposal on the full-resolution frame. bench/face_recall.py measured, 16
    # frames of each devset video and the crowd clip: 173 of the 175 faces the 1.x setting
    # (1280 px, all stages small) found, and 6 it missed, in 39% of its time (5.2 s against 13.4 s).
    detect_max_side: int = 640
    # A photo is one frame, and every face in it is scored (no shot-level cluster filter to drop
    # a stray hit): it is searched at the 1.x size, where background blur found no "face".
    detect_max_side_image: int = 1280
    detect_full_res_refine: bool = True
    detect_min_face_px: int = 20  # MTCNN's min_face_size, in the downscaled frame's pixels
    # Square box side = max(w, h) * margin: the thumbnails' crop, and the crop of members
    # whose manifest entry names none (each trained member names its own: CropSpec).
    face_margin: float = 1.3
    face_min_prob: float = 0.90  # dark or small faces score 0.87-0.96; clusters filter stray hits
    # Frames searched downscaled: a face O-Net is less sure of (from this probability up to
    # face_min_prob) is kept where a sure face of the previous or next sampled frame of its shot
    # lies in the same place (IoU >= 0.5, detector.tracks.confirmed). How sure O-Net is of a dark
    # face depends on the proposal it refines, and proposals found at 640 px differ from those of
    # a full-size search: a DFDC face the 1280 px search judged 0.932 came out at 0.734, between
    # sure faces (0.97, 0.99) in the same place. A frame searched at the size the 1.x pipeline
    # used is judged as it judged it. None (or face_min_prob): face_min_prob alone (the 1.x pipeline).
    face_confirm_prob: float | None = 0.70
    face_min_size: int = probe.MIN_SIDE  # px, in the original frame
    # dlib's 128-d descriptors, Euclidean distance. bench/calibrate_clustering.py measured
    # (500 LFW faces, 124,750 impostor pairs; 566 same-person pairs from 22 one-face clips):
    # 0.55 joins 0.064% of impostor pairs and 82.5% of same-person pairs directly
    # (0.60: 0.47% / 91.5%); connected components join the rest through nearby frames.
    cluster_max_distance: float = 0.55
    # "ambiguous": faces whose boxes overlap from frame to frame are one person (IoU tracks);
    # faces are embedded only to decide whether two tracks that never meet are one person.
    # "all": every face embedded and clustered (the 1.x pipeline).
    cluster_embeddings: Literal["ambiguous", "all"] = "ambiguous"
    min_cluster_fraction: float = 0.2
    # Linking clusters of different shots into people: Euclidean distance between cluster
    # centroids (mean descriptor of up to 3 faces). bench/calibrate_people.py chose it on one
    # half (the largest joining at most 0.1% of LFW impostor pairs and of pairs of people on
    # screen together in video) and measured on the other: 0 of 124,750 LFW pairs and 0 of 38
    # crowd-video pairs joined, 15 of 17 same-person pairs (a clip's first and last thirds;
    # three photos of one person). LFW alone had allowed 0.525, which joins 21% of those
    # crowd pairs: dark, small, turned faces lie much closer than portrait photos.
    people_max_distance: float = 0.375
    # Why: a Grad-CAM heat map of each person's most suspicious face (detector.explain), for
    # at most this many people (the gallery's rows); 0 turns it off.
    explain_people: int = 6

    # Reliability gate (detector/gate.py explains each threshold)
    gate_min_face_px: float = gate.MIN_FACE_PX
    gate_min_video_bpp: float = gate.MIN_VIDEO_BPP
    gate_min_jpeg_quality: float = gate.MIN_JPEG_QUALITY
    gate_min_face_frames: int = gate.MIN_FACE_FRAMES

    # Scoring
    batch_size: int = 32
    # Scoring precision: fp32, bf16, or auto (bf16 autocast where the CPU has AVX-512 BF16/AMX
    # or the GPU has bf16, else fp32). Measured here (2-core EPYC, AVX-512 BF16; 64 crops,
    # img/s fp32 -> bf16): meso4 217 -> 286, mesoinception4 90 -> 150, meve-lite0 52 -> 101,
    # lite0-detr-sine 60 -> 96, lite0-multihead 53 -> 85, mobilenetv2 67 -> 99; bench/speed.py
    # --precision-check gives how far it moves the scores.
    precision: str = "auto"
    members: OptionalCommaList = None  # restrict the ensemble to these manifest names (DEEPFAKE_MEMBERS=a,b)
    device: str | None = None  # "cpu", "cuda", "cuda:1"; default: cuda when present

    def resolved_weights_dir(self) -> Path:
        return self.weights_dir or (self.cache_dir / "weights")

    def overlap(self, device: str) -> bool:
        return self.overlap_decode == "on" or (self.overlap_decode == "auto" and device != "cpu")

    def frames_per_shot(self, device: str) -> int:
        return self.frames_per_shot_cpu if device == "cpu" else self.frames_per_shot_gpu
