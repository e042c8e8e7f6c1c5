#!/usr/bin/env bash
# Regenerate detector/measurements/ (the model card's numbers) with the installed ensemble.
# Needs ../shared (devset and DFDC faces). CPU: about 15 minutes.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SHARED="${DEEPFAKE_SHARED:-$ROOT/../shared}"
BIN="$ROOT/.venv/bin"
OUT="$ROOT/detector/measurements"
mkdir -p "$OUT"
"$BIN/deepfake-eval" "$SHARED/media/devset/labels.csv" --out "$ROOT/eval-out/devset" --save "$OUT/eval-devset.json"
"$BIN/deepfake-eval" "$SHARED/faces/dfdc/labels.csv" --faces --split-by original_video --limit 1200 \
  --out "$ROOT/eval-out/dfdc-val" --save "$OUT/eval-dfdc-val.json"
"$BIN/deepfake-robustness" "$SHARED/faces/dfdc/labels.csv" --faces --group original_video --split val \
  --limit "${ROBUSTNESS_FACES:-128}" --out "$OUT/robustness.json"
