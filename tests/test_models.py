import json

import numpy as np
import pytest
import torch

from detector.ensemble import Ensemble
from detector.errors import NoTrainedWeights
from detector.manifest import Manifest, Member, WeightsRef, load_manifest
from detector.models import create_model, list_models
from detector.weights import WeightStore, sha256_of

from .conftest import shared

MEVER = ["meve_effnet_b4", "meve_b4_detr_sine", "meve_b4_detr_learned", "meve_b4_multihead", "meve_effnetv2_m"]


def save_member(tmp_path, arch: str, name: str, seed: int = 0):
    """Save a model's weights as safetensors and declare it in a manifest entry."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = create_model(arch)
    # BatchNorm statistics measured on a batch, as training leaves them: away from their
    # defaults, so a load that skips buffers fails the test, and a net whose activations stay
    # at the scale a trained one has. (With the default statistics a deep random net such as
    # EfficientNetV2-M amplifies float rounding until its logit's sign depends on the memory
    # layout: two correct computations of it gave sigmoids 0 and 1.)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the calibration batch
    cfg = model.data_config
    x = torch.rand(4, 3, cfg.input_size, cfg.input_size, generator=torch.Generator().manual_seed(seed))
    x = (x - torch.tensor(cfg.mean).view(1, 3, 1, 1)) / torch.tensor(cfg.std).view(1, 3, 1, 1)  # as served
    model.train()
    with torch.no_grad():
        model(x)
    for m in bns:  # a channel the batch left (nearly) constant would amplify rounding 300-fold
        m.running_var.clamp_(min=0.05)
    model.eval()
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    member = Member(name=name, version="0.0.1", architecture=arch, training_data="test fixture",
                    weights=WeightsRef(url=f"https://example.invalid/{name}.safetensors",
                                       sha256=sha256_of(path), filename=path.name, format="safetensors"))
    return model, member, path


def test_registry_has_the_five_mever_members_and_mesonet():
    assert set(MEVER + ["mesonet4", "mesoinception4"]) <= set(list_models())
    with pytest.raises(KeyError):
        create_model("resnet9000")


@pytest.mark.parametrize("arch", MEVER + ["mesonet4", "mesoinception4"])
def test_forward_and_weight_round_trip(tmp_path, arch):
    model, member, path = save_member(tmp_path, arch, arch.replace("_", "-"))
    cfg = model.data_config
    expected_size = 256 if arch.startswith("meso") else 300
    assert cfg.input_size == expected_size and len(cfg.mean) == len(cfg.std) == 3
    x = torch.rand(2, 3, cfg.input_size, cfg.input_size)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2,) and torch.isfinite(y).all()

    store = WeightStore(tmp_path / "cache")
    store.import_file(member, path)
    assert store.status(member) == "verified"
    ens = Ensemble(Manifest(members=[member]), store, "cpu").load()
    crops = [np.random.default_rng(i).integers(0, 256, (cfg.input_size, cfg.input_size, 3), dtype=np.uint8)
             for i in range(2)]
    mean, per = ens.predict(crops)
    t = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255
    t = (t - torch.tensor(cfg.mean).view(1, 3, 1, 1)) / torch.tensor(cfg.std).view(1, 3, 1, 1)
    with torch.no_grad():
        direct = torch.sigmoid(model(t)).numpy()
    np.testing.assert_allclose(per[member.name], direct, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mean, direct, rtol=1e-4, atol=1e-5)


def test_tampered_weights_are_never_loaded(tmp_path):
    _, member, path = save_member(tmp_path, "mesonet4", "m4")
    store = WeightStore(tmp_path / "cache")
    dest = store.import_file(member, path)
    data = bytearray(dest.read_bytes())
    data[-1] ^= 0xFF
    dest.write_bytes(bytes(data))
    assert store.status(member) == "mismatch"
    with pytest.raises(NoTrainedWeights):
        Ensemble(Manifest(members=[member]), store, "cpu").load()
    wrong = member.model_copy(update={"weights": member.weights.model_copy(update={"sha256": "0" * 64})})
    with pytest.raises(Exception, match="sha256"):
        store.import_file(wrong, path)


def test_no_trained_weights_is_a_clear_refusal(tmp_path):
    store = WeightStore(tmp_path / "empty")
    ens = Ensemble(load_manifest(), store, "cpu")
    with pytest.raises(NoTrainedWeights) as e:
        ens.load()
    assert "deepfake-weights fetch" in e.value.detail and "deepfake-weights import" in e.value.detail
    man = load_manifest()
    # every member of the default ensemble (the rule's) was tried; optional ones (public
    # checkpoints) only once installed
    default = set(man.ensemble.members) if man.ensemble else {m.name for m in man.members if m.default}
    assert {s.name for s in ens.skipped} == default
    # the full-size MeVer designs are declared without weights: asked for, each says so
    untrained = [m.name for m in man.members if m.weights is None]
    assert len(untrained) == 5
    ens = Ensemble(man, store, "cpu", names=untrained)
    with pytest.raises(NoTrainedWeights):
        ens.load()
    assert len(ens.skipped) == 5 and all("no trained weights" in s.reason for s in ens.skipped)


def test_the_packaged_manifest_declares_provenance():
    man = load_manifest()
    for m in man.members:
        assert m.architecture in list_models()
        if m.weights and m.default:
            assert len(m.weights.sha256) == 64
            assert m.weights.url.startswith(("https://", "package://"))
        elif m.weights and m.optional:  # a public checkpoint whose publisher gives no checksum
            assert m.weights.sha256 is None and m.weights.url.startswith("https://")
        if m.weights:
            assert m.licence != "unknown" and m.training_data != "untrained"
    assert json.loads(man.model_dump_json())["members"]


def _write_keras_h5(model: torch.nn.Module, path):
    """Write ``model``'s weights in the Keras 2 h5 layout (layer names in creation order)."""
    import h5py

    with h5py.File(path, "w") as f:
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        fcs = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        for i, c in enumerate(convs, 1):
            g = f.create_group(f"conv2d_{i}/conv2d_{i}")
            g["kernel:0"] = c.weight.detach().numpy().transpose(2, 3, 1, 0)
            g["bias:0"] = c.bias.detach().numpy()
        for i, b in enumerate(bns, 1):
            g = f.create_group(f"batch_normalization_{i}/batch_normalization_{i}")
            g["gamma:0"], g["beta:0"] = b.weight.detach().numpy(), b.bias.detach().numpy()
            g["moving_mean:0"], g["moving_variance:0"] = b.running_mean.numpy(), b.running_var.numpy()
        for i, d in enumerate(fcs, 1):
            g = f.create_group(f"dense_{i}/dense_{i}")
            g["kernel:0"] = d.weight.detach().numpy().T
            g["bias:0"] = d.bias.detach().numpy()


