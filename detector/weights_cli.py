"""``deepfake-weights``: see and fill the weights cache.

  deepfake-weights list             each manifest member and the state of its weights
  deepfake-weights fetch [NAME...]  download from the manifest URLs, verify sha256
  deepfake-weights import DIR       copy files of DIR that match a member's sha256
  deepfake-weights convert-mesonet IN.h5 ARCH OUT.safetensors
                                    convert public MesoNet Keras weights to safetensors
  deepfake-weights import-public NAME FILE [--sha256 HASH]
                                    install a public detector's own file (DFDC B7, SBI B4),
                                    checked against the manifest's sha256 or pinned to HASH
  deepfake-weights calibrate LABELS.csv --manifest PATH [--group COL] [NAME...]
                                    fit each member's calibration on the calibration split
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
    "unpinned": "present, but no sha256 is pinned: `deepfake-weights import-public NAME FILE --sha256 HASH`",
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
    ip = sub.add_parser("import-public")
    ip.add_argument("name")
    ip.add_argument("file", type=Path)
    ip.add_argument("--sha256", help="the sha256 you checked the file against (pins it)")
    cal = sub.add_parser("calibrate")
    cal.add_argument("labels", type=Path)
    cal.add_argument("names", nargs="*")
    cal.add_argument("--manifest", type=Path, required=True, help="manifest file to write the calibrations into")
    cal.add_argument("--group", default="original_video")
    cal.add_argument("--limit", type=int, default=None, help="balanced subset of the calibration split")
    args = p.parse_args(argv)

    settings = DetectorSettings()
    manifest = load_manifest(getattr(args, "manifest", None))
    store = WeightStore(settings.resolved_weights_dir())
    if args.cmd == "list":
        print(f"weights cache: {store.root}")
        for m in manifest.members:
            st = store.status(m)
            text = ("optional, not installed: download it, then `deepfake-weights import-public`"
                    if m.optional and st == "missing" else STATUS_TEXT[st])
            print(f"  {m.name:<22} {m.architecture:<22} {text}")
        return 0
    if args.cmd == "fetch":
        failed = 0
        for m in manifest.members:
            if m.weights is None or (args.names and m.name not in args.names):
                continue
            if not args.names and m.optional:  # public checkpoints without a checksum: only when named
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
    if args.cmd == "import-public":
        from .hashing import sha256_file

        member = manifest.get(args.name)
        got = sha256_file(args.file)
        if member.weights is None:
            print(f"{member.name} takes no weights file", file=sys.stderr)
            return 1
        if member.weights.sha256 is None:
            if not args.sha256:
                print(f"{member.name}: its publisher gives no sha256. The file's is\n  {got}\n"
                      "check it against a copy you trust, then repeat with --sha256 HASH", file=sys.stderr)
                return 1
            if args.sha256.lower() != got:
                print(f"{args.file} has sha256 {got}, not {args.sha256}", file=sys.stderr)
                return 1
            store.pin(member, got)
        try:
            path = store.import_file(member, args.file)
            from .ensemble import MemberModel

            MemberModel.load(member, store, "cpu")  # the key mapping must fit, or nothing is installed
        except Exception as e:
            store.path_for(member).unlink(missing_ok=True)
            print(f"{member.name}: {e}", file=sys.stderr)
            return 1
        print(f"  installed {member.name} -> {path}")
        return 0
    if args.cmd == "calibrate":
        import json

        from .training import calibrate_members

        res = calibrate_members(manifest, store, args.labels.resolve(), args.group, args.names or None,
                                limit=args.limit)
        for m in manifest.members:
            if m.name in res:
                m.calibration = res[m.name]["calibration"]
        args.manifest.write_text(manifest.model_dump_json(indent=2, exclude_none=True) + "\n")
        print(json.dumps(res, indent=2))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
