"""``deepfake-weights``: see and fill the weights cache.

  deepfake-weights list             each manifest member and the state of its weights
  deepfake-weights fetch [NAME...]  download from the manifest URLs, verify sha256
  deepfake-weights import DIR       copy files of DIR that match a member's sha256
  deepfake-weights convert-mesonet IN.h5 ARCH OUT.safetensors
                                    convert public MesoNet Keras weights to safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import DetectorError
from .manifest import load_manifest
from .settings import DetectorSettings
from .weights import WeightStore

STATUS_TEXT = {
    "verified": "ok (sha256 verified)",
    "missing": "not downloaded: run `deepfake-weights fetch`",
    "mismatch": "FAILS its sha256 check: delete it and fetch again",
    "untrained": "no trained weights yet (never scored)",
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="deepfake-weights", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list")
    f = sub.add_parser("fetch")
    f.add_argument("names", nargs="*")
    i = sub.add_parser("import")
    i.add_argument("folder", type=Path)
    c = sub.add_parser("convert-mesonet")
    c.add_argument("h5", type=Path)
    c.add_argument("architecture", choices=["mesonet4", "mesoinception4"])
    c.add_argument("out", type=Path)
    args = p.parse_args(argv)

    settings = DetectorSettings()
    manifest = load_manifest()
    store = WeightStore(settings.resolved_weights_dir())
    if args.cmd == "list":
        print(f"weights cache: {store.root}")
        for m in manifest.members:
            print(f"  {m.name:<22} {m.architecture:<22} {STATUS_TEXT[store.status(m)]}")
        return 0
    if args.cmd == "fetch":
        failed = 0
        for m in manifest.members:
            if m.weights is None or (args.names and m.name not in args.names):
                continue
            try:
                print(f"  {m.name}: {store.fetch(m)}")
            except DetectorError as e:
                failed += 1
                print(f"  {m.name}: {e.detail}", file=sys.stderr)
        return 1 if failed else 0
    if args.cmd == "import":
        done = store.import_dir(args.folder, manifest.members)
        for m, path in done:
            print(f"  imported {m.name} -> {path}")
        if not done:
            print(f"no file in {args.folder} matches a manifest sha256", file=sys.stderr)
            return 1
        return 0
    if args.cmd == "convert-mesonet":
        from safetensors.torch import save_file

        from .convert_mesonet import convert

        sd = convert(args.h5, args.architecture)
        save_file({k: v.contiguous() for k, v in sd.items()}, str(args.out))
        print(f"wrote {args.out}")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
