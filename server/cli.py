"""The ``unmask`` command: serve, check, migrate, samples, train, eval, model import."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from server.errors import UnmaskError
from server.settings import Settings, load_settings


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        k: getattr(args, k, None)
        for k in (
            "host",
            "port",
            "data_dir",
            "database_url",
            "broker_url",
            "model_dir",
            "device",
            "sample_rate",
        )
    }
    return load_settings(config_file=getattr(args, "config", None), overrides=overrides)


# ---------------------------------------------------------------------------------------- serve
def cmd_serve(args: argparse.Namespace) -> int:
    """Migrate the database, then run the HTTP server until interrupted."""
    from aiohttp import web

    from server.app import create_app
    from server.auth_middleware import RedactingAccessLogger
    from server.db.migrate import upgrade
    from server.logs import setup_logging

    settings = _settings(args)
    setup_logging(settings.log_level)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not args.no_migrate:
        upgrade(settings.resolved_database_url)
    supervisor = None
    if not settings.broker_url and not args.no_worker:
        # Embedded mode: one command runs everything, the purification worker included.
        from server.worker_process import WorkerSupervisor

        supervisor = WorkerSupervisor(settings)
        supervisor.start()
    broker = "embedded, worker started" if supervisor else settings.broker_url or "embedded, no worker"
    print(
        f"unmask: serving on http://{settings.host}:{settings.port} "
        f"(database {_safe_url(settings)}; broker {broker})",
        flush=True,
    )
    try:
        web.run_app(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            print=None,
            shutdown_timeout=30,
            access_log_class=RedactingAccessLogger,
        )
    finally:
        if supervisor is not None:
            supervisor.stop()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run a purification worker in the foreground (production: one per GPU)."""
    from server.logs import setup_logging
    from server.worker_process import run_worker

    settings = _settings(args)
    setup_logging(settings.log_level)
    return run_worker(settings, concurrency=args.concurrency, pool=args.pool)


def _safe_url(settings: Settings) -> str:
    from sqlalchemy import make_url

    return make_url(settings.resolved_database_url).render_as_string(hide_password=True)


# ---------------------------------------------------------------------------------------- check
def _timeline_summary(verdict: dict[str, Any], width: int = 60) -> str:
    """A one-line sparkline of per-frame scores ('.' = no face)."""
    blocks = " ▁▂▃▄▅▆▇█"
    points = verdict["timeline"]
    if len(points) > width:
        step = len(points) / width
        points = [points[int(i * step)] for i in range(width)]
    return "".join("." if p["score"] is None else blocks[min(8, int(p["score"] * 8.999))] for p in points)


def format_verdict(verdict: dict[str, Any], path: str) -> str:
    """The human-readable verdict table."""
    scores = [p["score"] for p in verdict["timeline"] if p["score"] is not None]
    model = verdict["model"]
    rows = [
        ("file", path),
        ("label", verdict["label"].upper()),
        (
            "score",
            "n/a"
            if verdict["score"] is None
            else f"{verdict['score']:.3f} (threshold {model['threshold']:.3f})",
        ),
        (
            "confidence",
            "n/a" if verdict["confidence"] is None else f"{verdict['confidence']:.0%} of face frames agree",
        ),
        ("frames analysed", str(verdict["frames_analyzed"])),
        ("faces found", f"{verdict['faces']['total']} in {verdict['faces']['frames_with_faces']} frames"),
        (
            "per-frame scores",
            f"min {min(scores):.3f} / mean {sum(scores) / len(scores):.3f} / max {max(scores):.3f}"
            if scores
            else "no face frames",
        ),
        ("timeline", _timeline_summary(verdict)),
        (
            "model",
            f"{model['id']} v{model['version']} ({model['architecture']})"
            + ("  [DEMO MODEL: not for real decisions]" if model["demo"] else ""),
        ),
        (
            "time",
            f"{verdict['timings']['total']:.2f} s (decode {verdict['timings']['decode']:.2f} s, "
            f"detect {verdict['timings']['detect']:.2f} s)",
        ),
    ]
    if verdict.get("reason"):
        rows.insert(2, ("reason", verdict["reason"]))
    if verdict.get("early_stop"):
        es = verdict["early_stop"]
        rows.append(
            (
                "early verdict",
                f"decided at {es['t']:.1f} s after {es['face_frames']} face frames "
                f"(nominal error {es['nominal_error_rate']:.0%}); use --full to read everything",
            )
        )
    if verdict.get("truncated"):
        rows.append(
            ("warning", "the file is truncated or corrupt after some point; verdict uses what decoded")
        )
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def cmd_check(args: argparse.Namespace) -> int:
    """Check a local video file and print its verdict."""
    from server.analysis.run import analyze_video, media_dict
    from server.analysis.runtime import Runtime
    from server.analysis.sequential import SequentialTest
    from server.analysis.verdict import aggregate
    from server.media.decode import DecodeLimits

    settings = _settings(args)
    path = Path(args.path)
    if not path.is_file():
        raise UnmaskError(f"no such file: {path}")
    runtime = Runtime.load(
        settings.model_dir,
        device=settings.device,
        face_detector=settings.face_detector,
        threads=settings.op_threads,
    )
    progress = None
    if not args.json and sys.stderr.isatty():

        def progress(result):  # type: ignore[no-untyped-def]
            print(f"\r  frame {result.index + 1} at {result.t:6.1f} s", end="", file=sys.stderr, flush=True)

    limits = DecodeLimits(
        max_duration_s=settings.max_duration_s,
        max_frame_pixels=settings.max_frame_pixels,
        max_sampled_frames=settings.max_sampled_frames,
    )
    early = (
        None if args.full or not settings.early_verdict else SequentialTest(runtime.detector.card.threshold)
    )
    outcome = analyze_video(
        path, runtime, rate=settings.sample_rate, limits=limits, on_frame=progress, early=early
    )
    if progress is not None:
        print(file=sys.stderr)
    verdict = aggregate(
        outcome.results,
        runtime.detector.card,
        timings={**outcome.timings, "purify": 0.0},
        media=media_dict(outcome.info),
        truncated=outcome.truncated,
        tamper_threshold=runtime.tamper_threshold,
        early_stop=outcome.early_stop,
    )
    print(json.dumps(verdict, indent=2) if args.json else format_verdict(verdict, str(path)))
    return 0


