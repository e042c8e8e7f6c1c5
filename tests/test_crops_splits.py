"""The crop each member expects reaches it; the four-way split keeps groups on one side."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detector.demo import shipped_photo
from detector.faces import CropSpec, crop_square, resize_square
from detector.manifest import Manifest
from detector.pipeline import Analyzer, _small, _Timer
from detector.settings import DetectorSettings
from detector.splits import SIDES, side_of, split_by_group
from detector.weights import WeightStore

from .test_models import save_member

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def test_crop_specs_cut_what_they_say():
    frame = np.arange(200 * 300 * 3, dtype=np.uint32).reshape(200, 300, 3).astype(np.uint8)
    box = (100.0, 50.0, 140.0, 100.0)  # 40 wide, 50 high, centre (120, 75)
    tight = CropSpec(margin=1.0).cut(frame, box)
    assert tight.shape == (50, 50, 3)
    assert np.array_equal(tight, frame[50:100, 95:145])
    wide = CropSpec(margin=2.0).cut(frame, box)
    assert wide.shape == (100, 100, 3) and np.array_equal(wide, crop_square(frame, box, 2.0))
    stretched = CropSpec(margin=1.0, shape="stretch").cut(frame, box)
    assert stretched.shape == (50, 50, 3)  # the 40x50 box itself, widened to a square
    assert np.abs(stretched[:, 0].astype(int) - frame[50:100, 100].astype(int)).max() <= 2


@pytest.fixture(scope="module")
def two_margin_analyzer(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("crops")
    store = WeightStore(tmp / "weights")
    members = []
    for k, margin in enumerate((0.85, 1.6)):
        _, member, path = save_member(tmp, "mesonet4", f"m{margin}", seed=k)
        member.crop = CropSpec(margin=margin)
        store.import_file(member, path)
        members.append(member)
    settings = DetectorSettings(weights_dir=tmp / "weights", precision="fp32", members=None)  # both of them
    return Analyzer(settings, device="cpu", manifest=Manifest(members=members)).load()


def test_each_member_gets_its_own_crop_of_one_detection(two_margin_analyzer, tmp_path):
    an = two_margin_analyzer
    rgb = shipped_photo()
    path = tmp_path / "hopper.png"
    Image.fromarray(rgb).save(path)
    from detector.fetch import fetch
    from detector.probe import probe

    info = probe(path, 60)
    faces, *_ = an._detect(path, info, lambda e: None, _Timer())
    assert len(faces) == 1
    f = faces[0]
    specs = {m.member.name: m.crop for m in an.ensemble.members}
    assert set(f.member_crops) == set(specs.values()) and len(f.member_crops) == 2
    tight, wide = f.member_crops[CropSpec(margin=0.85)], f.member_crops[CropSpec(margin=1.6)]
    # the same detection, two crops from the full frame (each at most its member's input size)
    assert np.array_equal(tight, CropSpec(margin=0.85).cut(rgb, f.box))  # 188 px: kept as cut
    assert np.array_equal(wide, _small(CropSpec(margin=1.6).cut(rgb, f.box), 256))  # 353 px, shrunk to 256
    assert tight.shape[0] == round(max(f.box[2] - f.box[0], f.box[3] - f.box[1]) * 0.85)
    # and each member scores its own crop: its logit is the one on that crop alone
    sc = an.ensemble.score([f.member_crops])
    with torch.no_grad():
        for m in an.ensemble.members:
            crop = f.member_crops[m.crop]
            x = torch.from_numpy(resize_square(crop, m.input_size)[None]).permute(0, 3, 1, 2).float() / 255
            assert sc.logits[m.member.name][0] == pytest.approx(float(m.logits(x)[0]), abs=1e-5)
            other = f.member_crops[next(s for s in f.member_crops if s != m.crop)]
            xo = torch.from_numpy(resize_square(other, m.input_size)[None]).permute(0, 3, 1, 2).float() / 255
            assert abs(float(m.logits(xo)[0]) - sc.logits[m.member.name][0]) > 1e-4
    report = an.analyze(fetch(str(path), tmp_path, an.settings), gallery=False).report
    assert sorted(m.crop for m in report.models) == ["square x0.85", "square x1.6"]


def test_training_refuses_a_crop_that_disagrees_with_its_data(tmp_path):
    from detector.training import TrainConfig, resolve_crop

    cfg = TrainConfig(name="x", architecture="meve_lite0", crop={"margin": 1.3},
                      data=[{"labels": tmp_path / "l.csv", "crop": {"margin": 0.85}}])
    with pytest.raises(ValueError, match="training and serving would disagree"):
        resolve_crop(cfg)
    cfg = TrainConfig(name="x", architecture="meve_lite0", data=[{"labels": tmp_path / "l.csv",
                                                                  "crop": {"margin": 0.85}}])
    assert resolve_crop(cfg) == CropSpec(margin=0.85)


def test_the_four_way_split_never_puts_a_group_on_two_sides():
    groups = np.array([f"v{i % 997}" for i in range(5000)])
    sides = split_by_group(groups)
    assert sorted(np.concatenate(list(sides.values())).tolist()) == list(range(5000))
    seen = {}
    for side, idx in sides.items():
        for g in set(groups[idx]):
            assert seen.setdefault(g, side) == side, g
    shares = {s: len(set(groups[sides[s]])) / 997 for s in SIDES}
    assert abs(shares["test"] - 0.15) < 0.04 and abs(shares["val"] - 0.10) < 0.04
    # a group's side depends on its name alone: a subset (or another tool) agrees
    sub = split_by_group(groups[::7])
    for side, idx in sub.items():
        assert all(side_of(g) == side for g in groups[::7][idx])
    with pytest.raises(ValueError):
        split_by_group(groups, {"val": 0.5, "calibration": 0.3, "test": 0.2})


@pytest.mark.skipif(not (SHARED / "faces/dfdc/labels.csv").is_file(), reason="../shared/faces/dfdc is absent")
def test_dfdc_fakes_and_their_originals_share_a_side():
    with open(SHARED / "faces/dfdc/labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    sides = split_by_group([r["original_video"] for r in rows])
    where = {}  # original video -> side: every fake of it and its real crop on that side
    for side, idx in sides.items():
        for i in idx:
            assert where.setdefault(rows[i]["original_video"], side) == side
    assert all(len(sides[s]) > 1000 for s in SIDES)
    # a real crop's own video is its original: the fakes made from it never cross to another side
    real_side = {rows[i]["source_video"]: s for s, idx in sides.items() for i in idx if rows[i]["label"] == "real"}
    assert all(where[v] == s for v, s in real_side.items())
