"""The fast path (one decode, faces found small and judged full, embeddings only where they
decide something, bf16 where native) against the 1.x reference path it replaces."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from detector.demo import make_multishot_video
from detector.faces import FaceDetector
from detector.frames import iter_unique, sample_indices
from detector.pipeline import Analyzer, run
from detector.probe import probe
from detector.scan import VideoScan
from detector.settings import DetectorSettings
from detector.shots import ShotSpan, split_shots
from detector.tracks import confirmed, group_tracks, iou, link_tracks

from .conftest import ROOT, shared

REFERENCE = dict(decode="two-pass", detect_max_side=1280, detect_full_res_refine=False,
                 cluster_embeddings="all", precision="fp32", face_confirm_prob=None)


def photo(name):
    return np.asarray(Image.open(shared("media", "unlabeled", name)).convert("RGB"))


@pytest.fixture(scope="module")
def three_shots_720p(tmp_path_factory):
    """Three people, 2 s each, at 1280 x 720 (so the fast path finds faces on downscaled frames)."""
    return make_multishot_video([photo("obama.jpg"), photo("biden.jpg"), photo("kate_siegel.jpg")],
                                tmp_path_factory.mktemp("fast") / "three.mp4", seconds_per_shot=2.0,
                                fps=25, size=(1280, 720))


def test_one_decode_finds_the_same_shots_and_frames_as_two(three_shots_720p):
    for path in (three_shots_720p, shared("media", "unlabeled", "short_hamilton_clip.mp4")):
        info = probe(path)
        ref = split_shots(path, info.fps, info.frame_count)
        want = [(s, i) for s, i, _ in iter_unique(path, ref.shots, 16)]
        scan = VideoScan(path, info.fps, 16)
        got = [(s, i) for s, i, _ in scan]
        # neither has B-frames: every frame decoded once, none left out, none again
        assert (scan.frames_decoded, scan.frames_left_out, scan.frames_redecoded) == (info.frame_count, 0, 0)
        assert scan.spans == ref.shots and scan.cuts == ref.cuts
        # cut scores from the small planes: close to PySceneDetect's (scores of 40-56)
        assert scan.strengths == pytest.approx(ref.strengths, abs=4.5)
        assert got == want


@pytest.fixture(scope="module")
def cuts_on_b_frames(tmp_path_factory):
    """H.264 with 3 non-reference B-frames between references, one keyframe, and cuts at
    frames 75 and 150, both B-frames: a platform's fixed-GOP encode."""
    return make_multishot_video([photo("obama.jpg"), photo("biden.jpg"), photo("kate_siegel.jpg")],
                                tmp_path_factory.mktemp("h264") / "bframes.mp4", seconds_per_shot=3.0,
                                fps=25, size=(1280, 720), codec="h264")


def test_frames_nobody_looks_at_are_not_decoded_and_cuts_among_them_are_found(cuts_on_b_frames):
    import av
    import cv2

    path = cuts_on_b_frames
    info = probe(path)
    with av.open(str(path)) as c:  # the clip is what it says: B-frames that are not references
        c.streams.video[0].codec_context.skip_frame = "NONREF"
        refs = [f.pts for f in c.decode(video=0)]
    assert len(refs) < info.frame_count / 2
    ref = split_shots(path, info.fps, info.frame_count)
    assert ref.cuts == [75, 150]
    want = list(iter_unique(path, ref.shots, 16))
    scan = VideoScan(path, info.fps, 16)
    got = list(scan)
    assert scan.frames_left_out > 0 and scan.frames_decoded + scan.frames_left_out == info.frame_count
    # each cut lies in a gap of left-out frames: filled from the kept packets, so the cuts, the
    # shots and the sampled frames (pixel for pixel, as OpenCV decodes them) are a full decode's
    assert 0 < scan.frames_redecoded < info.frame_count
    assert scan.cuts == ref.cuts and scan.spans == ref.shots
    assert [(s, i) for s, i, _ in got] == [(s, i) for s, i, _ in want]
    assert all(np.array_equal(a[2], b[2]) for a, b in zip(got, want))
    full = VideoScan(path, info.fps, 16, leave_out=False)
    assert [(s, i) for s, i, _ in full] == [(s, i) for s, i, _ in got]
    assert (full.frames_decoded, full.frames_left_out, full.frames_redecoded) == (info.frame_count, 0, 0)
    cap = cv2.VideoCapture(str(path))  # and the frame numbers are OpenCV's
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(bgr)
    assert len(frames) == info.frame_count
    assert all(np.array_equal(cv2.cvtColor(frames[i], cv2.COLOR_BGR2RGB), rgb) for _, i, rgb in got)


