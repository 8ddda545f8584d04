"""``unmask token create|revoke|list`` against a real database."""

from __future__ import annotations

import asyncio
import json

from server.auth import verify
from server.cli import main
from server.db.engine import create_engine, session_factory


def _verifies(url: str, secret: str) -> bool:
    async def run() -> bool:
        engine = create_engine(url)
        try:
            return await verify(session_factory(engine), secret) is not None
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _json(capsys, argv: list[str]):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_create_prints_the_secret_once_and_list_never_shows_it(migrated_url: str, capsys) -> None:
    db = ["--database-url", migrated_url]
    made = _json(
        capsys, ["token", "create", "extension", "--rate", "30", "--max-concurrent", "2", "--json", *db]
    )
    secret = made["secret"]
    assert secret.startswith("unm_") and made["prefix"] == secret[:12]
    assert made["rate_per_minute"] == 30 and made["max_concurrent_checks"] == 2
    assert _verifies(migrated_url, secret)
    listed = _json(capsys, ["token", "list", "--json", *db])
    assert [t["name"] for t in listed] == ["extension"] and secret not in json.dumps(listed)
    assert main(["token", "list", *db]) == 0
    table = capsys.readouterr().out
    assert "extension" in table and made["prefix"] in table and secret not in table


def test_revoke_by_name_then_list_all(migrated_url: str, capsys) -> None:
    db = ["--database-url", migrated_url]
    assert main(["token", "create", "ci", *db]) == 0
    secret = capsys.readouterr().out.strip().splitlines()[-1]
    assert _verifies(migrated_url, secret)
    revoked = _json(capsys, ["token", "revoke", "ci", "--json", *db])
    assert revoked["status"] == "revoked" and revoked["revoked_at"]
    assert not _verifies(migrated_url, secret)
    assert _json(capsys, ["token", "list", "--json", *db]) == []
    assert [t["status"] for t in _json(capsys, ["token", "list", "--all", "--json", *db])] == ["revoked"]


def test_errors_exit_non_zero_with_a_message(migrated_url: str, capsys) -> None:
    db = ["--database-url", migrated_url]
    assert main(["token", "revoke", "nobody", *db]) == 2
    assert "no active token" in capsys.readouterr().err
    assert main(["token", "create", "twice", *db]) == 0
    assert main(["token", "create", "twice", *db]) == 2
    assert "exists" in capsys.readouterr().err


def test_create_migrates_a_fresh_database(tmp_path, capsys) -> None:
    made = _json(capsys, ["token", "create", "first", "--json", "--data-dir", str(tmp_path)])
    assert (tmp_path / "unmask.sqlite3").exists()
    assert _verifies(f"sqlite+aiosqlite:///{tmp_path / 'unmask.sqlite3'}", made["secret"])