# -------------------------------------------------------------------------------------- migrate
def cmd_migrate(args: argparse.Namespace) -> int:
    """Apply or revert database migrations."""
    from server.db import migrate

    url = _settings(args).resolved_database_url
    if args.action == "up":
        migrate.upgrade(url, args.revision or "head")
    elif args.action == "down":
        migrate.downgrade(url, args.revision or "base")
    current = migrate.current_revision_sync(url)
    print(f"database at revision {current or '(empty)'}; newest is {migrate.head_revision()}")
    return 0


# ----------------------------------------------------------------------------------- wiring
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML settings file (also UNMASK_CONFIG)")
    p.add_argument("--data-dir", type=Path, help="where the SQLite database and uploads live")
    p.add_argument("--database-url", help="SQLAlchemy URL (sqlite+aiosqlite:///… or postgresql+asyncpg://…)")
    p.add_argument(
        "--model-dir", type=Path, help="detector checkpoint folder (model.safetensors + card.json)"
    )
    p.add_argument("--device", help="auto, cpu or cuda[:N]")


def build_parser(
    extra: Sequence[Callable[[argparse._SubParsersAction], None]] = (),
) -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="unmask", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the HTTP API (embedded SQLite by default)")
    _common(p)
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--broker-url")
    p.add_argument("--no-migrate", action="store_true", help="do not apply migrations at start")
    p.add_argument(
        "--no-worker", action="store_true", help="embedded mode: do not start a purification worker"
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="run a purification worker (Celery) in the foreground")
    _common(p)
    p.add_argument("--broker-url")
    p.add_argument("--concurrency", type=int, default=1, help="worker processes (one per GPU is typical)")
    p.add_argument("--pool", default="prefork", choices=["prefork", "solo", "threads"])
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("check", help="check a local video file and print the verdict")
    _common(p)
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print the verdict object as JSON")
    p.add_argument("--sample-rate", type=float, help="sampled frames per second (default 2)")
    p.add_argument("--full", action="store_true", help="read the whole video (no early verdict)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("migrate", help="apply (up) or revert (down) database migrations")
    _common(p)
    p.add_argument("action", choices=["up", "down", "current"], nargs="?", default="up")
    p.add_argument("revision", nargs="?")
    p.set_defaults(func=cmd_migrate)

    for add in extra:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``unmask`` command."""
    from server.cli_ml import register as register_ml
    from server.cli_robust import register as register_robust
    from server.cli_tokens import register as register_tokens
    from server.doctor import register_doctor

    args = build_parser([register_ml, register_robust, register_tokens, register_doctor]).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UnmaskError as exc:
        print(f"unmask: error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