def test_a_run_of_short_cuts_is_merged_as_the_two_pass_split_merges_it(tmp_path):
    # Cuts every 0.6 s (15 frames) for 3 s, then a 3 s shot: the short shots must merge.
    imgs = [photo(n) for n in ("obama.jpg", "biden.jpg", "kate_siegel.jpg", "obama2.jpg", "biden.jpg")]
    path = make_multishot_video(imgs, tmp_path / "short.mp4", seconds_per_shot=0.6, fps=25)
    longer = make_multishot_video([photo("obama3.jpg")], tmp_path / "long.mp4", seconds_per_shot=3.0, fps=25)
    import cv2

    both = tmp_path / "both.mp4"
    w = cv2.VideoWriter(str(both), cv2.VideoWriter_fourcc(*"mp4v"), 25, (480, 360))
    for p in (path, longer):
        cap = cv2.VideoCapture(str(p))
        while True:
            ok, f = cap.read()
            if not ok:
                break
            w.write(f)
        cap.release()
    w.release()
    info = probe(both)
    ref = split_shots(both, info.fps, info.frame_count)
    scan = VideoScan(both, info.fps, 8)
    got = [(s, i) for s, i, _ in scan]
    assert len(ref.cuts) >= 4 and all(s.end_frame - s.start_frame >= 38 for s in scan.spans)
    assert scan.spans == ref.shots and got == [(s, i) for s, i, _ in iter_unique(both, ref.shots, 8)]


def test_sampled_frames_lie_on_a_grid_a_stream_can_keep():
    for start, end, budget in ((0, 300, 16), (37, 290, 16), (5, 12, 16), (100, 1000, 64), (3, 50, 8)):
        idx = sample_indices(ShotSpan(start, end), budget)
        assert len(idx) == min(budget, end - start) == len(set(idx))
        assert all(start <= i < end for i in idx) and idx == sorted(idx)
        gaps = np.diff(idx)
        if end - start > 2 * budget:  # spread over the shot, not bunched
            assert gaps.max() <= 3 * (end - start) / budget and idx[-1] - idx[0] >= 0.7 * (end - start)


def test_faces_found_on_a_small_frame_are_boxed_on_the_full_one():
    img = photo("multiface.jpg")
    big = np.asarray(Image.fromarray(img).resize((img.shape[1] * 3, img.shape[0] * 3)))
    full = FaceDetector("cpu", min_prob=0.9, max_side=10_000).load().detect([big])[0]
    for refine in (True, False):
        small = FaceDetector("cpu", min_prob=0.9, max_side=max(big.shape[:2]) // 3,
                             full_res_refine=refine).load().detect([big])[0]
        assert len(small) >= 4
        for d in small:  # every box in full-resolution pixels, where the full-size detection put it
            best = max(full, key=lambda f: iou(f.box, d.box))
            assert iou(best.box, d.box) > 0.6, (refine, d.box, best.box)
            assert all(0 <= v <= max(big.shape[:2]) for v in d.box)


def test_overlapping_boxes_are_one_track_and_need_no_embedding():
    # One face drifting right over sampled frames 0-5 (missed in frame 3), a second face beside
    # it in frame 0, and a face elsewhere in frames 6-7, after the first has gone.
    frames = [0, 1, 2, 4, 5, 0, 6, 7]
    boxes = [(100 + 10 * k, 100, 200 + 10 * k, 200) for k in (0, 1, 2, 4, 5)] + \
        [(400, 100, 500, 200), (400, 300, 500, 400), (405, 300, 505, 400)]
    track = link_tracks(frames, boxes)
    assert track[0] == track[1] == track[2] == track[3] == track[4]  # gap of one frame bridged
    assert track[5] != track[0] and track[6] == track[7] != track[5]
    calls = []

    def embed(faces):
        calls.append(list(faces))
        vec = {0: 0.0, 1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0, 5: 5.0, 6: 0.1, 7: 0.1}
        return np.array([[vec[i], 0.0] for i in faces])

    labels, embedded = group_tracks(frames, track, embed, max_distance=0.5)
    # Track {5} shares frame 0 with the first: two people, never compared. {6, 7} meets
    # neither, so it is compared with both (one batch), and lies within 0.5 of the first.
    assert len(calls) == 1 and embedded == len(calls[0]) and set(calls[0]) >= {5, 6, 7}
    assert labels[6] == labels[0] and labels[5] != labels[0]
    single, n = group_tracks([0, 1, 2], [0, 0, 0], embed, 0.5)
    assert n == 0 and single == [0, 0, 0] and len(calls) == 1  # one track: no embedder at all
    crowd, n = group_tracks([0, 0, 0], [0, 1, 2], embed, 0.5)
    assert n == 0 and len(set(crowd)) == 3  # three faces of one frame are three people


