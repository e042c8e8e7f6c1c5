"""Does a member call a face fake for *where it comes from*? Mean P(fake) by source.

  python bench/source_bias.py [--shared ../shared] [--n 300]   (DEEPFAKE_MEMBERS, DEEPFAKE_MANIFEST apply)

Every face here is scored by the ensemble as the pipeline scores it (each member's
calibration; LFW photos through the pipeline's face stage and each member's own crop):

* LFW reals (press photos): a model that saw LFW only as Self-Blended fakes calls them fake;
* DFDC test-side reals, 100 px and wider in their frame, and narrower (every narrow DFDC
  face is real: a model trained on them can read "blurry" as "real");
* DFDC test-side fakes.

For each: n, mean P(fake) and the share at or above the "likely manipulated" band. The
DFDC rows are the test side (detector/splits.py); the LFW faces are a random sample of a
set the members may have trained on, so the LFW row says what the model learnt about
that kind of photo, not how it generalises.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image

from detector.faces import FaceDetector
from detector.pipeline import Analyzer
from detector.report import MANIPULATED_FROM
from detector.settings import DetectorSettings
from detector.splits import split_by_group


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    settings = DetectorSettings()
    analyzer = Analyzer(settings).load()
    ens = analyzer.ensemble
    specs = list(ens.crop_specs())
    rng = np.random.default_rng(a.seed)

    rows = list(csv.DictReader(open(a.shared / "faces" / "dfdc" / "labels.csv")))
    test = split_by_group([r["original_video"] for r in rows])["test"]
    fake = np.array([rows[i]["label"] == "fake" for i in test])
    wide = np.array([float(rows[i]["orig_crop_w"]) >= 100 for i in test])
    dfdc = a.shared / "faces" / "dfdc"

    def sample(idx, n):
        return [np.asarray(Image.open(dfdc / rows[i]["path"]).convert("RGB"))
                for i in rng.choice(idx, min(n, len(idx)), replace=False)]

    groups = {"DFDC test reals >= 100 px": sample(test[~fake & wide], a.n),
              "DFDC test reals < 100 px": sample(test[~fake & ~wide], a.n),
              "DFDC test fakes": sample(test[fake], a.n)}
    lfw_rows = list(csv.DictReader(open(a.shared / "faces" / "lfw" / "labels.csv")))
    det = FaceDetector(analyzer.device, settings.face_min_prob, settings.face_min_size, settings.detect_max_side,
                       full_res_refine=settings.detect_full_res_refine, min_face_px=settings.detect_min_face_px)
    lfw = []
    for k in rng.choice(len(lfw_rows), a.n, replace=False):
        rgb = np.asarray(Image.open(a.shared / "faces" / "lfw" / lfw_rows[k]["path"]).convert("RGB"))
        found = det.detect([rgb])[0]
        if found:
            d = max(found, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
            lfw.append({spec: spec.cut(rgb, d.box) for spec in specs})
    groups = {"LFW reals (face stage)": lfw, **groups}
    print(f"members: {', '.join(m.member.name + ' ' + m.member.version for m in ens.members)}")
    print(f"{'faces':28} {'n':>5} {'mean P(fake)':>13} {'>= ' + str(MANIPULATED_FROM):>8}")
    for name, faces in groups.items():
        p = np.concatenate([ens.score(faces[i:i + 64]).combined for i in range(0, len(faces), 64)])
        print(f"{name:28} {len(p):5d} {p.mean():13.3f} {(p >= MANIPULATED_FROM).mean():8.2f}")


if __name__ == "__main__":
    main()
