#!/usr/bin/env bash
# Regenerate detector/measurements/ (the model card's numbers): the default ensemble, and
# every member that has weights (per-member numbers for the trained ones). Needs ../shared.
# CPU: about 15 minutes.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SHARED="${DEEPFAKE_SHARED:-$ROOT/../shared}"
BIN="$ROOT/.venv/bin"
OUT="$ROOT/detector/measurements"
ALL='["meso4-df","meso4-f2f","mesoinception4-df","mesoinception4-f2f","meve-lite0","meve-mobilenetv2","meve-lite0-detr-sine","meve-lite0-detr-learned","meve-lite0-multihead"]'
mkdir -p "$OUT"
cd "$ROOT"
"$BIN/deepfake-eval" "$SHARED/media/devset/labels.csv" --out eval-out/devset --save "$OUT/eval-devset.json"
"$BIN/deepfake-eval" "$SHARED/faces/dfdc/labels.csv" --faces --split-by original_video --limit 1200 \
  --out eval-out/dfdc-val --save "$OUT/eval-dfdc-val.json"
DEEPFAKE_MEMBERS="$ALL" "$BIN/deepfake-eval" "$SHARED/media/devset/labels.csv" --out eval-out/devset-all \
  --save "$OUT/eval-devset-with-trained-members.json"
DEEPFAKE_MEMBERS="$ALL" "$BIN/deepfake-eval" "$SHARED/faces/dfdc/labels.csv" --faces --split-by original_video \
  --limit 1200 --out eval-out/dfdc-val-all --save "$OUT/eval-dfdc-val-with-trained-members.json"
"$BIN/deepfake-robustness" "$SHARED/faces/dfdc/labels.csv" --faces --group original_video --split val \
  --limit "${ROBUSTNESS_FACES:-64}" --out "$OUT/robustness.json"
# Paths in the stored results are relative to the repository's parent.
sed -i "s#$(cd "$SHARED" && pwd)#../shared#g" "$OUT"/*.json
