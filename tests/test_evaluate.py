import json
import os
import subprocess
import sys

import pytest

from detector.metrics import balanced_accuracy, reliability, roc_auc, roc_curve

from .conftest import ROOT, shared


def test_auc_against_hand_computed_values():
    # pairs (fake, real): (.35,.1) yes, (.35,.4) no, (.8,.1) yes, (.8,.4) yes -> 3/4
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    # a tie between a fake and a real counts half: (1 + .5 + 1 + 1) / 4
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx(0.875)
    assert roc_auc([1, 1, 0], [0.9, 0.8, 0.1]) == 1.0 and roc_auc([1, 1, 0], [0.1, 0.2, 0.9]) == 0.0
    assert roc_auc([1, 1], [0.3, 0.4]) is None  # one class only


def test_balanced_accuracy_against_hand_computed_values():
    assert balanced_accuracy([0, 0, 1, 1], [0.2, 0.6, 0.7, 0.4]) == pytest.approx(0.5)
    # TPR 1/1, TNR 2/3
    assert balanced_accuracy([0, 0, 0, 1], [0.1, 0.2, 0.9, 0.95]) == pytest.approx((1 + 2 / 3) / 2)
    assert balanced_accuracy([0, 1], [0.5, 0.5]) == pytest.approx(0.5)  # 0.5 counts as fake
    assert balanced_accuracy([0, 0], [0.1, 0.9]) is None


def test_roc_curve_and_reliability_bins():
    fpr, tpr = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert (fpr[0], tpr[0]) == (0, 0) and (fpr[-1], tpr[-1]) == (1, 1)
    assert list(zip(fpr, tpr))[1] == (0.0, 0.5)  # the top score is a fake
    bins = reliability([0, 1, 1, 0], [0.05, 0.15, 0.95, 0.91])
    assert bins == [(0.05, 0.0, 1), (0.15, 1.0, 1), (pytest.approx(0.93), 0.5, 2)]


def test_eval_cli_on_face_crops(mesonet_store, tmp_path):
    folder = shared("media", "devset", "face_images")
    rows = ["path,label,manipulation"]
    for name, label in (("df00204.jpg", "fake"), ("df01254.jpg", "fake"),
                        ("real00240.jpg", "real"), ("real00772.jpg", "real")):
        rows.append(f"{os.path.relpath(folder / name, tmp_path)},{label},{'Deepfake' if label == 'fake' else 'none'}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    env = dict(os.environ, DEEPFAKE_WEIGHTS_DIR=str(mesonet_store.root))
    out = subprocess.run([sys.executable, "-m", "detector.evaluate", str(tmp_path / "labels.csv"), "--faces",
                          "--json", "--out", str(tmp_path / "plots")], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["auc"] == 1.0 and res["balanced_accuracy"] == 1.0  # MesoNet's own test faces
    members = res["face_level"]["members"]
    assert set(members) == {"meso4-df", "meso4-f2f", "mesoinception4-df", "mesoinception4-f2f"}
    assert members["meso4-df"]["auc"] == 1.0 and members["meso4-df"]["n"] == 4
    assert res["per_manipulation"]["Deepfake"]["n"] == 2 and res["per_manipulation"]["real"]["n"] == 2
    for png in res["plots"]:
        assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
