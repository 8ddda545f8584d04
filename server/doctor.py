"""``unmask doctor``: check packages, GPU, database, migrations, broker and model files; say what to fix."""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import sys
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from server.settings import REPO_ROOT, Settings

# A dependency that does not answer within this long counts as down: doctor is run by a person
# waiting at a terminal, and a healthy local service answers in milliseconds.
CONNECT_TIMEOUT_S = 3.0

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"


@dataclass(frozen=True)
class Finding:
    """One check's outcome: ``status`` is ok, warn, fail or skip; ``fix`` says what to do."""

    name: str
    status: str
    detail: str
    fix: str = ""


# ------------------------------------------------------------------------------------ packages
def _requirements() -> list[str]:
    pyproject = REPO_ROOT / "pyproject.toml"
    if pyproject.is_file():
        return list(tomllib.loads(pyproject.read_text())["project"]["dependencies"])
    return [r for r in metadata.requires("unmask") or [] if "extra ==" not in r]


def check_packages() -> list[Finding]:
    """Python itself and every runtime dependency at a version the project accepts."""
    from packaging.requirements import Requirement

    out = [Finding("python", OK, sys.version.split()[0])]
    missing, wrong = [], []
    for line in _requirements():
        req = Requirement(line)
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            missing.append(req.name)
            continue
        if not req.specifier.contains(version, prereleases=True):
            wrong.append(f"{req.name} {version} (wants {req.specifier})")
    if missing or wrong:
        detail = "; ".join([*(f"{m} missing" for m in missing), *wrong])
        out.append(Finding("packages", FAIL, detail, "pip install -c constraints.txt -e . (in the venv)"))
    else:
        out.append(Finding("packages", OK, f"{len(_requirements())} requirements satisfied"))
    out.append(check_opencv())
    return out


def check_opencv() -> Finding:
    """OpenCV 5 dropped the Haar cascades the embedded face detector uses."""
    try:
        import cv2
    except ImportError as exc:
        return Finding("opencv", FAIL, str(exc), "pip install 'opencv-python-headless<5'")
    cascade = (
        Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml" if hasattr(cv2, "data") else None
    )
    if not hasattr(cv2, "CascadeClassifier") or cascade is None or not cascade.is_file():
        return Finding(
            "opencv",
            FAIL,
            f"{cv2.__version__} has no Haar cascades",
            "pip install 'opencv-python-headless<5'",
        )
    return Finding("opencv", OK, f"{cv2.__version__} with Haar cascades")


# ----------------------------------------------------------------------------------------- GPU
def check_gpu(settings: Settings) -> Finding:
    """Whether the configured device exists; no GPU is a warning (CPU works, purification is slow)."""
    import torch

    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return Finding("gpu", OK, f"CUDA {torch.version.cuda}: {names}")
    if settings.device.startswith("cuda"):
        return Finding(
            "gpu",
            FAIL,
            f"device is {settings.device!r} but torch {torch.__version__} sees no CUDA GPU",
            "install the NVIDIA driver and a CUDA build of torch, or set UNMASK_DEVICE=cpu",
        )
    if settings.device == "cpu":
        return Finding("gpu", OK, "CPU by configuration")
    return Finding(
        "gpu",
        WARN,
        f"no CUDA GPU (torch {torch.__version__}): detection runs on CPU, purification is slow",
        "run GPU workers elsewhere (deploy/README.md) or set UNMASK_DEVICE=cpu to silence this",
    )


# ------------------------------------------------------------------------------------ database
def _redacted(url: str) -> str:
    from sqlalchemy import make_url

    return make_url(url).render_as_string(hide_password=True)


def _refused(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) == errno.ECONNREFUSED:
            return True
        if isinstance(exc, OSError) and "Connect call failed" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


async def _ping(url: str) -> None:
    from server.db.engine import create_engine, ping

    engine = create_engine(url)
    try:
        await asyncio.wait_for(ping(engine), CONNECT_TIMEOUT_S)
    finally:
        await engine.dispose()


