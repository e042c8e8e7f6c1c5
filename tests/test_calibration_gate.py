"""Calibration (Platt scaling) and the reliability gate's reasons."""

import numpy as np
import pytest
from PIL import Image

from detector import gate
from detector.calibration import expected_calibration_error, fit_platt


def test_platt_recovers_the_generating_parameters():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 2, 40000)
    y = rng.random(40000) < 1 / (1 + np.exp(-(0.5 * x - 1.0)))
    p = fit_platt(x, y)
    assert p.a == pytest.approx(0.5, abs=0.03) and p.b == pytest.approx(-1.0, abs=0.05)


def test_calibration_lowers_the_calibration_error_of_an_overconfident_model():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, 20000)
    y = rng.random(20000) < 1 / (1 + np.exp(-x))
    overconfident = 4 * x + 1  # a model whose logits are 4x too large and biased
    before = expected_calibration_error(y, 1 / (1 + np.exp(-overconfident)))
    platt = fit_platt(overconfident, y)
    after = expected_calibration_error(y, platt.apply(overconfident))
    assert before > 0.1 and after < 0.02


def test_calibration_needs_both_classes_and_stays_finite_on_a_separable_set():
    with pytest.raises(ValueError):
        fit_platt([0.1, 0.2], [1, 1])
    p = fit_platt([-3, -2, -1, 1, 2, 3], [0, 0, 0, 1, 1, 1])
    assert np.isfinite(p.a) and p.a > 0
    assert 0.5 < p.apply([3])[0] < 0.95  # Platt's smoothed targets: never a certain 1.0


GOOD_VIDEO = dict(kind="video", path=None, size_bytes=2_000_000, width=640, height=360, fps=30.0,
                  duration_s=8.0, scored=True, face_sides=[120.0, 130.0], face_frames=12)


def test_a_good_video_passes_the_gate():
    assert gate.reasons(**GOOD_VIDEO) == []  # 0.23 bits per pixel, 120 px faces, 12 frames


@pytest.mark.parametrize("change, code", [
    (dict(scored=False), "no_face"),
    (dict(face_sides=[40.0, 50.0, 200.0]), "faces_too_small"),
    (dict(size_bytes=60_000), "heavy_compression"),  # 0.007 bits per pixel
    (dict(face_frames=2), "too_few_frames"),
])
def test_each_reason(change, code):
    rs = gate.reasons(**{**GOOD_VIDEO, **change})
    assert [r.code for r in rs] == [code]
    assert gate.sentence(rs).startswith("Inconclusive because ")


def test_reasons_combine_into_one_sentence():
    rs = gate.reasons(**{**GOOD_VIDEO, "face_sides": [30.0], "face_frames": 1})
    assert [r.code for r in rs] == ["faces_too_small", "too_few_frames"]
    s = gate.sentence(rs)
    assert " and a face is visible in too few frames to judge (1; " in s and s.endswith(".")
    # then what to do about each, in plain words
    assert s.endswith("fill more of the picture, may work. A longer clip, in which the face is visible for longer, "
                      "may work.")
    assert "bits per pixel" not in gate.sentence(gate.reasons(**{**GOOD_VIDEO, "size_bytes": 60_000}))


@pytest.mark.parametrize("quality", [15, 35, 75, 95])
def test_jpeg_quality_estimate(tmp_path, quality):
    rng = np.random.default_rng(0)
    path = tmp_path / f"q{quality}.jpg"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path, quality=quality)
    assert gate.jpeg_quality(path) == pytest.approx(quality, abs=3)
    rs = gate.reasons(kind="image", path=path, size_bytes=path.stat().st_size, width=64, height=64, fps=None,
                      duration_s=None, scored=True, face_sides=[100.0], face_frames=1)
    assert [r.code for r in rs] == (["heavy_compression"] if quality < gate.MIN_JPEG_QUALITY else [])


def test_png_has_no_jpeg_quality(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    assert gate.jpeg_quality(tmp_path / "a.png") is None
