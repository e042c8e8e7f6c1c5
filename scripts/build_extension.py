"""Build the browser extension's zip (what a user loads or the stores publish).

    python scripts/build_extension.py        ->  dist/deepfake-check-extension-<version>.zip
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "browser_extension"
FILES = ("manifest.json", "background.js", "api.js", "popup.html", "popup.js", "options.html", "options.js",
         "style.css", "icon128.png")


def build(out_dir: Path = ROOT / "dist") -> Path:
    manifest = json.loads((SRC / "manifest.json").read_text())
    missing = [f for f in FILES if not (SRC / f).is_file()]
    if missing:
        raise SystemExit(f"missing from browser_extension/: {missing}")
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"deepfake-check-extension-{manifest['version']}.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for f in FILES:
            z.write(SRC / f, f)
    return out


if __name__ == "__main__":
    print(build())
