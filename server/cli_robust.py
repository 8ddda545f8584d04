"""``unmask tamper fit``, ``unmask purify fit``, ``unmask eval-robustness``, ``unmask adversarial-video``."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

DEFAULT_MODEL_DIR = Path("models/default")


def cmd_tamper_fit(args: argparse.Namespace) -> int:
    """Fit the tamper check of a detector on a sample folder and write its tamper.json."""
    import torch

    from server.robust.calibrate import fit_tamper_on_data
    from server.robust.tamper.checks import CheckConfig
    from server.robust.tamper.score import TAMPER_FILENAME

    torch.set_num_threads(args.threads)
    scorer = fit_tamper_on_data(
        args.model_dir,
        args.data,
        every=args.every,
        max_per_class=args.max_per_class,
        target_fpr=args.target_fpr,
        config=CheckConfig(gradient=True) if args.gradient else None,
    )
    s = scorer.stats
    print(
        f"wrote {args.model_dir / TAMPER_FILENAME}: threshold {scorer.threshold:.4f}, out-of-fold FPR "
        f"{s['clean_fpr']:.3f} on {s['n_clean']} clean crops, TPR {s['attacked_tpr']:.3f} on "
        f"{s['n_attacked']} attacked crops (in-sample by family: {s['family_tpr']}), {s['fit_seconds']} s"
    )
    return 0


def cmd_purify_fit(args: argparse.Namespace) -> int:
    """Fit the purified-crop threshold of a detector and purifier preset and write its purify.json."""
    import torch

    from server.robust.purify_calibration import PURIFY_FILENAME
    from server.robust.purify_fit import fit_purified_threshold

    torch.set_num_threads(args.threads)
    cal = fit_purified_threshold(
        args.model_dir,
        args.data,
        preset=args.purifier,
        iterations=args.purifier_iterations,
        per_group=args.per_group,
        every=args.every,
    )
    s = cal.stats
    print(
        f"wrote {args.model_dir / PURIFY_FILENAME}: purified-crop threshold {cal.threshold:.4f} "
        f"(card {s['card_threshold']:.4f}) for purifier {cal.purifier_version}; on the purified training "
        f"crops reals {s['real_right']:.3f}, fakes {s['fake_right']:.3f}, attacked fakes "
        f"{s['attacked_right']:.3f} right (card threshold: reals {s['card_real_right']:.3f}, fakes "
        f"{s['card_fake_right']:.3f}); {s['seconds_per_crop']} s per crop, {s['fit_seconds']} s"
    )
    return 0


def cmd_eval_robustness(args: argparse.Namespace) -> int:
    """Run the paper's robustness table for a detector on a sample folder."""
    from server.errors import ConfigError
    from server.robust.evaluate import RobustnessConfig, check_config, evaluate_robustness

    data, train_data, models_dir = args.data, args.train_data, None
    if args.samples is not None:
        from server.robust.prepare import prepare

        torch_threads(args.threads)
        prepared = prepare(args.samples, args.model_dir, refit_tamper=args.refit_tamper, log=_log)
        data = data or prepared.test_videos
        train_data = train_data or prepared.train_crops
        models_dir = prepared.models
    if data is None:
        raise ConfigError("eval-robustness needs --data (a held-out sample folder) or --samples DIR")
    paths = {
        "data": data,
        "model_dir": args.model_dir,
        "out": args.out,
        "train_data": train_data,
        "substitute_dir": args.substitute,
        "lipschitz_dir": args.lipschitz,
        "models_dir": models_dir,
    }
    extra = {
        "purifier": args.purifier,
        "threads": args.threads,
        "seed": args.seed,
        "purify_n": args.purify_n,
        "purifier_iterations": args.purifier_iterations,
        "purifier_device": args.purifier_device,
    }
    extra = {k: v for k, v in extra.items() if v is not None}
    if args.quick:
        cfg = RobustnessConfig.quick_config(**paths, **extra)
    else:
        cfg = RobustnessConfig(**paths, **extra)
    check_config(cfg)
    result = evaluate_robustness(cfg, command=shlex.join(["unmask", *sys.argv[1:]]), doc=args.doc)
    if args.json:
        print(json.dumps(result, indent=2, default=float))
    else:
        print(Path(result["files"]["markdown"]).read_text())
    return 0


def eval_robustness_from_eval(args: argparse.Namespace) -> int:
    """``unmask eval MODEL_DIR DATA --robustness [--out DIR] [--json]``: eval-robustness, its defaults."""
    argv = ["eval-robustness", "--model-dir", str(args.model_dir), "--data", str(args.data)]
    argv += ["--out", str(args.out)] if args.out else []
    argv += ["--json"] if args.json else []
    parser = argparse.ArgumentParser(prog="unmask")
    register(parser.add_subparsers())
    return cmd_eval_robustness(parser.parse_args(argv))


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def torch_threads(threads: int | None) -> None:
    """Limit torch's threads before the first heavy call (the evaluation sets them again)."""
    import torch

    torch.set_num_threads(threads or 1)


