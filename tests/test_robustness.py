"""PGD through the whole ensemble (IBM ART): stays in its budget and pushes fakes towards real."""

import numpy as np
import pytest

from detector.calibration import Platt
from detector.ensemble import Ensemble
from detector.manifest import Manifest
from detector.robustness import evaluate_robustness, pgd_attack, scores_of
from detector.weights import WeightStore

from .test_models import save_member


@pytest.fixture(scope="module")
def two_member_ensemble(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rob")
    store = WeightStore(tmp / "cache")
    members = []
    for k, arch in enumerate(["mesonet4", "mesoinception4"]):
        _, member, path = save_member(tmp, arch, f"m{k}", seed=k)
        member.calibration = Platt(a=2.0, b=0.5).model_dump()  # the attack must go through calibration too
        store.import_file(member, path)
        members.append(member)
    return Ensemble(Manifest(members=members), store).load()


@pytest.mark.parametrize("norm, eps", [("inf", 8 / 255), ("2", 1.0), ("1", 100.0)])
def test_pgd_stays_within_its_budget_and_lowers_the_fake_score(two_member_ensemble, norm, eps):
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 255, (3, 96, 96, 3), dtype=np.uint8)
    clean = faces.astype(np.float32).transpose(0, 3, 1, 2) / 255
    adv = pgd_attack(two_member_ensemble, faces, norm, eps, iterations=5)
    delta = (adv - clean).reshape(3, -1)
    bound = {"inf": np.abs(delta).max(1), "2": np.linalg.norm(delta, axis=1), "1": np.abs(delta).sum(1)}[norm]
    assert (bound <= eps * (1 + 1e-4) + 1e-5).all() and (bound > 0).all()
    assert adv.min() >= 0 and adv.max() <= 1
    before, after = scores_of(two_member_ensemble, clean), scores_of(two_member_ensemble, adv)
    assert (after < before).all(), (before, after)


def test_the_attack_module_scores_as_the_ensemble_does(two_member_ensemble):
    rng = np.random.default_rng(1)
    faces = rng.integers(0, 255, (2, 256, 256, 3), dtype=np.uint8)
    mean, _ = two_member_ensemble.predict(list(faces))
    via_module = scores_of(two_member_ensemble, faces.astype(np.float32).transpose(0, 3, 1, 2) / 255)
    assert np.allclose(mean, via_module, atol=1e-4)


def test_robustness_table_attacks_only_the_fakes(two_member_ensemble):
    rng = np.random.default_rng(2)
    faces = rng.integers(0, 255, (4, 64, 64, 3), dtype=np.uint8)
    labels = np.array([0, 0, 1, 1])
    res = evaluate_robustness(two_member_ensemble, faces, labels, {"inf": 8 / 255}, iterations=3)
    assert [r["norm"] for r in res["rows"]] == [None, "Linf"]
    assert res["n"] == 4 and res["n_fake"] == 2 and res["members"] == ["m0", "m1"]
    assert res["rows"][1]["fakes_detected"] <= res["rows"][0]["fakes_detected"]
