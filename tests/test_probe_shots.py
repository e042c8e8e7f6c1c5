import numpy as np
import pytest

from detector.demo import demo_video, make_multishot_video, shipped_photo
from detector.errors import CorruptMedia, TooLong
from detector.frames import iter_unique, read_frames, sample_indices
from detector.probe import probe
from detector.shots import ShotSpan, merge_short, split_shots

from .conftest import shared


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_video(tmp_path_factory.mktemp("demo"))


def test_probe_image_and_video(demo):
    img = probe(shared("media", "unlabeled", "obama.jpg"))
    assert img.kind == "image" and img.width > 100 and img.duration_s is None
    vid = probe(demo)
    assert (vid.kind, vid.width, vid.height, vid.frame_count) == ("video", 480, 360, 150)
    assert vid.fps == pytest.approx(25.0) and vid.duration_s == pytest.approx(6.0)


def test_probe_rejects_corrupt_files(tmp_path, demo):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(CorruptMedia):
        probe(junk)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(CorruptMedia):
        probe(empty)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(demo.read_bytes()[:2000])
    with pytest.raises(CorruptMedia):
        probe(truncated)
    broken_jpeg = tmp_path / "broken.jpg"
    broken_jpeg.write_bytes(shared("media", "unlabeled", "obama.jpg").read_bytes()[:3000])
    with pytest.raises(CorruptMedia):
        probe(broken_jpeg)


def test_probe_duration_limit(demo):
    with pytest.raises(TooLong):
        probe(demo, max_duration_s=5.0)
    assert probe(demo, max_duration_s=7.0).kind == "video"


def test_merge_short_removes_the_weaker_cut():
    # Shots: [0,20) [20,82) [82,211) [211,275); min 45 frames: the first is too short.
    shots = merge_short([20, 82, 211], [40.0, 60.0, 50.0], 275, 45)
    assert shots == [ShotSpan(0, 82), ShotSpan(82, 211), ShotSpan(211, 275)]
    # A short shot between two cuts: the weaker of its two cuts goes.
    assert merge_short([50, 60], [30.0, 90.0], 200, 20) == [ShotSpan(0, 60), ShotSpan(60, 200)]
    assert merge_short([50, 60], [90.0, 30.0], 200, 20) == [ShotSpan(0, 50), ShotSpan(50, 200)]
    assert merge_short([5], [99.0], 8, 20) == [ShotSpan(0, 8)]  # too short in all: one shot
    assert merge_short([], [], 100, 45) == [ShotSpan(0, 100)]


def test_hamilton_clip_cuts():
    path = shared("media", "unlabeled", "short_hamilton_clip.mp4")
    info = probe(path)
    split = split_shots(path, info.fps, info.frame_count, min_shot_s=1.5)
    for expected in (20, 82, 211):
        assert any(abs(c - expected) <= 3 for c in split.cuts), (expected, split.cuts)
    min_len = 1.5 * info.fps
    assert all(s.end_frame - s.start_frame >= min_len for s in split.shots)
    assert split.shots[0].start_frame == 0 and split.shots[-1].end_frame == info.frame_count
    starts = [s.start_frame for s in split.shots[1:]]
    assert any(abs(c - 82) <= 3 for c in starts) and any(abs(c - 211) <= 3 for c in starts)
    assert not any(abs(c - 20) <= 3 for c in starts)  # 0.67 s: merged, below the minimum


def test_single_shot_clip_has_no_cut():
    path = shared("media", "unlabeled", "crowd_single_shot.mp4")
    info = probe(path)
    assert len(split_shots(path, info.fps, info.frame_count).shots) == 1


def test_synthetic_multishot_video_from_photos(tmp_path):
    photos = [np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(shared("media", "unlabeled", n))
                         .convert("RGB")) for n in ("obama.jpg", "biden.jpg", "kate_siegel.jpg")]
    path = make_multishot_video(photos, tmp_path / "three.mp4", seconds_per_shot=2.0, fps=25)
    info = probe(path)
    split = split_shots(path, info.fps, info.frame_count)
    assert [s.start_frame for s in split.shots] == [0, 50, 100]


def test_sampling_budget_and_sequential_decode(demo):
    shot = ShotSpan(0, 150)
    idx = sample_indices(shot, 16)
    assert len(idx) == 16 and len(set(idx)) == 16 and all(0 <= i < 150 for i in idx)
    assert sample_indices(ShotSpan(10, 15), 64) == [10, 11, 12, 13, 14]
    got = dict(read_frames(demo, [3, 77, 149]))
    assert sorted(got) == [3, 77, 149]
    import cv2

    cap = cv2.VideoCapture(str(demo))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 77)
    ok, bgr = cap.read()
    cap.release()
    assert ok and np.abs(got[77].astype(int) - cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(int)).mean() < 1.0


def test_unique_frames_skip_duplicates(tmp_path):
    still = make_multishot_video([shipped_photo()], tmp_path / "s.mp4", seconds_per_shot=1.0, fps=10)
    # Re-encode as a frozen clip: the same frame 20 times.
    import cv2

    cap = cv2.VideoCapture(str(still))
    ok, frame = cap.read()
    cap.release()
    frozen = tmp_path / "frozen.mp4"
    w = cv2.VideoWriter(str(frozen), cv2.VideoWriter_fourcc(*"mp4v"), 10, (frame.shape[1], frame.shape[0]))
    for _ in range(20):
        w.write(frame)
    w.release()
    frames = list(iter_unique(frozen, [ShotSpan(0, 20)], budget=8))
    assert len(frames) == 1


def test_static_but_live_dark_frames_are_not_duplicates(tmp_path):
    import cv2

    dark = (shipped_photo()[:360, :480].astype(np.float32) * 0.15).astype(np.uint8)
    path = tmp_path / "dark.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (480, 360))
    for i in range(40):
        f = dark.copy()
        f[100:140, 200 + 2 * i:240 + 2 * i] = 40  # a small dim object moving in a dark room
        w.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    w.release()
    frames = list(iter_unique(path, [ShotSpan(0, 40)], budget=10))
    assert len(frames) == 10


def test_an_undecodable_image_is_called_an_image(tmp_path):
    for name, head in (("a.png", b"\x89PNG\r\n\x1a\n"), ("b.webp", b"RIFF\x00\x00\x00\x00WEBPVP8 "),
                       ("c.gif", b"GIF89a")):
        path = tmp_path / name
        path.write_bytes(head + b"\x00garbage" * 50)
        with pytest.raises(CorruptMedia, match="image could not be decoded"):
            probe(path)
