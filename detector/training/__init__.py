"""``deepfake-train``: train a manifest architecture on face crops; write a manifest entry.

  deepfake-train CONFIG.toml [--set key=value ...] [--manifest PATH]

The config (TOML, see ``training/*.toml``) names the architecture, its initialisation
(``imagenet``: the offline ImageNet weights of its backbone, see
:mod:`detector.models.checkpoints`; ``none``; or a checkpoint file), the data and the
schedule. Data are label files (``path,label[,group]`` as ``deepfake-eval`` reads):

* ``faces = true``: every listed image is already a face crop (as ``../shared/faces``);
* ``faces = false``: videos and images go through the pipeline's own face stage (MTCNN,
  square crops at the pipeline's margin), a few frames per video, the largest face each.

Crops are decoded once and cached as arrays. The split is by a group column
(``original_video`` for DFDC: a fake and its source video stay on the same side), never
by row, into four sides (:mod:`detector.splits`): train, validation (picks the
checkpoint), calibration (fits Platt scaling; the ensemble rule reads it too) and test
(only reported). The crop a member is trained on (margin, shape: :class:`CropSpec`) is
recorded in its manifest entry and the pipeline cuts that crop for it. Batches are half real, half fake; a share of the fakes are
Self-Blended Images made on the fly from real training faces (``sbi_sources`` add
real-only sets, e.g. LFW, for that), so a model can be trained from real faces alone.
Every image then goes through the augmentations of the MeVer paper (Albumentations:
Rotate, HorizontalFlip, ColorJitter, ToGray, MotionBlur, GaussianBlur, ISONoise,
CoarseDropout, RandomSunFlare, RandomRain) and JPEG re-compression. Adam with a
linear warm-up and a cosine decay; channels_last and bfloat16 autocast where the
hardware has it (:mod:`detector.precision`).

A run survives interruption: every ``checkpoint_every_s`` (and on SIGTERM/Ctrl-C) it
writes a checkpoint (weights, optimiser, step, every random generator, curves), and
``--resume`` continues from it bit for bit. ``patience`` stops the run once the
validation AUC has not improved for that many validations (the curve has flattened).

The best validation AUC's weights are written as fp16 safetensors with their sha256,
a training record (config, data hashes, loss and learning-rate curves, validation
history, calibration and test metrics, images seen, hours, versions), and a manifest
entry (``--manifest`` upserts it) whose metrics are the measured ones and whose
calibration is fitted on the calibration split.
"""
# The package's parts, by what they do: config, data, model, loop, artefacts, cli. Their public
# names are re-exported here, so ``from detector.training import train`` keeps working.
from .artefacts import calibrate_members, manifest_entry, upsert
from .cli import main
from .config import RESUMABLE_CHANGES, DataSource, TrainConfig, load_config, lr_at, resolve_crop
from .data import BatchMaker, Crops, FaceStage, augmentations, load_crops
from .loop import train
from .model import build_model, predict_logits, save_weights, to_input

__all__ = ["RESUMABLE_CHANGES", "BatchMaker", "Crops", "DataSource", "FaceStage", "TrainConfig", "augmentations",
           "build_model", "calibrate_members", "load_config", "load_crops", "lr_at", "main", "manifest_entry",
           "predict_logits", "resolve_crop", "save_weights", "to_input", "train", "upsert"]
