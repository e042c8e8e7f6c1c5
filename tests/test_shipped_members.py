"""The members trained here ship in the repository: they install offline, by sha256, and
score through the whole pipeline (no ../shared needed). The reliability gate on a real image."""

import pytest
from PIL import Image

from detector.demo import shipped_photo
from detector.fetch import fetch
from detector.manifest import load_manifest
from detector.pipeline import Analyzer
from detector.report import Verdict
from detector.settings import DetectorSettings
from detector.weights import WeightStore

SHIPPED = [m for m in load_manifest().members if m.weights and m.weights.url.startswith("package://")]


@pytest.fixture(scope="module")
def shipped_analyzer(tmp_path_factory):
    if not SHIPPED:
        pytest.fail("the manifest ships no trained member")
    root = tmp_path_factory.mktemp("weights")
    store = WeightStore(root)
    for m in SHIPPED:
        store.fetch(m)  # copies from detector/trained, verified by sha256: no network
        assert store.status(m) == "verified"
    settings = DetectorSettings(weights_dir=root, members=[m.name for m in SHIPPED])
    return Analyzer(settings, device="cpu").load()


def test_the_default_ensemble_is_the_manifest_rule_on_shipped_weights(tmp_path):
    """What a user's check is scored with when nothing is named: the members of the rule in
    detector/manifest.json, all shipped here, combined by the rule's weights."""
    manifest = load_manifest()
    assert manifest.ensemble is not None and set(manifest.ensemble.members) <= {m.name for m in SHIPPED}
    store = WeightStore(tmp_path)
    for m in SHIPPED:
        store.fetch(m)
    ens = Analyzer(DetectorSettings(weights_dir=tmp_path, members=None), device="cpu").load().ensemble
    assert [m.member.name for m in ens.members] == manifest.ensemble.members and ens.rule == manifest.ensemble


def test_shipped_members_score_the_demo_photo(shipped_analyzer, tmp_path):
    path = tmp_path / "hopper.jpg"
    Image.fromarray(shipped_photo()).save(path, quality=90)
    r = shipped_analyzer.analyze(fetch(str(path), tmp_path, shipped_analyzer.settings), gallery=False).report
    assert [m.name for m in r.models] == [m.name for m in SHIPPED]
    assert r.status == "scored" and 0.0 <= r.score <= 1.0
    assert r.inconclusive_reasons == [] and r.verdict is not Verdict.inconclusive and r.verdict_note is None
    face = r.faces[0]
    assert set(face.member_scores) == {m.name for m in SHIPPED}


def test_a_heavily_compressed_image_is_inconclusive_not_a_verdict(shipped_analyzer, tmp_path):
    path = tmp_path / "hopper_q12.jpg"
    Image.fromarray(shipped_photo()).save(path, quality=12)
    r = shipped_analyzer.analyze(fetch(str(path), tmp_path, shipped_analyzer.settings), gallery=True).report
    assert r.score is not None  # kept for experts
    assert r.verdict is Verdict.inconclusive and [w.code for w in r.inconclusive_reasons] == ["heavy_compression"]
    assert r.verdict_note.startswith("Inconclusive because the image is heavily compressed (JPEG quality about 1")


def test_a_face_scores_the_same_alone_and_in_a_padded_batch(shipped_analyzer):
    """Batches are padded with black crops to a power of two (one kernel set-up per shape):
    no member lets one crop of a batch change another's score."""
    import numpy as np

    from detector.ensemble import _padded

    rng = np.random.default_rng(0)
    photo = shipped_photo()
    crops = [np.ascontiguousarray(photo[y:y + 200, x:x + 200]) for y, x in rng.integers(0, 150, (5, 2))]
    ens = shipped_analyzer.ensemble
    together = ens.score(crops)
    alone = [ens.score([c]) for c in crops]
    for name, logits in together.logits.items():
        assert logits.shape == (5,)
        assert np.allclose(logits, [a.logits[name][0] for a in alone], atol=1e-4)
    assert len(_padded(np.zeros((5, 4, 4, 3), np.uint8), 32)) == 8
    assert len(_padded(np.zeros((32, 4, 4, 3), np.uint8), 32)) == 32
    assert len(_padded(np.zeros((1, 4, 4, 3), np.uint8), 32)) == 1