def test_a_less_sure_face_is_kept_where_a_sure_face_of_a_neighbouring_frame_confirms_it():
    box, moved, far = (100, 100, 200, 220), (104, 102, 204, 222), (400, 100, 500, 220)
    frames = [0, 1, 2, 3, 5, 7, 8]  # positions among a shot's sampled frames
    boxes = [box, moved, box, far, box, box, far]
    probs = [0.97, 0.75, 0.99, 0.80, 0.75, 0.95, 0.80]
    # 1: between two sure faces in its place; 3: next to a sure face, elsewhere in the frame;
    # 4: no neighbouring frame has a face; 6: its neighbour's sure face lies elsewhere
    assert confirmed(frames, boxes, probs, 0.9) == [True, True, True, False, False, True, False]
    assert confirmed(frames, boxes, probs, 0.7) == [True] * 7


def test_fast_and_reference_paths_agree(mesonet_store, three_shots_720p):
    common = dict(weights_dir=mesonet_store.root, frames_per_shot_cpu=8)
    ref = run(str(three_shots_720p), Analyzer(DetectorSettings(**common, **REFERENCE), device="cpu").load(),
              gallery=False)
    fast_an = Analyzer(DetectorSettings(**common), device="cpu").load()
    fast = run(str(three_shots_720p), fast_an, gallery=False)
    assert fast.frames_decoded == probe(three_shots_720p).frame_count and ref.frames_decoded is None
    # one face per sampled frame in each shot: the tracks decide, the clustering runs no embedder;
    # linking the shots' people embeds at most 3 faces of each cluster
    clusters = sum(len(s.clusters) for s in fast.report.shots)
    assert fast.faces_embedded == fast.embedded_for_people <= 3 * clusters
    assert 0 < len(ref.scored_faces) <= ref.faces_embedded
    assert len(fast.report.shots) == len(ref.report.shots) == 3
    for a, b in zip(fast.report.shots, ref.report.shots):
        assert a.score == pytest.approx(b.score, abs=0.02)
        assert [c.face_count for c in a.clusters] == [c.face_count for c in b.clusters]
    assert fast.report.score == pytest.approx(ref.report.score, abs=0.02)
    for f in ref.scored_faces:  # every face scored before is scored now
        assert any(g.frame_index == f.frame_index and iou(g.box, f.box) > 0.5 for g in fast.scored_faces)


def test_bf16_only_where_the_cpu_has_it(mesonet_store, three_shots_720p):
    code = ("import sys; from detector.pipeline import Analyzer, run; from detector.settings import "
            "DetectorSettings; a = Analyzer(DetectorSettings(weights_dir=sys.argv[1], frames_per_shot_cpu=4),"
            " device='cpu').load(); r = run(sys.argv[2], a, gallery=False).report; "
            "print(a.ensemble.precision, r.score)")
    outs = {}
    for name, env in (("native", {}), ("capped", {"ATEN_CPU_CAPABILITY": "avx2"}),
                      ("onednn-capped", {"ONEDNN_MAX_CPU_ISA": "AVX2"})):
        p = subprocess.run([sys.executable, "-c", code, str(mesonet_store.root), str(three_shots_720p)],
                           capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env}, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
        precision, score = p.stdout.split()
        outs[name] = (precision, float(score))
    from detector.precision import cpu_has_bf16

    assert outs["native"][0] == ("bf16" if cpu_has_bf16() else "fp32")
    assert outs["capped"][0] == outs["onednn-capped"][0] == "fp32"  # the fallback, and it scores
    assert outs["native"][1] == pytest.approx(outs["capped"][1], abs=0.01)


