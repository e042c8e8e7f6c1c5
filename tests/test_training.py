"""deepfake-train on a tiny set made here: the loss falls, the outputs are a usable member."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from detector.training import BatchMaker, Crops, TrainConfig, load_config, train, upsert


def _tiny_set(folder, n=24, size=64, seed=0):
    """Reals: smooth colour fields. Fakes: the same with a sharp bright blob (learnable)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        base = np.zeros((size, size, 3), np.float32)
        base += rng.uniform(40, 200, 3)
        base += np.linspace(0, rng.uniform(-40, 40), size)[None, :, None]
        for label in ("real", "fake"):
            img = base.copy()
            if label == "fake":
                y, x = rng.integers(8, size - 24, 2)
                img[y:y + 16, x:x + 16] = 255
            name = f"{label}_{i}.png"
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / name)
            rows.append({"path": name, "label": label, "original_video": f"v{i}"})
    with open(folder / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["path", "label", "original_video"])
        w.writeheader()
        w.writerows(rows)
    return folder / "labels.csv"


def test_a_few_steps_lower_the_loss_and_write_a_member(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPFAKE_CACHE_DIR", str(tmp_path / "cache"))
    labels = _tiny_set(tmp_path)
    cfg = TrainConfig(name="tiny", architecture="meve_lite0", init="imagenet", input_size=64,
                      data=[{"labels": labels, "group": "original_video", "crop": {"margin": 1.0}}],
                      sbi_share=0.0,
                      augment=False, steps=30, batch_size=8, lr=1e-3, val_every=0,
                      split={"val": 0.25, "calibration": 0.25, "test": 0.2}, schedule="constant",
                      threads=2, out_dir=tmp_path / "runs", training_data="made in the test")
    rec = train(cfg, log_every=5)
    curve = rec["loss_curve"]
    assert len(curve) == 6
    assert np.mean(curve[-2:]) < 0.7 * curve[0], curve  # the loss falls
    # the split kept every original video on one side
    c = rec["counts"]
    assert c["train"] + c["val"] + c["calibration"] + c["test"] == 48
    assert all(c[k] % 2 == 0 for k in ("train", "val", "calibration", "test"))  # a real and its fake together
    # fp16 safetensors whose sha256 is the one recorded, and a manifest entry that loads
    from safetensors.torch import load_file

    from detector.hashing import sha256_file
    from detector.manifest import Member

    out = tmp_path / "runs" / "tiny"
    weights = out / "tiny-1.0.0.safetensors"
    sd = load_file(str(weights))
    assert {str(v.dtype) for v in sd.values() if v.is_floating_point()} == {"torch.float16"}
    assert sha256_file(weights) == rec["weights"]["sha256"]
    entry = Member.model_validate_json((out / "manifest-entry.json").read_text())
    assert entry.weights.sha256 == rec["weights"]["sha256"] and entry.input_size == 64
    assert entry.calibration["method"] == "platt" and entry.metrics["val_auc"] > 0.5
    record = json.loads((out / "training-record.json").read_text())
    assert record["config"]["lr"] == 1e-3 and record["data"][0]["sha256"] == sha256_file(labels)

    # the entry is a member the ensemble scores with: fakes above reals
    from detector.ensemble import Ensemble
    from detector.manifest import Manifest
    from detector.weights import WeightStore

    manifest_path = tmp_path / "manifest.json"
    upsert(manifest_path, entry)
    upsert(manifest_path, entry)  # replaces, never duplicates
    manifest = Manifest.model_validate_json(manifest_path.read_text())
    assert [m.name for m in manifest.members] == ["tiny"]
    store = WeightStore(tmp_path / "weights")
    store.import_file(entry, weights)
    ens = Ensemble(manifest, store).load()
    reals = [np.asarray(Image.open(tmp_path / f"real_{i}.png")) for i in range(24)]
    fakes = [np.asarray(Image.open(tmp_path / f"fake_{i}.png")) for i in range(24)]
    mean, _ = ens.predict(reals + fakes)
    assert mean[24:].mean() > mean[:24].mean() + 0.2


def test_batches_are_half_real_and_make_sbi_fakes_from_real_faces_only():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (10, 64, 64, 3), dtype=np.uint8)
    crops = Crops(imgs, np.zeros(10, np.int64), np.array([str(i) for i in range(10)]))
    cfg = TrainConfig(name="x", architecture="meve_lite0", data=[], batch_size=8, augment=True)
    make = BatchMaker(crops, np.arange(10), np.zeros((0, 64, 64, 3), np.uint8), cfg, 64)
    x, y = make()
    assert x.shape == (8, 64, 64, 3) and x.dtype == np.uint8
    assert y.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]  # no fake in the data: every fake is an SBI


