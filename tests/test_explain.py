"""Why: Grad-CAM heat maps of the ensemble (detector.explain) on real faces and real members."""

import numpy as np
import pytest
from PIL import Image

from detector.explain import SENTENCE, _paste, _placement, grad_cam, overlay
from detector.faces import CropSpec

from .conftest import shared


def test_a_member_crop_is_placed_where_it_lies_in_the_display_crop():
    box = (100, 100, 200, 240)  # 100 x 140
    assert _placement(CropSpec(margin=0.85), CropSpec(margin=1.3), box) == pytest.approx((0.85 / 1.3,) * 2)
    w, h = _placement(CropSpec(margin=1.0, shape="stretch"), CropSpec(margin=1.0), box)
    assert (w, h) == pytest.approx((100 / 140, 1.0))
    canvas, mask = _paste(np.ones((7, 7)), (0.5, 0.5), 100)
    assert mask.sum() == 50 * 50 and mask[50, 50] == 1 and mask[10, 10] == 0
    assert canvas[mask == 1].min() > 0.99
    canvas, mask = _paste(np.ones((7, 7)), (2.0, 2.0), 100)  # a wider crop than the display: clipped
    assert mask.all()


def test_the_heat_map_of_a_real_face_averages_every_member(analyzer):
    rgb = np.asarray(Image.open(shared("media", "unlabeled", "obama.jpg")).convert("RGB"))
    det = analyzer.detector.detect([rgb])[0][0]
    crops = {spec: spec.cut(rgb, det.box) for spec in analyzer.ensemble.crop_specs()}
    hm = grad_cam(analyzer.ensemble, crops, det.box, CropSpec(margin=1.3))
    assert hm is not None and hm.heat.shape == (160, 160)
    assert hm.heat.min() >= 0 and hm.heat.max() == pytest.approx(1.0) and hm.heat.std() > 0.05
    assert sorted(hm.members) == sorted(m.member.name for m in analyzer.ensemble.members)
    # the side it explains is the side of 0.5 its score is on, and that score is the ensemble's
    direct = float(analyzer.ensemble.score([crops]).combined[0])
    assert hm.score == pytest.approx(direct, abs=0.02)
    assert hm.towards == ("manipulated" if direct >= 0.5 else "authentic") and hm.sentence == SENTENCE[hm.towards]
    ov = overlay(rgb[int(det.box[1]):int(det.box[3]), int(det.box[0]):int(det.box[2])], hm.heat)
    assert ov.shape == (160, 160, 3) and ov.dtype == np.uint8
