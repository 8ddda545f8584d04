"""``unmask doctor`` against a throwaway PostgreSQL that the test starts and stops (never the shared one)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.cli import main
from server.db.migrate import upgrade
from server.doctor import FAIL, OK, SKIP, WARN, check_broker, check_model, format_findings
from server.settings import Settings

PG_BINS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(*cmd: str) -> subprocess.CompletedProcess:
    prefix = ["su", "postgres", "-c"] if os.geteuid() == 0 else None
    if prefix is None:
        return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60)
    return subprocess.run([*prefix, " ".join(cmd)], check=True, capture_output=True, text=True, timeout=60)


class Postgres:
    """A private PostgreSQL cluster on a free port, with a trust-auth superuser ``postgres``."""

    def __init__(self, root: Path) -> None:
        self.bin = PG_BINS[-1]
        self.data, self.sock, self.log = root / "data", root / "sock", root / "pg.log"
        self.port = _free_port()
        self.sock.mkdir()
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
            shutil.chown(self.sock, "postgres", "postgres")
        _as_postgres(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync"
        )

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off"
        _as_postgres(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-o",
            f"'{opts}'",
            "start",
        )

    def stop(self) -> None:
        _as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    if not PG_BINS:
        pytest.skip("PostgreSQL server binaries are not installed")
    root = Path(tempfile.mkdtemp(prefix="unmask-doctor-pg-"))
    root.chmod(0o755)  # the postgres user must reach its data dir
    pg = Postgres(root)
    pg.start()
    try:
        yield pg
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped by a test
            pg.stop()
        shutil.rmtree(root, ignore_errors=True)


def _doctor(capsys, *args: str) -> tuple[int, dict[str, dict]]:
    code = main(["doctor", "--json", *args])
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is (code == 0)
    return code, {c["name"]: c for c in out["checks"]}


def test_doctor_reports_a_running_database_and_pending_migrations(
    postgres: Postgres, tiny_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    base = ["--data-dir", str(tmp_path), "--database-url", postgres.url, "--model-dir", str(tiny_checkpoint)]
    code, checks = _doctor(capsys, *base, "--device", "cpu")
    assert checks["database"]["status"] == OK
    assert checks["migrations"]["status"] == FAIL and checks["migrations"]["fix"] == "unmask migrate"
    assert checks["model"]["status"] == WARN and "DEMO" in checks["model"]["detail"]  # test weights are demo
    assert checks["gpu"]["status"] == OK and checks["broker"]["status"] == OK
    assert code == 1
    upgrade(postgres.url)
    code, checks = _doctor(capsys, *base, "--device", "cpu")
    assert checks["migrations"]["status"] == OK
    assert code == 0


def test_doctor_reports_a_stopped_postgresql_as_such(postgres: Postgres, tmp_path: Path, capsys) -> None:
    postgres.stop()
    try:
        code, checks = _doctor(capsys, "--data-dir", str(tmp_path), "--database-url", postgres.url)
    finally:
        postgres.start()
    db = checks["database"]
    assert code == 1
    assert db["status"] == FAIL
    assert f"PostgreSQL at 127.0.0.1:{postgres.port} is not running (connection refused)" == db["detail"]
    assert "start it" in db["fix"]
    assert checks["migrations"]["status"] == SKIP


def test_doctor_table_names_each_problem_and_its_fix(tmp_path: Path, capsys) -> None:
    code = main(["doctor", "--data-dir", str(tmp_path), "--model-dir", str(tmp_path / "nope")])
    text = capsys.readouterr().out
    assert code == 1
    assert "FAIL    model" in text and "To fix:" in text and "models/build_default.py" in text
    assert "problem(s) found" in text


def test_a_broker_that_is_down_is_reported(tmp_path: Path) -> None:
    port = _free_port()
    finding = check_broker(Settings(data_dir=tmp_path, broker_url=f"redis://127.0.0.1:{port}/0"))
    assert finding.status == FAIL
    assert "not running" in finding.detail and "redis-server" in finding.fix


def test_a_corrupt_checkpoint_is_reported(tiny_checkpoint: Path, tmp_path: Path) -> None:
    broken = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, broken)
    with open(broken / "model.safetensors", "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\0")
    finding = check_model(Settings(model_dir=broken))
    assert finding.status == FAIL and "sha256" in finding.detail
    assert "problem(s) found" in format_findings([finding])
