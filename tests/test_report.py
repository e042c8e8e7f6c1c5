import subprocess
import sys

from detector.report import (
    AUTHENTIC_BELOW,
    MANIPULATED_FROM,
    REPORT_VERSION,
    Box,
    Media,
    Report,
    ReportVersionError,
    Shot,
    Source,
    Verdict,
    read_report,
    verdict_for,
)


def test_verdict_bands():
    assert verdict_for(None) is Verdict.inconclusive
    assert verdict_for(0.0) is Verdict.likely_authentic
    assert verdict_for(AUTHENTIC_BELOW - 1e-6) is Verdict.likely_authentic
    assert verdict_for(AUTHENTIC_BELOW) is Verdict.uncertain
    assert verdict_for(MANIPULATED_FROM - 1e-6) is Verdict.uncertain
    assert verdict_for(MANIPULATED_FROM) is Verdict.likely_manipulated
    assert verdict_for(1.0).label == "Likely manipulated"


def test_report_json_round_trip():
    r = Report(status="no_faces", score=None, verdict=Verdict.inconclusive, verdict_label="Inconclusive",
               source=Source(input="x.mp4", sha256="0" * 64, size_bytes=3),
               media=Media(kind="video", width=4, height=3, fps=25.0, frame_count=50, duration_s=2.0),
               shots=[Shot(index=0, start_frame=0, end_frame=50, start_s=0, end_s=2, sampled_frames=8,
                           faces_detected=0, score=None, keyframe_index=0)],
               models=[], device="cpu")
    again = Report.from_json(r.to_json())
    assert again == r
    assert again.report_version == REPORT_VERSION and REPORT_VERSION.split(".")[0] == "1"
    assert Box(x1=1, y1=2, x2=3, y2=4).x2 == 3


def _no_faces() -> Report:
    return Report(status="no_faces", score=None, verdict=Verdict.inconclusive, verdict_label="Inconclusive",
                  source=Source(input="x.mp4", sha256="0" * 64, size_bytes=3),
                  media=Media(kind="image", width=4, height=3), shots=[], models=[], device="cpu")


def test_consumers_read_a_report_of_their_major_version_only():
    r = _no_faces()
    assert read_report(r.to_json()) == r == read_report(r.model_dump(mode="json"))
    minor = {**r.model_dump(mode="json"), "report_version": REPORT_VERSION.split(".")[0] + ".99.0"}
    assert read_report(minor).report_version.endswith(".99.0")  # a newer minor keeps the fields' meaning
    for other in (f"{int(REPORT_VERSION.split('.')[0]) + 1}.0.0", "0.9.0", ""):
        try:
            read_report({**r.model_dump(mode="json"), "report_version": other})
        except ReportVersionError as e:
            assert "major version" in str(e)
        else:
            raise AssertionError(f"report_version {other!r} was read")


def test_a_bot_shows_no_number_from_a_report_it_cannot_read():
    from bots.core import NEWER_REPORT, reply_from_view

    view = {"state": "done", "links": {"report_page": "http://127.0.0.1/r"},
            "report": {**_no_faces().model_dump(mode="json"), "report_version": "9.0.0", "score": 0.9}}
    reply = reply_from_view(view)
    assert reply.headline == NEWER_REPORT and reply.score is None and not reply.shots
    assert reply.report_url == "http://127.0.0.1/r"
    view["report"]["report_version"] = REPORT_VERSION
    view["report"]["score"] = None
    assert reply_from_view(view).headline != NEWER_REPORT


def test_report_schema_needs_no_torch():
    # Bot and API hosts import the schema without the ML stack.
    code = "import sys, detector.report, detector.errors, detector.settings; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _shot(i, score):
    from detector.report import Shot

    return Shot.model_construct(index=i, start_s=2.0 * i, end_s=2.0 * i + 2.0, score=score)


def test_the_shots_note_explains_shots_and_names_the_most_suspicious():
    from detector.assemble import shots_note

    shots = [_shot(0, 0.2), _shot(1, None), _shot(2, 0.81), _shot(3, 0.5)]
    note = shots_note("video", shots, gated=False)
    assert note == ("The video has 4 shots (a shot runs from one camera cut to the next); "
                    "the most suspicious is shot 3 (0:04.0–0:06.0), at 81%.")
    assert "%" not in shots_note("video", shots, gated=True) and "found in 3 of them" in shots_note(
        "video", shots, gated=True)
    assert shots_note("video", shots[:1], gated=False) is None  # one shot: the headline says it
    assert shots_note("image", shots[:1], gated=False) is None
    assert shots_note("video", [_shot(0, None), _shot(1, None)], gated=False).endswith("no face was found in any of them.")


def test_the_bands_note_follows_the_bands():
    from detector.report import AUTHENTIC_BELOW, MANIPULATED_FROM, bands_note, verdict_for

    note = bands_note()
    assert note.startswith(f"Below {AUTHENTIC_BELOW * 100:.0f}%: likely authentic")
    assert f"{MANIPULATED_FROM * 100:.0f}% and above: likely manipulated" in note
    assert verdict_for(MANIPULATED_FROM).value == "likely_manipulated" and verdict_for(AUTHENTIC_BELOW).value == "uncertain"
