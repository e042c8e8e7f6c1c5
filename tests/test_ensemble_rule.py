"""The written ensemble rule: stacking fitted on the calibration side, greedy selection
on calibration + devset AUC; the shipped ensemble follows from the stored scores."""

import json
from pathlib import Path

import numpy as np
import pytest

from detector.ensemble_rule import MIN_GAIN, choose, fit_stack, judge, video_score
from detector.manifest import load_manifest

MEASUREMENTS = Path(__file__).resolve().parents[1] / "detector" / "measurements"
SCORES = MEASUREMENTS / "ensemble-scores.json"
RULE = MEASUREMENTS / "ensemble-rule.json"


def _scores(seed=0, n=600, videos=40):
    """Member 'good' separates the classes, 'half' a little, 'noise' not at all."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    logits = {"good": (2.5 * (y - 0.5) + rng.normal(0, 1, n)).tolist(),
              "half": (0.8 * (y - 0.5) + rng.normal(0, 1, n)).tolist(),
              "noise": rng.normal(0, 1, n).tolist()}
    items = []
    for v in range(videos):
        lab = v % 2
        faces = []
        for shot in range(2):
            for _ in range(3):
                faces.append({"shot": shot, "cluster": 0, "logits": {
                    "good": float(2.5 * (lab - 0.5) + rng.normal(0, 1)),
                    "half": float(0.8 * (lab - 0.5) + rng.normal(0, 1)), "noise": float(rng.normal(0, 1))}})
        items.append({"path": f"v{v}", "label": lab, "faces": faces})
    return {"members": ["noise", "half", "good"],
            "calibration": {"source": "made in the test", "labels": y.tolist(), "logits": logits},
            "devset": {"source": "made in the test", "items": items}}


def test_stacking_is_class_balanced_and_weighs_the_informative_member():
    rng = np.random.default_rng(1)
    y = (rng.random(3000) < 0.8).astype(int)  # 4 fakes to 1 real, like DFDC's 2:1 or worse
    z = np.stack([3 * (y - 0.5) + rng.normal(0, 1, 3000), rng.normal(0, 1, 3000)], 1)
    w, b = fit_stack(z, y)
    assert w[0] > 2 and abs(w[1]) < 0.2
    p = 1 / (1 + np.exp(-(z @ w + b)))
    tpr, tnr = (p[y == 1] >= 0.5).mean(), (p[y == 0] < 0.5).mean()
    assert abs(tpr - tnr) < 0.05  # balanced: 0.5 is not pushed towards the majority class


def test_greedy_selection_keeps_what_earns_its_place():
    scores = _scores()
    rule = choose(scores)
    assert rule.method == "logistic" and rule.members[0] == "good" and "noise" not in rule.members
    steps = rule.selection["steps"]
    assert all(b["J"] - a["J"] >= MIN_GAIN for a, b in zip(steps, steps[1:]))
    # the weights are the stack of the chosen members, refitted the same way
    again = judge(scores, rule.members)
    assert [rule.weights[n] for n in rule.members] == again["weights"] and rule.bias == again["bias"]


def test_a_video_score_is_the_pipelines_aggregation_of_stacked_faces():
    faces = [{"shot": 0, "cluster": 0, "logits": {"a": 0.0}}, {"shot": 0, "cluster": 0, "logits": {"a": 2.0}},
             {"shot": 1, "cluster": 0, "logits": {"a": -2.0}}, {"shot": 1, "cluster": 1, "logits": {"a": 4.0}}]
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    # cluster means: (0.5 + sig(2)) / 2, sig(-2), sig(4): the max over clusters and shots
    assert video_score(faces, ["a"], np.array([1.0]), 0.0) == pytest.approx(sig(4.0))
    assert video_score(faces[:3], ["a"], np.array([1.0]), 0.0) == pytest.approx((0.5 + sig(2.0)) / 2)
    assert video_score([], ["a"], np.array([1.0]), 0.0) is None


def test_the_stored_rule_result_follows_from_the_stored_scores():
    """measurements/ensemble-rule.json is what the rule chose from ensemble-scores.json (and
    whether it was applied); a shipped ensemble rule in the manifest must be that result."""
    stored = json.loads(RULE.read_text())
    rule = choose(json.loads(SCORES.read_text()))
    assert rule.members == stored["rule"]["members"]
    assert rule.weights == pytest.approx(stored["rule"]["weights"], abs=1e-6)
    assert rule.bias == pytest.approx(stored["rule"]["bias"], abs=1e-6)
    shipped = load_manifest().ensemble
    if stored["applied"]:
        assert shipped is not None and shipped.members == rule.members
        assert shipped.weights == pytest.approx(rule.weights, abs=1e-6)
    else:
        assert shipped is None and stored["decision"]
