"""deploy/: the compose file parses (with ``docker compose config`` when a compose plugin exists),
the systemd units pass ``systemd-analyze verify`` (or at least parse), and every setting is documented."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path

import pytest

from server.settings import ENV_PREFIX, Settings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
UNITS = ("unmask-migrate.service", "unmask-server@.service", "unmask-worker@.service")
VENV_BIN = "/opt/unmask/.venv/bin/"
SETTINGS = {f.name for f in fields(Settings)} - {"extra"}


def _compose_cli() -> list[str] | None:
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cmd[0]) is None:
            continue
        if subprocess.run([*cmd, "version"], capture_output=True, timeout=30).returncode == 0:
            return cmd
    return None


def _env_names(mapping: dict) -> set[str]:
    return {k for k in mapping if k.startswith(ENV_PREFIX)}


def _setting(name: str) -> str:
    return name.removeprefix(ENV_PREFIX).lower()


def test_compose_file_parses_and_wires_the_stack() -> None:
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = doc["services"]
    assert {"postgres", "redis", "migrate", "server", "worker", "proxy"} <= set(services)
    server, worker = services["server"], services["worker"]
    assert server["command"][:2] == ["unmask", "serve"] and "--no-migrate" in server["command"]
    assert "/readyz" in " ".join(server["healthcheck"]["test"])
    assert server["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "worker.celery_app" in worker["command"] and "--queues=unmask.purify" in worker["command"]
    gpu = worker["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    for name in ("server", "worker", "migrate"):
        env = services[name]["environment"]
        assert env["UNMASK_DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert env["UNMASK_BROKER_URL"].startswith("redis://")
        assert {_setting(k) for k in _env_names(env)} <= SETTINGS
    for mounted in ("nginx.conf", "prometheus.yml"):
        assert (DEPLOY / mounted).is_file()


def test_docker_compose_config_accepts_it(tmp_path: Path) -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no docker compose plugin on this machine")
    env = {**os.environ, "POSTGRES_PASSWORD": "test"}
    result = subprocess.run(
        [*cli, "-f", str(DEPLOY / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr


def test_env_example_names_only_real_settings() -> None:
    names = set()
    for line in (DEPLOY / "unmask.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            names.add(line.split("=", 1)[0])
    assert names and {_setting(n) for n in names} <= SETTINGS


def test_readme_documents_every_setting() -> None:
    text = (DEPLOY / "README.md").read_text()
    documented = {_setting(m) for m in re.findall(r"`(UNMASK_[A-Z0-9_]+)`", text)}
    assert SETTINGS - documented == set(), "settings missing from deploy/README.md"


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string((DEPLOY / "systemd" / name).read_text())
    return parser


@pytest.mark.parametrize("name", UNITS)
def test_units_have_the_keys_systemd_needs(name: str) -> None:
    unit = _unit(name)
    assert unit["Unit"]["Description"]
    service = unit["Service"]
    assert service["ExecStart"].startswith(VENV_BIN)
    assert service["EnvironmentFile"] == "/etc/unmask/unmask.env"
    assert service["User"] == "unmask"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    if name.endswith("@.service"):
        assert "%i" in " ".join(service.values()), "a template unit uses its instance name"


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    # The units point at /opt/unmask; verify them against stand-in executables at a temporary path.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for exe in ("unmask", "python"):
        (bin_dir / exe).write_text("#!/bin/sh\n")
        (bin_dir / exe).chmod(0o755)
    paths = []
    for name in UNITS:
        target = tmp_path / name.replace("@.", "@0.")
        target.write_text((DEPLOY / "systemd" / name).read_text().replace(VENV_BIN, f"{bin_dir}/"))
        paths.append(str(target))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *paths], capture_output=True, text=True, timeout=60
    )
    ours = [line for line in result.stderr.splitlines() if str(tmp_path) in line or "unmask-" in line]
    assert result.returncode == 0, result.stderr
    assert ours == [], ours
