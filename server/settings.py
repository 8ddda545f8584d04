"""One frozen settings object, loaded once at the edge (CLI / ``python -m server``).

Sources, later wins: defaults < TOML file (``UNMASK_CONFIG`` or ``--config``) < ``UNMASK_*``
environment variables < CLI overrides. Nothing else in the code reads the environment.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from server import limits
from server.errors import ConfigError

ENV_PREFIX = "UNMASK_"
# Settings that were renamed: an old name in a file or the environment is an error that names the
# new one (silently ignoring UNMASK_TORCH_THREADS would undo an operator's cap).
RENAMED = {"torch_threads": "op_threads"}
DEFAULT_DATA_DIR = Path.home() / ".local" / "share" / "unmask"
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of the service, with the default of the embedded (one-machine) mode."""

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = DEFAULT_DATA_DIR
    # Empty means "SQLite file in data_dir"; production sets postgresql+asyncpg://...
    database_url: str = ""
    # Empty means the embedded server-less broker in data_dir; production sets redis://...
    broker_url: str = ""
    model_dir: Path = REPO_ROOT / "models" / "default"
    face_detector: str = "haar"
    device: str = "auto"
    sample_rate: float = 2.0
    max_upload_bytes: int = limits.MAX_UPLOAD_BYTES
    max_duration_s: float = limits.MAX_DURATION_S
    max_frame_pixels: int = limits.MAX_FRAME_PIXELS
    max_sampled_frames: int = limits.MAX_SAMPLED_FRAMES
    # Parallel checks in one server process; decode + detection are CPU-bound.
    max_running_checks: int = 4
    # Threads one torch / OpenCV call may use; 0: the libraries' defaults (all cores).
    op_threads: int = 0
    log_level: str = "INFO"
    # Exact "ip:port" pairs (comma-separated) the URL fetcher may reach although they are not
    # public addresses: for tests and for operators with an internal media server. Empty = none.
    fetch_allow_hosts: str = ""
    # A frames check (extension-captured frames) with no new frames for this long is finalised
    # with what it has, so an accepted check always ends.
    frames_idle_timeout_s: float = 60.0
    # Browser-extension origins allowed by CORS (comma-separated, e.g. chrome-extension://<id>).
    cors_origins: str = ""
    # Stop reading a video once a sequential test over frame scores has decided (a request
    # can ask for the full video with "full": true / full=1 / --full).
    early_verdict: bool = True
    # How long a verdict is served from cache; a new detector version never reuses one anyway.
    cache_ttl_s: int = 30 * 24 * 3600
    # Near-duplicate look-ups from an in-memory copy of the active model's frame hashes
    # (server/db/frame_mirror.py; ~130 bytes of server memory per hash, measured). Above this
    # many the copy is dropped and look-ups query the database; 0 never keeps one.
    cache_index_max_rows: int = 5_000_000
    # Names this server among several sharing one database (restart recovery is per instance).
    instance_id: str = field(default_factory=socket.gethostname)
    # DIP purification on Celery workers (worker/). Preset: auto (fast on CUDA, cpu on CPU),
    # paper, fast, cpu, or tiny (a seconds-cheap CPU preset for tests and smoke runs).
    purifier_preset: str = "auto"
    # false: suspicious frames are still flagged and counted in the verdict, but not sent to
    # purification (a server with no workers; benchmarks of the detection path alone).
    purify: bool = True
    purifier_iterations: int = 0  # 0: the preset's own iteration budget
    # Soft limit: the task records "failed: time limit" for unfinished crops and returns, so the
    # check still completes; hard limit: the worker child is killed. soft < hard < visibility.
    purify_soft_time_limit_s: float = 300.0
    purify_time_limit_s: float = 360.0
    # Redis only: an unacknowledged task (its worker vanished) is redelivered after this long.
    # Above the hard limit, or a running task would be handed to a second worker.
    broker_visibility_timeout_s: float = 600.0
    # Test hook: stall a crop's first attempt this long (never a retry or redelivery); 0 in production.
    purify_debug_sleep_s: float = 0.0
    # API tokens: "auto" requires one when host is not a loopback address, "always", "never"
    # (never: only behind a proxy that authenticates on its own).
    auth: str = "auto"
    # Per-token request budget (token bucket): refill per minute and the burst allowed at once.
    rate_per_minute: int = 120
    rate_burst: int = 30
    # Checks one token may have running at once; each holds decode/detect capacity until it ends.
    max_concurrent_checks_per_token: int = 8
    # Serve /metrics without a token (Prometheus scrapers usually run on a private network).
    metrics_public: bool = True
    # Decode untrusted media in a resource-limited child process (server/media/sandbox.py); off
    # only for debugging a decoder problem in-process.
    decode_sandbox: bool = True
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL, defaulting to a SQLite file in ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'unmask.sqlite3'}"

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied and validated."""
        return validate(dataclasses.replace(self, **changes))


def is_device_name(name: str) -> bool:
    """Whether ``name`` names a torch device Unmask runs on: ``cpu`` or ``cuda[:N]``."""
    return name == "cpu" or name.startswith("cuda")


def _coerce(name: str, raw: Any, kind: Any) -> Any:
    try:
        if kind is Path or kind == "Path":
            return Path(raw).expanduser()
        if kind is bool or kind == "bool":
            if isinstance(raw, bool):
                return raw
            return str(raw).strip().lower() in {"1", "true", "yes", "on"}
        if kind is int or kind == "int":
            return int(raw)
        if kind is float or kind == "float":
            return float(raw)
        if kind is str or kind == "str":
            return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name!r}: cannot read {raw!r} as {kind}") from exc
    return raw


def validate(s: Settings) -> Settings:
    """Reject settings that cannot work, with a message naming the setting."""
    if not 0 < s.port < 65536:
        raise ConfigError(f"setting 'port': {s.port} is not a TCP port")
    if not limits.MIN_SAMPLE_RATE <= s.sample_rate <= limits.MAX_SAMPLE_RATE:
        raise ConfigError(
            f"setting 'sample_rate': {s.sample_rate} is outside "
            f"[{limits.MIN_SAMPLE_RATE}, {limits.MAX_SAMPLE_RATE}] frames/s"
        )
    for name, ceiling in (
        ("max_upload_bytes", limits.MAX_UPLOAD_BYTES * 8),
        ("max_duration_s", limits.MAX_DURATION_S * 4),
        ("max_frame_pixels", limits.MAX_FRAME_PIXELS * 4),
        ("max_sampled_frames", limits.MAX_SAMPLED_FRAMES * 4),
        ("max_running_checks", 256),
        ("cache_ttl_s", 10 * 365 * 24 * 3600),
    ):
        value = getattr(s, name)
        if not 0 < value <= ceiling:
            raise ConfigError(f"setting {name!r}: {value} must be in (0, {ceiling}]")
    if s.device != "auto" and not is_device_name(s.device):
        raise ConfigError(f"setting 'device': {s.device!r} is not auto, cpu or cuda[:N]")
    if not 0 < s.purify_soft_time_limit_s < s.purify_time_limit_s < s.broker_visibility_timeout_s:
        raise ConfigError(
            "settings 'purify_soft_time_limit_s' < 'purify_time_limit_s' < 'broker_visibility_timeout_s' "
            f"must hold, got {s.purify_soft_time_limit_s} / {s.purify_time_limit_s} / "
            f"{s.broker_visibility_timeout_s}"
        )
    if s.purifier_iterations < 0 or s.purify_debug_sleep_s < 0:
        raise ConfigError("settings 'purifier_iterations' and 'purify_debug_sleep_s' must be >= 0")
    if s.auth not in {"auto", "always", "never"}:
        raise ConfigError(f"setting 'auth': {s.auth!r} is not auto, always or never")
    for name, ceiling in (
        ("rate_per_minute", 1_000_000),
        ("rate_burst", 100_000),
        ("max_concurrent_checks_per_token", 10_000),
    ):
        value = getattr(s, name)
        if not 0 < value <= ceiling:
            raise ConfigError(f"setting {name!r}: {value} must be in (0, {ceiling}]")
    return s


def load_settings(
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings from file, environment and overrides (later wins)."""
    env = os.environ if env is None else env
    hints = get_type_hints(Settings)
    known = {f.name for f in fields(Settings)} - {"extra"}
    values: dict[str, Any] = {}
    data: dict[str, Any] = {}
    path = config_file or (Path(env[ENV_PREFIX + "CONFIG"]) if env.get(ENV_PREFIX + "CONFIG") else None)
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc
        for key, raw in data.items():
            if key in RENAMED:
                continue  # reported below, with the new name
            if key not in known:
                raise ConfigError(f"config file {path}: unknown setting {key!r}")
            values[key] = _coerce(key, raw, hints[key])
    for old, new in RENAMED.items():
        if env.get(ENV_PREFIX + old.upper()) is not None or old in data:
            raise ConfigError(
                f"setting {old!r} was renamed {new!r} ({ENV_PREFIX}{new.upper()}); it also caps OpenCV now"
            )
    for key in known:
        raw = env.get(ENV_PREFIX + key.upper())
        if raw is not None and raw != "":
            values[key] = _coerce(key, raw, hints[key])
    for key, raw in (overrides or {}).items():
        if raw is None:
            continue
        if key not in known:
            raise ConfigError(f"unknown setting {key!r}")
        values[key] = _coerce(key, raw, hints[key])
    return validate(Settings(**values))
