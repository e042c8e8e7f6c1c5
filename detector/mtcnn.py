"""MTCNN at two resolutions: proposals on a small frame, the final judgement on the full one.

MTCNN's cost is its first two stages: P-Net runs over an image pyramid of the whole frame
and R-Net over every proposal. Both only need to *find* faces, which a frame downscaled
to a max side around 640 px still shows. The third stage (O-Net) decides whether a
proposal is a face and places its box; it sees a 48 x 48 resample of the proposal, and
that resample is sharper when cut from the full-resolution frame than from the small one
(a 107 px face in a 1080p frame is 36 px at 640 px). So stages 1-2 run on the small
frame, the proposals are mapped back, and stage 3 runs on crops of the full frame: its
probabilities are those of a full-resolution detection, at the cost of a small one.

The stages are facenet-pytorch's ``detect_face`` (MIT licence, Tim Esler), with its
networks, weights and helpers; only where each stage reads its pixels differs.
``bench/face_recall.py`` measures what it finds against the 1280 px setting.
"""

from __future__ import annotations

import numpy as np


def detect_two_scale(mtcnn, small: list[np.ndarray], full: list[np.ndarray], scale: float,
                     ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Boxes (K, 4) in full-frame pixels and their probabilities (K,) for each frame.

    ``small[i]`` is ``full[i]`` resized by ``scale`` (<= 1); ``mtcnn`` a facenet-pytorch
    MTCNN whose ``min_face_size`` is in small-frame pixels.
    """
    import torch

    dtype = next(mtcnn.pnet.parameters()).dtype
    imgs = torch.as_tensor(np.stack(small), device=mtcnn.device).permute(0, 3, 1, 2).to(dtype)
    n = len(small)
    found = _stage1(mtcnn, imgs)
    found = found and _stage2(mtcnn, imgs, *found)
    found = found and _stage3(mtcnn, full, scale, *found)
    if not found:
        return [np.zeros((0, 4), np.float32) for _ in range(n)], [np.zeros(0, np.float32) for _ in range(n)]
    boxes, inds = found
    return ([boxes[inds == i, :4].astype(np.float32) for i in range(n)],
            [boxes[inds == i, 4].astype(np.float32) for i in range(n)])


def _normalised(t):
    return (t - 127.5) * 0.0078125


def _stage1(mtcnn, imgs):
    """P-Net over the pyramid of the small frames: square proposals and their frame, or None."""
    import torch
    from facenet_pytorch.models.utils.detect_face import batched_nms, generateBoundingBox, imresample, rerec

    h, w = imgs.shape[2:4]
    m = 12.0 / mtcnn.min_face_size
    minl, scales, s = min(h, w) * m, [], m
    while minl >= 12:
        scales.append(s)
        s, minl = s * mtcnn.factor, minl * mtcnn.factor
    boxes, inds, picks, offset = [], [], [], 0
    for sc in scales:
        reg, probs = mtcnn.pnet(_normalised(imresample(imgs, (int(h * sc + 1), int(w * sc + 1)))))
        b, i = generateBoundingBox(reg, probs[:, 1], sc, mtcnn.thresholds[0])
        boxes.append(b)
        inds.append(i)
        picks.append(batched_nms(b[:, :4], b[:, 4], i, 0.5) + offset)
        offset += b.shape[0]
    boxes, inds = torch.cat(boxes), torch.cat(inds)
    picks = torch.cat(picks)
    boxes, inds = boxes[picks], inds[picks]
    pick = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.7)
    boxes, inds = boxes[pick], inds[pick]
    if len(boxes) == 0:
        return None
    rw, rh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    boxes = torch.stack([boxes[:, 0] + boxes[:, 5] * rw, boxes[:, 1] + boxes[:, 6] * rh,
                         boxes[:, 2] + boxes[:, 7] * rw, boxes[:, 3] + boxes[:, 8] * rh, boxes[:, 4]]).T
    return rerec(boxes), inds


def _stage2(mtcnn, imgs, boxes, inds):
    """R-Net on 24 x 24 resamples of the small frames: the proposals it keeps, refined, or None."""
    import torch
    from facenet_pytorch.models.utils.detect_face import batched_nms, bbreg, fixed_batch_process, imresample, pad, rerec

    h, w = imgs.shape[2:4]
    y, ey, x, ex = pad(boxes, w, h)
    keep = [k for k in range(len(y)) if ey[k] > y[k] - 1 and ex[k] > x[k] - 1]
    data = torch.cat([imresample(imgs[inds[k], :, y[k] - 1:ey[k], x[k] - 1:ex[k]].unsqueeze(0), (24, 24))
                      for k in keep])
    boxes, inds = boxes[keep], inds[keep]
    out = fixed_batch_process(_normalised(data), mtcnn.rnet)
    score = out[1][:, 1]
    ok = score > mtcnn.thresholds[1]
    boxes = torch.cat((boxes[ok, :4], score[ok].unsqueeze(1)), dim=1)
    inds, mv = inds[ok], out[0][ok]
    pick = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.7)
    boxes, inds, mv = boxes[pick], inds[pick], mv[pick]
    if len(boxes) == 0:
        return None
    return rerec(bbreg(boxes, mv)), inds


def _stage3(mtcnn, full: list[np.ndarray], scale: float, boxes, inds):
    """O-Net on 48 x 48 resamples of the full frames: (boxes with probability, frame) as
    numpy arrays in full-frame pixels, or None."""
    import torch
    from facenet_pytorch.models.utils.detect_face import (
        batched_nms_numpy,
        bbreg,
        fixed_batch_process,
        imresample,
        pad,
    )

    dtype = next(mtcnn.onet.parameters()).dtype
    boxes[:, :4] /= scale
    fh, fw = full[0].shape[:2]
    y, ey, x, ex = pad(boxes, fw, fh)
    keep = [k for k in range(len(y)) if ey[k] > y[k] - 1 and ex[k] > x[k] - 1]
    crops = []
    for k in keep:
        crop = torch.as_tensor(np.ascontiguousarray(full[int(inds[k])][y[k] - 1:ey[k], x[k] - 1:ex[k]]),
                               device=mtcnn.device)
        crops.append(imresample(crop.permute(2, 0, 1).unsqueeze(0).to(dtype), (48, 48)))
    if not crops:
        return None
    boxes, inds = boxes[keep], inds[keep]
    out = fixed_batch_process(_normalised(torch.cat(crops)), mtcnn.onet)
    score = out[2][:, 1]
    ok = score > mtcnn.thresholds[2]
    boxes = torch.cat((boxes[ok, :4], score[ok].unsqueeze(1)), dim=1)
    inds, mv = inds[ok], out[0][ok]
    boxes = bbreg(boxes, mv)
    pick = batched_nms_numpy(boxes[:, :4], boxes[:, 4], inds, 0.7, "Min")
    return boxes[pick].cpu().numpy(), inds[pick].cpu().numpy()
