"""``unmask model import`` and the detector's other offline commands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from server.cli_robust import add_adversarial_args


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


def cmd_samples(args: argparse.Namespace) -> int:
    """Write the offline sample videos (real, self-blended and face-swapped)."""
    from server.samples.generate import generate_samples

    manifest = generate_samples(
        args.out, n_real=args.real, n_fake=args.fake, seconds=args.seconds, size=args.size, seed=args.seed
    )
    if args.json:
        print(json.dumps(manifest, indent=2, default=str))
    else:
        videos = manifest.get("videos", [])
        print(
            f"wrote {len(videos)} sample videos to {args.out} (manifest.json lists labels, methods, credits)"
        )
    if args.adversarial:
        return _adversarial_sample(args, manifest)
    return 0


def _adversarial_sample(args: argparse.Namespace, manifest: dict) -> int:
    """``unmask samples --adversarial``: perturb a manipulated clip until the detector passes it."""
    import torch

    from server.samples.adversarial import adversarial_sample

    torch.set_num_threads(args.threads)
    options = {"every": args.every, "max_rounds": args.rounds, "eps": args.eps, "attack": args.attack}
    report = adversarial_sample(
        args.out, manifest, args.model_dir, **{k: v for k, v in options.items() if v is not None}
    )
    scores = [s for s in report["scores"] if s is not None]
    print(
        f"wrote {report['out']} (+ .json report): {report['attack']} at ε {report['eps_255']}/255 after "
        f"{report['rounds']} round(s), {report['seconds']} s; {report['face_frames']} face frames score "
        f"{min(scores):.3f}–{max(scores):.3f} against threshold {report['threshold']:.3f}: "
        + ("every one authentic" if report["fooled_all"] else "NOT all fooled")
    )
    return 0 if report["fooled_all"] else 1


def cmd_train(args: argparse.Namespace) -> int:
    """Train a detector from an image/video folder (real/, fake/) or real-only faces (+ self-blending)."""
    from server.vision.train import TrainConfig, train

    config = TrainConfig(
        data=args.data,
        out=args.out,
        real_only=args.real_only,
        sbi_ratio=args.sbi_ratio,
        arch=args.arch,
        init=args.init,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        augment=not args.no_augment,
        lipschitz_lambda=args.lipschitz,
        adv_train=args.adv_train,
        adv_eps=args.adv_eps,
        amp=args.amp,
        device=args.device or "auto",
        resume=args.resume,
        model_id=args.model_id,
        demo=args.demo,
        training_data=args.training_data or "",
    )
    run_dir = train(config)
    print(f"run directory: {run_dir} (model.safetensors, card.json, metrics.json)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a checkpoint on a labelled folder: accuracy, AUROC, ECE, threshold at a target FPR."""
    if args.robustness:  # the paper's robustness table instead: ``unmask eval-robustness``
        from server.cli_robust import eval_robustness_from_eval

        return eval_robustness_from_eval(args)
    from server.vision.evaluate import evaluate

    metrics = evaluate(
        args.model_dir, args.data, out_dir=args.out, target_fpr=args.target_fpr, device=args.device or "auto"
    )
    if args.json:
        print(json.dumps(metrics, indent=2, default=str))
    else:
        keys = ("n", "accuracy", "auroc", "ece", "threshold")
        print(
            "  ".join(
                f"{k} {metrics[k]:.4f}" if isinstance(metrics.get(k), float) else f"{k} {metrics.get(k)}"
                for k in keys
                if k in metrics
            )
        )
        if args.out:
            print(f"report: {args.out}/eval.md (+ eval.json, roc.png, reliability.png)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ML subcommands."""
    p = sub.add_parser(
        "samples", help="write offline sample videos (real / manipulated) for training and tests"
    )
    p.add_argument("out", type=Path)
    p.add_argument("--real", type=int, default=12)
    p.add_argument("--fake", type=int, default=12)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--adversarial",
        action="store_true",
        help="also write adversarial/<clip>.mp4: a face-swapped clip perturbed to pass as authentic",
    )
    p.add_argument("--every", type=int, help="--adversarial keeps every n-th frame (default 5: 5 fps)")
    p.add_argument("--rounds", type=int, help="--adversarial: optimise/encode/verify rounds at most (10)")
    add_adversarial_args(p)
    p.set_defaults(func=cmd_samples)

    p = sub.add_parser("train", help="train a detector (image/video folder with real/ and fake/)")
    p.add_argument("data", type=Path)
    p.add_argument("--out", type=Path, default=Path("runs/train"))
    p.add_argument("--real-only", action="store_true", help="data has only real faces: self-blend the fakes")
    p.add_argument("--sbi-ratio", type=float, default=0.0, help="extra self-blended fakes per real crop")
    p.add_argument("--arch", default="unmask_tiny")
    p.add_argument("--init", type=Path, help="fine-tune: start from this checkpoint directory's weights")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument(
        "--lipschitz", type=float, default=0.0, help="the paper's Lipschitz penalty weight λ (0 = off)"
    )
    p.add_argument("--adv-train", choices=["none", "pgd"], default="none")
    p.add_argument("--adv-eps", type=float, default=4 / 255)
    p.add_argument("--amp", action="store_true", help="bf16 autocast (GPU)")
    p.add_argument("--device")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--model-id")
    p.add_argument("--demo", action="store_true", help="mark the card as a demonstration model")
    p.add_argument("--training-data", help="description of the data for the model card")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a detector checkpoint on a labelled folder")
    p.add_argument("model_dir", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("--out", type=Path, help="write eval.json, eval.md, roc.png, reliability.png here")
    p.add_argument("--target-fpr", type=float, default=0.05)
    p.add_argument("--device")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--robustness", action="store_true", help="run `unmask eval-robustness` (default settings) instead"
    )
    p.set_defaults(func=cmd_eval)

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
