"""Why: a heat map of the parts of a face that moved the ensemble's score (Grad-CAM).

For one face, every member that has a convolutional feature map scores its own crop with
gradients on; the ensemble's score (its combined logit, under the rule in use) is
differentiated with respect to each member's last spatial feature map A (Selvaraju et al.,
2017): weights α_k = mean over space of ∂score/∂A_k, map = ReLU(Σ_k α_k A_k). Each member's
map is normalised to [0, 1], laid over the display crop (members cut their own crops:
each map is placed where that crop lies in the display crop), and the members' maps are
averaged where they cover it.

What it shows, and what not (said in the model card too): where, in the pixels the
members saw, a change would most raise the score; it is coarse (7x7 to 32x32 cells for
these networks), it is not a segmentation of manipulated pixels, and a map on an authentic
face shows what the models looked at all the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .faces import CropSpec, resize_square

HEATMAP_SIDE = 160  # px of the overlay stored in the report
# One sentence a non-expert can follow, by what the map explains: the face's verdict side.
SENTENCE = {
    "manipulated": ("Highlighted: the parts of this face that pushed the detectors towards 'manipulated' the most "
                    "(red: most). It shows where the models looked, not proof of what was changed."),
    "authentic": ("Highlighted: the parts of this face that pushed the detectors towards 'authentic' the most "
                  "(red: most). It shows where the models looked, not proof that nothing was changed."),
}


def _last_feature_map(model, run):
    """Call ``run()`` (which runs ``model``) and return (its output, the last 4-D activation of
    ``model`` with a spatial extent)."""
    import torch

    seen = []

    def hook(_module, _inputs, out):
        if isinstance(out, torch.Tensor) and out.dim() == 4 and min(out.shape[-2:]) >= 2 and out.requires_grad:
            seen.append(out)

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        out = run()
    finally:
        for h in handles:
            h.remove()
    return out, (seen[-1] if seen else None)


def _placement(member: CropSpec, display: CropSpec, box) -> tuple[float, float]:
    """The member crop's width and height as fractions of the display crop's side (both
    centred on the box centre)."""
    x1, y1, x2, y2 = box
    w, h = max(1.0, x2 - x1), max(1.0, y2 - y1)
    side = max(w, h) * display.margin
    if member.shape == "square":
        f = max(w, h) * member.margin / side
        return f, f
    return w * member.margin / side, h * member.margin / side


def _paste(cam: np.ndarray, frac: tuple[float, float], side: int) -> tuple[np.ndarray, np.ndarray]:
    """``cam`` (the member crop's map) resized into its place on a ``side`` square canvas;
    with the mask of the pixels it covers."""
    import cv2

    fw, fh = frac
    pw, ph = max(1, int(round(fw * side))), max(1, int(round(fh * side)))
    big = np.clip(cv2.resize(cam.astype(np.float32), (pw, ph), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
    left, top = (side - pw) // 2, (side - ph) // 2
    canvas = np.zeros((side, side), np.float32)
    mask = np.zeros((side, side), np.float32)
    cx1, cy1 = max(0, left), max(0, top)
    cx2, cy2 = min(side, left + pw), min(side, top + ph)
    if cx2 > cx1 and cy2 > cy1:
        canvas[cy1:cy2, cx1:cx2] = big[cy1 - top:cy2 - top, cx1 - left:cx2 - left]
        mask[cy1:cy2, cx1:cx2] = 1.0
    return canvas, mask


@dataclass
class HeatMap:
    heat: np.ndarray  # side x side in [0, 1], on the display crop
    towards: str  # "manipulated" (the ensemble's score is at least 0.5) or "authentic"
    members: list[str]  # the members whose maps were averaged
    score: float  # the ensemble's score of this face, as the map saw it

    @property
    def sentence(self) -> str:
        return SENTENCE[self.towards]


def grad_cam(ensemble, crops: Mapping[CropSpec, np.ndarray], box, display: CropSpec,
             side: int = HEATMAP_SIDE) -> HeatMap | None:
    """The ensemble's heat map of one face on its display crop, for the side of 0.5 its
    score is on (what made it look manipulated, or authentic); None when no member has a
    spatial feature map or nothing pushed that way. ``crops`` are the face's member crops
    (crop spec -> RGB), as the pipeline cut them."""
    import torch

    ensemble.load()
    members = ensemble.members
    logits, acts = [], []
    with torch.enable_grad():
        for m in members:
            arr = resize_square(crops[m.crop], m.input_size)
            x = torch.from_numpy(arr[None]).to(ensemble.device).permute(0, 3, 1, 2).float().div(255.0)
            x.requires_grad_(True)  # so that every activation is part of the graph
            out, act = _last_feature_map(m.model, lambda m=m, x=x: m.logits(x))  # its calibrated logit
            logits.append(out.reshape(-1)[:1])
            acts.append(act)
        p = ensemble.combine(torch.stack(logits)).clamp(1e-6, 1 - 1e-6)
        score = float(p.detach().reshape(-1)[0])
        towards = "manipulated" if score >= 0.5 else "authentic"
        logit = torch.log(p / (1 - p)).sum()  # the ensemble's score, before the sigmoid
        target = logit if towards == "manipulated" else -logit
        usable = [(m, a) for m, a in zip(members, acts) if a is not None]
        if not usable:
            return None
        grads = torch.autograd.grad(target, [a for _, a in usable], allow_unused=True)
    total = np.zeros((side, side), np.float32)
    cover = np.zeros((side, side), np.float32)
    used = []
    for (m, a), g in zip(usable, grads):
        if g is None:
            continue
        alpha = g.float().mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((alpha * a.float()).sum(1))[0].detach().cpu().numpy()
        if cam.max() <= 0:
            continue
        canvas, mask = _paste(cam / cam.max(), _placement(m.crop, display, box), side)
        total += canvas
        cover += mask
        used.append(m.member.name)
    if not used:
        return None
    heat = np.where(cover > 0, total / np.maximum(cover, 1e-6), 0.0).astype(np.float32)
    return HeatMap(heat / heat.max() if heat.max() > 0 else heat, towards, used, score)


def overlay(crop: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The face crop (RGB) with the heat map laid over it in a red-yellow colour map."""
    import cv2

    side = heat.shape[0]
    face = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
    colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    weight = (alpha * np.clip(heat * 1.5, 0, 1))[..., None]  # cold regions stay the face itself
    return (face * (1 - weight) + colour * weight).astype(np.uint8)