def test_decoding_beside_face_finding_gives_the_same_answer(mesonet_store, three_shots_720p):
    """Frames looked at early (the plan if no further cut comes) are reused when the shot
    settles and dropped when a cut changes the plan: the same faces and scores as in turn."""
    common = dict(weights_dir=mesonet_store.root, frames_per_shot_cpu=8)
    out = {}
    for mode in ("on", "off"):
        a = run(str(three_shots_720p), Analyzer(DetectorSettings(**common, overlap_decode=mode),
                                                device="cpu").load(), gallery=False)
        out[mode] = ([(f.frame_index, f.box) for f in a.scored_faces], a.report.score,
                     [s.sampled_frames for s in a.report.shots])
    (faces_on, score_on, sampled_on), (faces_off, score_off, sampled_off) = out["on"], out["off"]
    assert sampled_on == sampled_off and [f for f, _ in faces_on] == [f for f, _ in faces_off]
    # MTCNN batches frames as they arrive: the same boxes up to float rounding
    assert np.allclose([b for _, b in faces_on], [b for _, b in faces_off], atol=0.5)
    assert score_on == pytest.approx(score_off, abs=1e-3)
    assert not DetectorSettings().overlap("cpu") and DetectorSettings().overlap("cuda")


def test_prefetch_hands_on_the_producers_error():
    from detector.scan import Prefetch

    def events():
        yield 1
        yield 2
        raise ValueError("corrupt frame")

    got = []
    with pytest.raises(ValueError, match="corrupt frame"):
        for x in Prefetch(events()):
            got.append(x)
    assert got == [1, 2]


def test_bf16_only_for_members_measured_to_allow_it(mesonet_store):
    from detector.precision import cpu_has_bf16

    ens = Analyzer(DetectorSettings(weights_dir=mesonet_store.root), device="cpu").load().ensemble
    chosen = {m.member.name: ens.member_precision(m) for m in ens.members}
    native = "bf16" if cpu_has_bf16() else "fp32"
    assert chosen == {"meso4-df": native, "meso4-f2f": native, "mesoinception4-df": native,
                      "mesoinception4-f2f": "fp32"}  # moved 0.02 under bf16: kept in fp32
    forced = Analyzer(DetectorSettings(weights_dir=mesonet_store.root, precision="bf16"),
                      device="cpu").load().ensemble
    assert {forced.member_precision(m) for m in forced.members} == {"bf16"}


def _h264_frames(n=60, size=(320, 240)):
    """A grey ramp with a cut at frame 30 (to white), as RGB frames."""
    w, h = size
    return [np.full((h, w, 3), 40 + i if i < 30 else 230 - i, np.uint8) for i in range(n)]


def _mux(path, frames, fps=25, broken_pts=False):
    import av

    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        st.options = {"x264-params": "bframes=3:b-adapt=0:b-pyramid=none:scenecut=0"}
        for rgb in [*frames, None]:
            for pkt in st.encode(None if rgb is None else av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                if broken_pts:  # display times lost: decoding order in their place
                    pkt.pts = pkt.dts
                c.mux(pkt)
    return path


def _opencv_frames(path):
    import cv2

    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            return out
        out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


@pytest.mark.parametrize("ext", ["avi", "h264"])
def test_containers_without_display_times_are_decoded_whole_and_numbered_as_opencv_does(tmp_path, ext):
    # AVI keeps decoding order only, a raw stream no times at all: nothing can be left out
    path = _mux(tmp_path / f"b.{ext}", _h264_frames())
    want = _opencv_frames(path)
    scan = VideoScan(path, 25, 8, min_shot_s=0.4)
    got = list(scan)
    assert (scan.frames_decoded, scan.frames_left_out) == (len(want), 0) and scan.cuts == [30]
    assert got and all(np.array_equal(rgb, want[i]) for _, i, rgb in got)


def test_timestamps_out_of_display_order_turn_leaving_out_off(tmp_path):
    path = _mux(tmp_path / "broken.mkv", _h264_frames(), broken_pts=True)
    scan = VideoScan(path, 25, 8, min_shot_s=0.4)
    idx = [i for _, i, _ in scan]
    # numbered as they come once the times are found wanting; the cut is still found
    assert idx == sorted(set(idx)) and len(scan.cuts) == 1 and abs(scan.cuts[0] - 30) <= 2
    assert scan.frames_decoded == 60 and max(idx) <= 60
