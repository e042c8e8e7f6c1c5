import numpy as np
from PIL import Image

from detector.sbi import face_mask, self_blend

from .conftest import shared


def lfw_face(name="Toby_Keith_0001.jpg", size=256):
    img = Image.open(shared("faces", "lfw", name)).convert("RGB")
    return np.asarray(img.resize((size, size)))


def test_blend_differs_from_its_source_only_inside_the_mask():
    img = lfw_face()
    fake, mask = self_blend(img, np.random.default_rng(3))
    outside = mask == 0
    assert outside.any() and (~outside).any()
    assert np.array_equal(fake[outside], img[outside])  # untouched outside the blended region
    inside = mask >= 0.9 * mask.max()  # the blend ratio may cap the mask at 0.25
    assert (fake[inside] != img[inside]).any(axis=-1).mean() > 0.5  # most of the face changed


def test_mask_covers_the_face_centre_not_the_border():
    m = face_mask(300, np.random.default_rng(0))
    assert m.max() <= 1.0 and m.min() >= 0.0
    assert m[150, 150] > 0.9  # the face centre
    assert m[:15].max() == 0 and m[:, :15].max() == 0 and m[-15:].max() == 0  # the crop's margin
    assert 0.15 < (m > 0.5).mean() < 0.45


def test_blends_are_random_but_reproducible():
    img = lfw_face()
    a, ma = self_blend(img, np.random.default_rng(7))
    b, mb = self_blend(img, np.random.default_rng(7))
    c, _ = self_blend(img, np.random.default_rng(8))
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    assert not np.array_equal(a, c)
