"""``unmask model import`` and the detector's other offline commands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_model_import(args: argparse.Namespace) -> int:
    """Convert a published upstream state dict into our checkpoint format."""
    from server.vision.importers import import_checkpoint

    card = import_checkpoint(args.kind, args.weights, args.out, model_id=args.id, version=args.version)
    print(
        f"imported {args.kind} → {args.out}: {card.id} v{card.version} ({card.architecture}, "
        f"input {card.input_size[0]}x{card.input_size[1]}, sha256 {card.weights_sha256[:12]}…)"
    )
    return 0


def cmd_model_show(args: argparse.Namespace) -> int:
    """Print a checkpoint's model card after verifying its weights."""
    from server.vision.checkpoint import load_checkpoint

    _, card = load_checkpoint(args.dir)
    print(json.dumps(card.to_dict(), indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ML subcommands."""
    from server.vision.importers import IMPORT_KINDS

    model = sub.add_parser("model", help="detector checkpoints: import, show")
    msub = model.add_subparsers(dest="model_command", required=True)
    p = msub.add_parser("import", help="convert a DeepfakeBench / SBI state dict into an Unmask checkpoint")
    p.add_argument("kind", choices=sorted(IMPORT_KINDS))
    p.add_argument("weights", type=Path, help="the upstream .pth / .tar file")
    p.add_argument("out", type=Path, help="output checkpoint folder")
    p.add_argument("--id", help="model id for the card (default: derived from the kind)")
    p.add_argument("--version", help="version for the card (default: upstream-<sha256 prefix>)")
    p.set_defaults(func=cmd_model_import)
    p = msub.add_parser("show", help="verify a checkpoint and print its card")
    p.add_argument("dir", type=Path)
    p.set_defaults(func=cmd_model_show)
