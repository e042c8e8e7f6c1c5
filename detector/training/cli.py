"""``deepfake-train CONFIG.toml [--set key=value ...] [--manifest PATH] [--ship DIR] [--resume]``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..manifest import Member
from .artefacts import upsert
from .config import load_config
from .loop import train

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="deepfake-train", description=__doc__.split("\n\n")[0])
    p.add_argument("config", type=Path)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a top-level config value (TOML syntax), e.g. --set steps=50")
    p.add_argument("--manifest", type=Path, help="upsert the new entry into this manifest file")
    p.add_argument("--ship", type=Path, help="also copy weights and training record into this folder")
    p.add_argument("--resume", action="store_true", help="continue the run from its checkpoint")
    p.add_argument("--stop-after", type=int, metavar="N",
                   help="leave after N steps with a checkpoint written (continue later with --resume)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = load_config(args.config, args.overrides)
    record = train(cfg, resume=args.resume, stop_after=args.stop_after)
    out = Path(cfg.out_dir) / cfg.name
    if not record["finished"]:
        print(f"{cfg.name}: stopped at step {record['step']}/{record['steps']} ({record['hours']:.2f} h); "
              f"continue with: deepfake-train {args.config} --resume")
        return 0
    entry = Member.model_validate(record["manifest_entry"])
    if args.ship:
        import shutil

        args.ship.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / entry.weights.filename, args.ship / entry.weights.filename)
        shutil.copyfile(out / "training-record.json", args.ship / entry.training_record)
    if args.manifest:
        upsert(args.manifest, entry)
    b = record["best"]
    print(f"{cfg.name}: best step {b['step']}, validation AUC {b['auc']}, BA {b['balanced_accuracy']}; "
          f"weights {out / entry.weights.filename} (sha256 {entry.weights.sha256[:12]}...)")
    return 0
