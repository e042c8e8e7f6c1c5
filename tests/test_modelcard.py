"""The model card is built from stored measurements, and the bots' summary from the card."""

import json

from bots.core import about_lines
from detector.modelcard import model_card
from extension_api.pages import model_card_page


def _write_measurements(folder):
    from detector.manifest import load_manifest
    from detector.modelcard import default_members

    default = sorted(default_members(load_manifest()))
    folder.mkdir()
    lvl = {"ensemble": {"n": 53, "auc": 0.912, "balanced_accuracy": 0.801},
           "members": {"meve-lite0": {"n": 53, "auc": 0.9, "balanced_accuracy": 0.79}}}
    (folder / "eval-devset.json").write_text(json.dumps({
        "rows": 54, "data": {"labels": "devset/labels.csv", "split": "all", "members": default},
        "video_level": lvl, "face_level": lvl,
        "per_manipulation": {"real": {"n": 10, "mean_score": 0.2, "accuracy": 0.9}}}))
    other = {"ensemble": {"n": 53, "auc": 0.5, "balanced_accuracy": 0.5}, "members": {}}
    (folder / "eval-devset-other-members.json").write_text(json.dumps({
        "rows": 54, "data": {"labels": "devset/labels.csv", "split": "all", "members": ["meve-lite0"]},
        "video_level": other}))
    (folder / "robustness.json").write_text(json.dumps({
        "data": "dfdc val", "n": 8, "n_fake": 4, "members": ["meve-lite0"], "rows": [
            {"attack": "none", "norm": None, "eps": 0, "iterations": 0, "balanced_accuracy": 0.8, "auc": 0.9,
             "fakes_detected": 0.75},
            {"attack": "PGD", "norm": "Linf", "eps": 0.03, "iterations": 10, "balanced_accuracy": 0.5,
             "auc": 0.1, "fakes_detected": 0.0}]}))


def test_card_carries_the_measurements_and_the_bots_summarise_them(tmp_path):
    _write_measurements(tmp_path / "m")
    card = model_card(folder=tmp_path / "m")
    assert [e["name"] for e in card["evaluations"]] == ["devset", "devset-other-members"]
    assert [e["default_ensemble"] for e in card["evaluations"]] == [True, False]
    assert card["evaluations"][0]["video_level"]["ensemble"]["auc"] == 0.912
    assert card["robustness"]["rows"][1]["balanced_accuracy"] == 0.5
    assert card["reliability_gate"]["min_face_px"] == 64 and card["version_history"]
    use, measured, caveats = about_lines(card)
    assert "devset: AUC 0.91, balanced accuracy 0.80 on 53 videos" in measured
    assert not any("other-members" in m for m in measured)  # chats summarise what users get
    assert any("falls from 0.80 to 0.50" in m for m in measured)
    assert use and caveats
    html = model_card_page(card)
    assert "Robustness" in html and "0.912" in html and "Version history" in html
    assert "the default ensemble" in html and "members: meve-lite0" in html


def test_card_without_measurements_still_describes_the_members(tmp_path):
    card = model_card(folder=tmp_path / "none")
    assert card["evaluations"] == [] and card["robustness"] is None
    assert any(m["trained"] for m in card["members"])
    _, measured, _ = about_lines(card)
    assert measured and measured[-1].startswith("detectors: ")