def check_database(settings: Settings) -> Finding:
    """Connect and run ``SELECT 1``; name the likely cause of a failure."""
    from sqlalchemy import make_url

    url = settings.resolved_database_url
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite"):
        path = Path(parsed.database or "")
        if not path.exists():
            return Finding(
                "database", WARN, f"SQLite file {path} does not exist yet", "unmask migrate (creates it)"
            )
    where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    try:
        asyncio.run(_ping(url))
    except TimeoutError:
        return Finding(
            "database",
            FAIL,
            f"{_redacted(url)} did not answer within {CONNECT_TIMEOUT_S:g} s",
            f"check that PostgreSQL at {where} is up and reachable (firewall, host name)",
        )
    except Exception as exc:  # every driver error is reported, none is fatal to doctor
        name = type(exc).__name__
        if _refused(exc):
            return Finding(
                "database",
                FAIL,
                f"PostgreSQL at {where} is not running (connection refused)",
                "start it (systemctl start postgresql, or pg_ctlcluster <version> main start), "
                "or set UNMASK_DATABASE_URL to a running server",
            )
        if name in ("InvalidPasswordError", "InvalidAuthorizationSpecificationError"):
            fix = "check the user and password in UNMASK_DATABASE_URL (and pg_hba.conf)"
        elif name == "InvalidCatalogNameError":
            fix = f"create the database: createdb -h {parsed.host} -p {parsed.port or 5432} {parsed.database}"
        else:
            fix = "check UNMASK_DATABASE_URL"
        return Finding("database", FAIL, f"{_redacted(url)}: {name}: {exc}"[:300], fix)
    return Finding("database", OK, f"{_redacted(url)} answers")


def check_migrations(settings: Settings, database: Finding) -> Finding:
    """The schema is at the newest migration this code knows."""
    from server.db import migrate

    if database.status != OK:
        return Finding("migrations", SKIP, "not checked: fix the database first")
    url = settings.resolved_database_url
    try:
        current = asyncio.run(migrate.current_revision(url))
    except Exception as exc:  # e.g. a SQLite file that is not a database
        return Finding("migrations", FAIL, f"cannot read the revision: {type(exc).__name__}: {exc}"[:300])
    head = migrate.head_revision()
    if current == head:
        return Finding("migrations", OK, f"at {head} (newest)")
    from alembic.script import ScriptDirectory

    known = {r.revision for r in ScriptDirectory.from_config(migrate.alembic_config(url)).walk_revisions()}
    if current is not None and current not in known:
        return Finding(
            "migrations",
            FAIL,
            f"database is at {current}, which this code does not know (newest here: {head})",
            "upgrade Unmask on this host to the version that migrated the database",
        )
    return Finding(
        "migrations", FAIL, f"database is at {current or '(empty)'}, newest is {head}", "unmask migrate"
    )


# -------------------------------------------------------------------------------------- broker
def check_broker(settings: Settings) -> Finding:
    """The Celery broker answers (Redis or AMQP); the embedded broker needs a writable folder."""
    url = settings.broker_url
    if not url:
        folder = settings.data_dir / "broker"
        parent = folder if folder.exists() else settings.data_dir
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if os.access(parent, os.W_OK):
            return Finding("broker", OK, f"embedded (filesystem) broker in {folder}")
        return Finding(
            "broker", FAIL, f"{folder} is not writable", "set UNMASK_DATA_DIR to a writable folder"
        )
    from kombu.utils.url import maybe_sanitize_url

    shown = maybe_sanitize_url(url)
    try:
        if url.startswith(("redis://", "rediss://", "unix://")):
            import redis

            client = redis.Redis.from_url(
                url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CONNECT_TIMEOUT_S
            )
            try:
                client.ping()
            finally:
                client.close()
        else:
            from kombu import Connection

            with Connection(url, connect_timeout=CONNECT_TIMEOUT_S) as conn:
                conn.ensure_connection(max_retries=1, timeout=CONNECT_TIMEOUT_S)
    except Exception as exc:  # any client error means "down" for the report
        refused = _refused(exc) or "refused" in str(exc).lower()
        detail = (
            f"{shown} is not running (connection refused)"
            if refused
            else f"{shown}: {type(exc).__name__}: {exc}"
        )
        return Finding(
            "broker",
            FAIL,
            detail[:300],
            "start the broker (systemctl start redis-server / rabbitmq-server) or fix UNMASK_BROKER_URL",
        )
    return Finding("broker", OK, f"{shown} answers")


