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
