"""Stage 6, ensemble: every member with verified trained weights scores every face.

Each member reads its own data config (input size, mean, std: the manifest's, else
the architecture's). Faces are resized once per distinct input size, batched, and the
members' fake probabilities averaged. A member without verified weights is never
scored; with no such member at all, loading stops with :class:`NoTrainedWeights`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .calibration import Platt
from .errors import DetectorError, NoTrainedWeights
from .faces import resize_square
from .manifest import Manifest, Member
from .weights import WeightStore, load_state_dict

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

    @classmethod
    def load(cls, member: Member, store: WeightStore, device: str) -> "MemberModel":
        from .models import create_model

        path = store.verified_path(member)
        model = create_model(member.architecture)
        model.load_state_dict(load_state_dict(member, path, model), strict=True)
        model.eval().to(device)
        cfg = model.data_config
        return cls(member, model, member.input_size or cfg.input_size,
                   tuple(member.mean or cfg.mean), tuple(member.std or cfg.std),
                   store.expected_sha256(member),
                   Platt.model_validate(member.calibration) if member.calibration else None)

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

    def predict(self, batch):
        """Calibrated fake probabilities for a float tensor (N, 3, H, W) in [0, 1]."""
        import torch

        with torch.inference_mode():
            return torch.sigmoid(self.logits(batch))


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


class Ensemble:
    def __init__(self, manifest: Manifest, store: WeightStore, device: str = "cpu",
                 names: list[str] | None = None, batch_size: int = 32):
        self.manifest = manifest
        self.store = store
        self.device = device
        self.names = names
        self.batch_size = batch_size
        self.members: list[MemberModel] = []
        self.skipped: list[Skipped] = []

    def candidates(self) -> list[Member]:
        if self.names:
            return [self.manifest.get(n) for n in self.names]
        # Default members, and optional ones (public detectors) once their weights are installed.
        return [m for m in self.manifest.members
                if m.default or (m.optional and m.weights is not None and self.store.status(m) == "verified")]

    def load(self) -> "Ensemble":
        if self.members:
            return self
        for member in self.candidates():
            try:
                self.members.append(MemberModel.load(member, self.store, self.device))
            except DetectorError as e:  # untrained, missing or failing its sha256
                self.skipped.append(Skipped(member.name, e.detail))
                log.info("member %s not scored: %s", member.name, e.detail)
        if not self.members:
            raise NoTrainedWeights(HOW_TO_GET_WEIGHTS)
        return self

    def predict(self, crops: list[np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Mean fake probability per RGB crop, and each member's probabilities."""
        import torch

        self.load()
        per_member: dict[str, np.ndarray] = {}
        if not crops:
            return np.zeros(0, dtype=np.float32), {m.member.name: np.zeros(0) for m in self.members}
        resized = {size: np.stack([resize_square(c, size) for c in crops])
                   for size in {m.input_size for m in self.members}}
        for m in self.members:
            arr = resized[m.input_size]
            out = []
            for i in range(0, len(arr), self.batch_size):
                x = torch.from_numpy(arr[i:i + self.batch_size]).to(self.device)
                x = x.permute(0, 3, 1, 2).float().div_(255.0)
                out.append(m.predict(x).cpu().numpy())
            per_member[m.member.name] = np.concatenate(out)
        mean = np.mean(np.stack(list(per_member.values())), axis=0)
        return mean.astype(np.float32), per_member