# ------------------------------------------------------------------------------- model, files
def check_model(settings: Settings) -> Finding:
    """The detector checkpoint exists, its card is valid and the weights match the card's hash."""
    from server.errors import CheckpointError
    from server.vision.checkpoint import WEIGHTS_FILE, load_card, sha256_file

    directory = settings.model_dir
    fix = (
        "build the demo model (python models/build_default.py), import one "
        "(unmask model import …), or set UNMASK_MODEL_DIR"
    )
    weights = Path(directory) / WEIGHTS_FILE
    if not weights.is_file():
        return Finding("model", FAIL, f"no checkpoint in {directory} ({WEIGHTS_FILE} missing)", fix)
    try:
        card = load_card(directory)
    except CheckpointError as exc:
        return Finding("model", FAIL, exc.message[:300], fix)
    if sha256_file(weights) != card.weights_sha256:
        return Finding(
            "model", FAIL, f"{weights} does not match its card's sha256 (corrupt or replaced)", fix
        )
    demo = " — DEMO weights, not for real decisions" if card.demo else ""
    return Finding(
        "model", WARN if card.demo else OK, f"{card.id} v{card.version} ({card.architecture}){demo}"
    )


def check_data_dir(settings: Settings) -> Finding:
    """The data folder (SQLite file, uploads, embedded broker) can be written."""
    d = settings.data_dir
    probe = d if d.exists() else next((p for p in d.parents if p.exists()), Path("/"))
    if os.access(probe, os.W_OK):
        return Finding("data dir", OK, str(d) + ("" if d.exists() else " (will be created)"))
    return Finding("data dir", FAIL, f"{d} is not writable", "set UNMASK_DATA_DIR or fix its permissions")


def run_checks(settings: Settings) -> list[Finding]:
    """Every check, in the order a person would fix them."""
    findings = [*check_packages(), check_data_dir(settings), check_gpu(settings)]
    database = check_database(settings)
    findings += [
        database,
        check_migrations(settings, database),
        check_broker(settings),
        check_model(settings),
    ]
    return findings


def format_findings(findings: list[Finding]) -> str:
    """A readable table, then the fixes as a numbered list."""
    from server.console import table

    rows = [(f.status.upper(), f.name, f.detail) for f in findings]
    text = table(("status", "check", "detail"), rows)
    fixes = [f for f in findings if f.fix and f.status in (FAIL, WARN)]
    if fixes:
        text += "\n\nTo fix:\n" + "\n".join(f"  {i}. {f.name}: {f.fix}" for i, f in enumerate(fixes, 1))
    failed = sum(f.status == FAIL for f in findings)
    text += "\n\n" + (f"{failed} problem(s) found." if failed else "Everything needed is in place.")
    return text


def cmd_doctor(args: argparse.Namespace, settings_of: Callable[[argparse.Namespace], Settings]) -> int:
    """Run every check; exit 1 when any failed."""
    findings = run_checks(settings_of(args))
    failed = any(f.status == FAIL for f in findings)
    if args.json:
        out: dict[str, Any] = {"ok": not failed, "checks": [asdict(f) for f in findings]}
        print(json.dumps(out, indent=2))
    else:
        print(format_findings(findings))
    return 1 if failed else 0


def register_doctor(sub: argparse._SubParsersAction) -> None:
    """Add ``unmask doctor``."""
    from server.cli import _common, _settings

    p = sub.add_parser("doctor", help="check packages, GPU, database, broker, migrations and model files")
    _common(p)
    p.add_argument("--broker-url")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.set_defaults(func=lambda args: cmd_doctor(args, _settings))