def test_real_only_sets_are_seen_as_reals_as_well_as_blended():
    """LFW-like sets fill the real half too (else "looks like LFW" would mean "fake");
    ``sbi_sources_as_real = false`` keeps them out of it, as 2.0.0 was trained."""
    own = np.full((20, 16, 16, 3), 10, np.uint8)  # the dataset's reals
    extra = np.full((20, 16, 16, 3), 200, np.uint8)  # a real-only set (SBI source)
    crops = Crops(own, np.zeros(20, np.int64), np.array([str(i) for i in range(20)]))

    def real_half(as_real):
        cfg = TrainConfig(name="x", architecture="meve_lite0", data=[], batch_size=32, augment=False,
                          sbi_sources_as_real=as_real)
        make = BatchMaker(crops, np.arange(20), extra, cfg, 16)
        seen = np.concatenate([make()[0][:16] for _ in range(20)])  # the real halves of 20 batches
        return (seen.reshape(len(seen), -1)[:, 0] == 200).mean()

    share = real_half(True)
    assert 0.35 < share < 0.65, share  # 20 of 40 reals come from the real-only set
    assert real_half(False) == 0.0


def _widths_set(folder):
    """Four videos: v0 and v1 with a narrow real face (40 px in its frame), v2 and v3 wide."""
    rows = []
    for i in range(4):
        for label in ("real", "fake"):
            name = f"{label}_{i}.png"
            Image.fromarray(np.full((16, 16, 3), 30 if label == "real" else 220, np.uint8)).save(folder / name)
            rows.append({"path": name, "label": label, "original_video": f"v{i}",
                         "orig_crop_w": 40 if (label == "real" and i < 2) else 150})
    with open(folder / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["path", "label", "original_video", "orig_crop_w"])
        w.writeheader()
        w.writerows(rows)
    return folder / "labels.csv"


def test_narrow_faces_stay_out_of_training_only(tmp_path, monkeypatch):
    from detector.training import DataSource, load_crops

    labels = _widths_set(tmp_path)
    src = DataSource(labels=labels, group="original_video", crop={"margin": 1.0}, train_min_width=100)
    crops = load_crops(src, 16, 0, tmp_path / "cache")
    assert crops.trainable.tolist() == [False, True, False, True, True, True, True, True]
    again = load_crops(src, 16, 0, tmp_path / "cache")  # from the cache: the same, by row
    assert again.trainable.tolist() == crops.trainable.tolist()
    assert load_crops(DataSource(labels=labels, crop={"margin": 1.0}), 16, 0, tmp_path / "cache").trainable is None
    with pytest.raises(ValueError, match="no column 'width'"):
        load_crops(DataSource(labels=labels, train_min_width=100, width_column="width"), 16, 0, tmp_path / "c2")

    # through a run: the narrow reals are left out of the training side, counted, and no
    # other side loses a row
    monkeypatch.setenv("DEEPFAKE_CACHE_DIR", str(tmp_path / "cache"))
    cfg = TrainConfig(name="w", architecture="meve_lite0", init="none", input_size=16,
                      data=[src], sbi_share=0.0, augment=False, steps=2, batch_size=4, val_every=0,
                      split={"val": 0.0, "calibration": 0.0, "test": 0.0}, threads=2,
                      out_dir=tmp_path / "runs", training_data="made in the test")
    rec = train(cfg, log_every=1)
    assert rec["counts"]["train"] == 6 and rec["counts"]["train_narrow_left_out"] == 2
    assert rec["counts"]["train_fake"] == 4


