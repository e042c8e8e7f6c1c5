"""Stage 6, ensemble: every member with verified trained weights scores every face.

Each member reads its own data config (input size, mean, std, and the face crop it was
trained on: the manifest's, else the architecture's / the pipeline's). The face stage
cuts one crop per distinct crop spec from the full-resolution frame; each is resized
once per input size and batched (bfloat16 autocast and channels_last where the
hardware has them, :mod:`detector.precision`). Each member's logit is Platt-calibrated;
the manifest's ensemble rule combines them (logistic stacking fitted on the calibration
split, :mod:`detector.ensemble_rule`), or, for any other set of members, their calibrated
probabilities are averaged. A member without verified weights is never scored; with no
such member at all, loading stops with :class:`NoTrainedWeights`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .calibration import Platt, sigmoid
from .errors import BadSetting, DetectorError, NoTrainedWeights
from .faces import CropSpec, resize_square
from .lazy import LazyModel
from .manifest import EnsembleRule, Manifest, Member
from .precision import autocast
from .weights import WeightStore, load_state_dict

# A face as the ensemble takes it: one crop for every member, or one per crop spec.
FaceCrops = np.ndarray | Mapping[CropSpec, np.ndarray]

log = logging.getLogger(__name__)

HOW_TO_GET_WEIGHTS = (
    "No ensemble member has verified trained weights, so no score can be given. "
    "Run `deepfake-weights fetch` (downloads the manifest's public weights) or "
    "`deepfake-weights import DIR` (copies matching files from a folder, e.g. "
    "../shared/weights/mesonet), then `deepfake-weights list` to check."
)


@dataclass
class MemberModel:
    member: Member
    model: object  # torch.nn.Module
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_sha256: str
    calibration: Platt | None = None
    crop: CropSpec = CropSpec()

    @classmethod
    def load(cls, member: Member, store: WeightStore, device: str,
             default_crop: CropSpec | None = None) -> MemberModel:
        import torch

        from .models import create_model

        path = store.verified_path(member)
        model = create_model(member.architecture)
        model.load_state_dict(load_state_dict(member, path, model), strict=True)
        model.eval().to(device=device, memory_format=torch.channels_last)
        cfg = model.data_config
        return cls(member, model, member.input_size or cfg.input_size,
                   tuple(member.mean or cfg.mean), tuple(member.std or cfg.std),
                   store.expected_sha256(member),
                   Platt.model_validate(member.calibration) if member.calibration else None,
                   member.crop or default_crop or CropSpec())

    def logits(self, batch):
        """The fake logit for a float tensor (N, 3, H, W) in [0, 1] on the device
        (differentiable: the adversarial evaluation attacks through it)."""
        import torch

        mean = torch.tensor(self.mean, device=batch.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=batch.device).view(1, 3, 1, 1)
        z = self.model((batch - mean) / std).float()
        if self.calibration is not None:
            z = self.calibration.a * z + self.calibration.b
        return z


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


class Ensemble(LazyModel):
    def __init__(self, manifest: Manifest, store: WeightStore, device: str = "cpu",
                 names: list[str] | None = None, batch_size: int = 32,
                 default_crop: CropSpec | None = None, precision: str = "fp32", all_bf16: bool = False):
        self.manifest = manifest
        self.store = store
        self.device = device
        self.names = names
        self.batch_size = batch_size
        self.default_crop = default_crop or CropSpec()
        self.precision = precision  # fp32, or bf16 for the members measured to allow it
        self.all_bf16 = all_bf16  # bf16 asked for explicitly: every member under it
        self.members: list[MemberModel] = []
        self.skipped: list[Skipped] = []
        self.rule: EnsembleRule | None = None  # the stacking rule in use, None: the mean

    def candidates(self) -> list[Member]:
        if self.names:
            known = [m.name for m in self.manifest.members]
            unknown = [n for n in self.names if n not in known]
            if unknown:
                raise BadSetting(f"DEEPFAKE_MEMBERS names {', '.join(unknown)}, which the manifest does not "
                                 f"have; its members are: {', '.join(known)}.")
            return [self.manifest.get(n) for n in self.names]
        rule = self.manifest.ensemble
        if rule is not None:
            chosen = [self.manifest.get(n) for n in rule.members]
        else:
            chosen = [m for m in self.manifest.members if m.default]
        # Optional members (public detectors) join once their weights are installed.
        return chosen + [m for m in self.manifest.members if m.optional and m not in chosen
                         and m.weights is not None and self.store.status(m) == "verified"]

    def _load(self) -> None:
        self.members, self.skipped = [], []
        for member in self.candidates():
            try:
                self.members.append(MemberModel.load(member, self.store, self.device, self.default_crop))
            except DetectorError as e:  # untrained, missing or failing its sha256
                self.skipped.append(Skipped(member.name, e.detail))
                log.info("member %s not scored: %s", member.name, e.detail)
        if not self.members:
            raise NoTrainedWeights(HOW_TO_GET_WEIGHTS)
        rule = self.manifest.ensemble
        if rule is not None and rule.method == "logistic" and \
                sorted(rule.members) == sorted(m.member.name for m in self.members):
            self.rule = rule

    @property
    def combination(self) -> str:
        """What the combined score is, in words (for reports and the model card)."""
        self.load()
        if self.rule is not None:
            return "logistic stacking of the calibrated member logits (fitted on the calibration split)"
        return "mean of the calibrated member probabilities"

    def member_precision(self, m: MemberModel) -> str:
        """bf16 only where the hardware has it and the member was measured to allow it (or
        bf16 was asked for outright)."""
        if self.precision == "bf16" and (self.all_bf16 or m.member.bf16_inference):
            return "bf16"
        return "fp32"

    def crop_specs(self) -> dict[CropSpec, int]:
        """Every crop spec the members need, with the largest input size that uses it."""
        out: dict[CropSpec, int] = {}
        for m in self.load().members:
            out[m.crop] = max(out.get(m.crop, 0), m.input_size)
        return out

    def combine(self, logits):
        """The ensemble's probability from the members' calibrated logits, a tensor (M, N)
        in ``self.members`` order (differentiable: the adversarial evaluation uses it)."""
        import torch

        if self.rule is not None:
            w = torch.tensor([self.rule.weights[m.member.name] for m in self.members],
                             dtype=logits.dtype, device=logits.device)
            return torch.sigmoid((w[:, None] * logits).sum(0) + self.rule.bias)
        return torch.sigmoid(logits).mean(0)

    def score(self, crops: Sequence[FaceCrops]) -> FaceScores:
        """Every member's calibrated logit per face, and the ensemble's probability.
        A face is one RGB crop for every member, or a mapping crop spec -> crop."""
        import torch

        self.load()
        names = [m.member.name for m in self.members]
        if not len(crops):
            return FaceScores(np.zeros(0, np.float32), {n: np.zeros(0, np.float32) for n in names})
        resized: dict[tuple[CropSpec, int], np.ndarray] = {}
        per_logit: dict[str, torch.Tensor] = {}
        for m in self.members:
            key = (m.crop, m.input_size)
            if key not in resized:
                resized[key] = np.stack([resize_square(c if isinstance(c, np.ndarray) else c[m.crop],
                                                       m.input_size) for c in crops])
            arr = resized[key]
            out = []
            with torch.inference_mode(), autocast(self.device, self.member_precision(m)):
                for i in range(0, len(arr), self.batch_size):
                    chunk = arr[i:i + self.batch_size]
                    n = len(chunk)
                    x = torch.from_numpy(_padded(chunk, self.batch_size)).to(self.device)
                    x = x.permute(0, 3, 1, 2).float().div_(255.0).contiguous(memory_format=torch.channels_last)
                    out.append(m.logits(x).float().cpu()[:n])
            per_logit[m.member.name] = torch.cat(out)
        combined = self.combine(torch.stack([per_logit[n] for n in names]))
        return FaceScores(combined.numpy().astype(np.float32), {n: v.numpy() for n, v in per_logit.items()})

    def predict(self, crops: Sequence[FaceCrops]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The ensemble's fake probability per face, and each member's calibrated probabilities."""
        s = self.score(crops)
        return s.combined, s.probabilities()


def _padded(chunk: np.ndarray, batch_size: int) -> np.ndarray:
    """The batch padded with black crops to the next power of two (at most ``batch_size``):
    each new batch shape costs oneDNN a kernel set-up on its first use (measured: 15 faces
    scored in 0.58 s the first time, 0.17 s after), so a worker sees six shapes, not 32.
    The members score each crop on its own (BatchNorm in eval mode), so padding changes
    no score."""
    n = len(chunk)
    size = min(batch_size, 1 << max(0, n - 1).bit_length())
    if size <= n:
        return chunk
    return np.concatenate([chunk, np.zeros((size - n, *chunk.shape[1:]), chunk.dtype)])


@dataclass
class FaceScores:
    combined: np.ndarray  # (N,) the ensemble's probability
    logits: dict[str, np.ndarray]  # member -> (N,) calibrated logits

    def probabilities(self) -> dict[str, np.ndarray]:
        return {k: sigmoid(v).astype(np.float32) for k, v in self.logits.items()}