def cmd_adversarial_video(args: argparse.Namespace) -> int:
    """Write a manipulated sample video perturbed to pass the detector as authentic."""
    import torch

    from server.samples.adversarial import make_adversarial_video

    torch.set_num_threads(args.threads)
    report = make_adversarial_video(args.src, args.out, args.model_dir, eps=args.eps, attack=args.attack)
    print(json.dumps(report, indent=2))
    return 0 if report["fooled_all"] else 1


def add_adversarial_args(p: argparse.ArgumentParser) -> None:
    """Arguments of the adversarial video command (also for ``unmask samples --adversarial``)."""
    p.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR, help="the detector to fool")
    p.add_argument(
        "--eps", type=float, default=None, help="L∞ budget to start from (default 4/255, raised as needed)"
    )
    p.add_argument("--attack", default="eot_pgd", choices=["eot_pgd", "pgd"])
    p.add_argument("--threads", type=int, default=1)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the robustness subcommands."""
    tamper = sub.add_parser("tamper", help="the per-frame tamper check: fit its calibration")
    tsub = tamper.add_subparsers(dest="tamper_command", required=True)
    p = tsub.add_parser(
        "fit", help="fit tamper.json for a detector on clean sample crops (+ FGSM/PGD copies)"
    )
    p.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    p.add_argument(
        "--data", type=Path, required=True, help="sample folder with real/ and fake/ videos or images"
    )
    p.add_argument("--every", type=int, default=3, help="one crop per this many video frames")
    p.add_argument("--max-per-class", type=int, default=300, help="clean crops per class at most")
    p.add_argument("--target-fpr", type=float, default=0.01, help="per-frame false positives allowed")
    p.add_argument(
        "--gradient",
        action="store_true",
        help="add input-gradient features: more compression-robust attacks caught, ~4-5x the detector cost",
    )
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_tamper_fit)

    purify = sub.add_parser("purify", help="DIP purification: fit the threshold for purified crops")
    psub = purify.add_subparsers(dest="purify_command", required=True)
    p = psub.add_parser(
        "fit", help="fit purify.json for a detector and purifier preset on purified training crops"
    )
    p.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    p.add_argument(
        "--data", type=Path, required=True, help="training sample folder (real/ and fake/ videos or crops)"
    )
    p.add_argument("--purifier", choices=["cpu", "tiny", "fast", "paper"], default="cpu", help="DIP preset")
    p.add_argument("--purifier-iterations", type=int, default=0, help="as the workers' setting (0: preset)")
    p.add_argument("--per-group", type=int, default=48, help="reals, fakes and attacked fakes purified, each")
    p.add_argument("--every", type=int, default=1, help="one crop per this many video frames")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_purify_fit)

    p = sub.add_parser("eval-robustness", help="the paper's robustness table (attacks, tamper check, DIP)")
    p.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    p.add_argument("--data", type=Path, help="held-out sample folder (real/ and fake/ videos)")
    p.add_argument(
        "--samples",
        type=Path,
        help="make (once) and use the default detector's sample sets in this folder: the held-out test "
        "videos as --data, training crops as --train-data; fits tamper.json on the training crops when "
        "the model has none for its weights",
    )
    p.add_argument("--refit-tamper", action="store_true", help="with --samples: fit tamper.json again")
    p.add_argument("--out", type=Path, default=Path("runs/robustness"))
    p.add_argument(
        "--doc", type=Path, help="also write the report into this markdown file (between its markers)"
    )
    p.add_argument(
        "--train-data", type=Path, help="training crops: substitute / Lipschitz models are trained on it"
    )
    p.add_argument(
        "--substitute", type=Path, help="black-box substitute checkpoint (else trained on --train-data)"
    )
    p.add_argument(
        "--lipschitz", type=Path, help="Lipschitz-regularised checkpoint (else trained on --train-data)"
    )
    p.add_argument("--purifier", choices=["cpu", "tiny", "fast", "paper"], help="DIP preset (default cpu)")
    p.add_argument("--purifier-iterations", type=int, help="replace the preset's DIP iteration budget")
    p.add_argument(
        "--purifier-device", help="cpu or cuda[:N]: where the DIP fits run (the rest stays on the CPU)"
    )
    p.add_argument("--purify-n", type=int, help="fooled fakes purified (and as many other crops); default 24")
    p.add_argument("--threads", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--quick", action="store_true", help="a ≤ 3-minute smoke run on few crops")
    p.add_argument("--json", action="store_true", help="print the JSON result instead of the markdown")
    p.set_defaults(func=cmd_eval_robustness)

    p = sub.add_parser("adversarial-video", help="perturb a manipulated sample video to fool the detector")
    p.add_argument("src", type=Path, help="a manipulated sample video")
    p.add_argument("out", type=Path, help="output .mp4")
    add_adversarial_args(p)
    p.set_defaults(func=cmd_adversarial_video)