@pytest.mark.parametrize("arch", ["mesonet4", "mesoinception4"])
def test_mesonet_converter_maps_every_layer(tmp_path, arch):
    from detector.convert_mesonet import convert

    torch.manual_seed(1)
    src = create_model(arch).eval()
    for m in src.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    _write_keras_h5(src, tmp_path / "w.h5")
    sd = convert(tmp_path / "w.h5", arch)
    dst = create_model(arch).eval()
    dst.load_state_dict(sd, strict=True)
    x = torch.rand(3, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x))


def test_public_mesonet_weights_separate_their_test_faces(mesonet_store):
    from PIL import Image

    man = load_manifest()
    names = ["meso4-df", "mesoinception4-df"]
    folder = shared("media", "devset", "face_images")
    fakes = [np.asarray(Image.open(folder / n).convert("RGB")) for n in ("df00204.jpg", "df01254.jpg")]
    reals = [np.asarray(Image.open(folder / n).convert("RGB")) for n in ("real00240.jpg", "real00772.jpg")]
    # The converted weights, uncalibrated: the authors' own test faces are separated clearly.
    raw = man.model_copy(update={"members": [m.model_copy(update={"calibration": None}) for m in man.members]})
    mean, _ = Ensemble(raw, mesonet_store, "cpu", names=names).load().predict(fakes + reals)
    assert mean[:2].min() > 0.8 and mean[2:].max() < 0.2
    # Calibrated on DFDC, where MesoNet is weak, the outputs shrink towards the middle, in the same order.
    cal, _ = Ensemble(man, mesonet_store, "cpu", names=names).load().predict(fakes + reals)
    assert all(man.get(n).calibration for n in names)
    assert cal[:2].min() > cal[2:].max() and (np.abs(cal - 0.5) < np.abs(mean - 0.5)).all()