def test_config_paths_are_relative_to_the_config_and_overrides_apply(tmp_path):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "run.toml").write_text(
        'name = "m"\narchitecture = "meve_lite0"\nsteps = 100\n[[data]]\nlabels = "../data/labels.csv"\n')
    cfg = load_config(tmp_path / "cfg" / "run.toml", ["steps=7", "lr=0.001"])
    assert cfg.steps == 7 and cfg.lr == 0.001
    assert cfg.data[0].labels == (tmp_path / "data" / "labels.csv").resolve()


def test_a_config_without_real_faces_is_refused():
    crops = Crops(np.zeros((4, 8, 8, 3), np.uint8), np.ones(4, np.int64), np.array(list("abcd")))
    cfg = TrainConfig(name="x", architecture="meve_lite0", data=[])
    with pytest.raises(ValueError, match="no real training faces"):
        BatchMaker(crops, np.arange(4), np.zeros((0, 8, 8, 3), np.uint8), cfg, 8)


def test_resume_continues_a_run_bit_for_bit(tmp_path, monkeypatch):
    """N steps, an interruption, --resume for M more == N + M steps in one go: same losses,
    same weights (augmentation, Self-Blended Images, dropout and the schedule all included)."""
    monkeypatch.setenv("DEEPFAKE_CACHE_DIR", str(tmp_path / "cache"))
    labels = _tiny_set(tmp_path, n=16)

    def cfg(out):
        return TrainConfig(name="r", architecture="meve_lite0", init="none", input_size=64,
                           data=[{"labels": labels, "group": "original_video", "crop": {"margin": 1.0}}],
                           sbi_share=0.5, augment=True,
                           steps=10, warmup_steps=3, batch_size=8, lr=1e-3, val_every=4, patience=None,
                           split={"val": 0.25, "calibration": 0.25, "test": 0.2}, threads=2,
                           checkpoint_every_s=3600, out_dir=out, training_data="made in the test")

    straight = train(cfg(tmp_path / "a"), log_every=1)
    assert straight["finished"] and straight["steps"] == 10
    first = train(cfg(tmp_path / "b"), log_every=1, stop_after=6)
    assert not first["finished"] and first["step"] == 6
    assert (tmp_path / "b" / "r" / "checkpoint.pt").is_file()
    resumed = train(cfg(tmp_path / "b"), log_every=1, resume=True)
    assert resumed["finished"] and resumed["sessions"] == 2
    assert resumed["loss_curve"] == straight["loss_curve"]  # every step's loss, to the 4th decimal
    assert resumed["lr_curve"] == straight["lr_curve"]
    assert resumed["weights"]["sha256"] == straight["weights"]["sha256"]  # the same bits
    assert [h["auc"] for h in resumed["validation_history"]] == [h["auc"] for h in straight["validation_history"]]
    # the schedule: linear warm-up to lr, then a cosine down to lr_min
    lrs = straight["lr_curve"]
    assert lrs[:3] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3]) and lrs[-1] < lrs[3] and lrs == sorted(lrs[:3]) + lrs[3:]
    # a checkpoint from other settings is refused, not silently continued
    other = cfg(tmp_path / "b").model_copy(update={"lr": 5e-4})
    with pytest.raises(ValueError, match="other settings"):
        train(other, resume=True)


def test_patience_stops_a_run_whose_validation_curve_has_flattened(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPFAKE_CACHE_DIR", str(tmp_path / "cache"))
    labels = _tiny_set(tmp_path, n=16)
    cfg = TrainConfig(name="p", architecture="meve_lite0", init="none", input_size=64,
                      data=[{"labels": labels, "group": "original_video", "crop": {"margin": 1.0}}],
                      sbi_share=0.0, augment=False,
                      steps=200, batch_size=8, lr=0.0, schedule="constant", val_every=2, patience=2,
                      split={"val": 0.25, "calibration": 0.25, "test": 0.2}, threads=2, out_dir=tmp_path / "runs")
    rec = train(cfg, log_every=1)
    # lr 0: the AUC never improves after the first validation, so the run ends two validations later
    assert rec["steps"] == 6 and rec["stopped_by"] == "patience"
    assert [h["step"] for h in rec["validation_history"]] == [2, 4, 6]
