#!/usr/bin/env bash
# Regenerate detector/measurements/ (the model card's numbers) and the default ensemble.
# Needs ../shared. CPU: about 40 minutes. Each step says what it fits or measures; only the
# calibration side of the DFDC faces and the devset choose anything, the test side is only
# reported (detector/splits.py).
#   MEASURE_STEPS="ensemble eval robustness" bash scripts/measure.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SHARED="$(cd "${DEEPFAKE_SHARED:-$ROOT/../shared}" && pwd)"
BIN="$ROOT/.venv/bin"
OUT="$ROOT/detector/measurements"
MANIFEST="$ROOT/detector/manifest.json"
STEPS="${MEASURE_STEPS:-ensemble eval robustness}"  # add "calibrate" to refit the public members' calibration
MESO="meso4-df meso4-f2f mesoinception4-df mesoinception4-f2f"
DFDC="$SHARED/faces/dfdc/labels.csv"
DEVSET="$SHARED/media/devset/labels.csv"
mkdir -p "$OUT" "$ROOT/eval-out"
cd "$ROOT"
has() { [[ " $STEPS " == *" $1 "* ]]; }

# The photos and clips of media/unlabeled are all real: a label file for them.
UNLABELED="$ROOT/eval-out/unlabeled.csv"
{ echo "path,label,manipulation"; for f in "$SHARED"/media/unlabeled/*; do echo "$f,real,none"; done; } > "$UNLABELED"

# 1. Platt calibration of the public members on the calibration side (the trained members
#    fit theirs there when they are trained).
if has calibrate; then
  "$BIN/deepfake-weights" calibrate "$DFDC" $MESO --group original_video --manifest "$MANIFEST" > "$OUT/calibration-public.json"
fi
# 2. Every candidate's scores on the calibration side and the devset, then the written rule
#    (recorded in ensemble-rule.json; applied with `deepfake-ensemble fit ... --manifest`).
if has ensemble; then
  "$BIN/deepfake-ensemble" collect --calibration "$DFDC" --group original_video --devset "$DEVSET" \
    --out "$OUT/ensemble-scores.json"
  "$BIN/deepfake-ensemble" fit "$OUT/ensemble-scores.json" --out "$OUT/ensemble-rule.json" \
    --decision "${ENSEMBLE_DECISION:-$(python3 -c "import json;print(json.load(open('$OUT/ensemble-rule.json'))['decision'])" 2>/dev/null || true)}"
fi
# 3. What users get (the default ensemble), and the rule's choice on the same data.
if has eval; then
  RULED="$ROOT/eval-out/manifest-with-rule.json"
  cp "$MANIFEST" "$RULED"
  "$BIN/deepfake-ensemble" fit "$OUT/ensemble-scores.json" --manifest "$RULED" > /dev/null
  CHOICE=$("$BIN/python" -c "import json; print('-'.join(json.load(open('$OUT/ensemble-rule.json'))['rule']['members']))")
  for who in default rule; do
    suffix=""; env=()
    if [ "$who" = rule ]; then suffix="-$CHOICE"; env=(DEEPFAKE_MANIFEST="$RULED"); fi
    env "${env[@]}" "$BIN/deepfake-eval" "$DFDC" --faces --split-by original_video --side test \
      --out "eval-out/dfdc-test$suffix" --save "$OUT/eval-dfdc-test$suffix.json"
    env "${env[@]}" "$BIN/deepfake-eval" "$DEVSET" --out "eval-out/devset$suffix" --save "$OUT/eval-devset$suffix.json"
    env "${env[@]}" "$BIN/deepfake-eval" "$UNLABELED" --out "eval-out/unlabeled$suffix" \
      --save "$OUT/eval-unlabeled$suffix.json"
  done
fi
# 4. PGD through the default ensemble, on test-side faces.
if has robustness; then
  "$BIN/deepfake-robustness" "$DFDC" --faces --group original_video --split test \
    --limit "${ROBUSTNESS_FACES:-64}" --out "$OUT/robustness.json"
fi
# Paths in the stored results are relative to the repository's parent.
sed -i "s#$SHARED#../shared#g" "$OUT"/*.json
