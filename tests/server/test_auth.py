"""API tokens: stored hashed, verified, revoked, cached briefly; when auth is required."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from server import auth
from server.auth import TokenVerifier, auth_required, create_token, list_tokens, revoke_token, verify
from server.db.auth_models import ApiToken
from server.db.engine import create_engine, session_factory
from server.errors import ConfigError, Conflict, InvalidField, NotFound
from server.settings import Settings


@pytest.fixture
async def sessions(migrated_url: str):
    engine = create_engine(migrated_url)
    yield session_factory(engine)
    await engine.dispose()


async def test_only_the_hash_of_the_secret_is_stored(sessions) -> None:
    secret, info = await create_token(sessions, "laptop", rate_per_minute=30)
    assert secret.startswith("unm_") and len(secret) == auth.TOKEN_CHARS
    assert info.prefix == secret[: auth.PREFIX_CHARS]
    async with sessions() as s:
        row = (await s.scalars(select(ApiToken))).one()
    assert row.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    stored = " ".join(str(getattr(row, c.key)) for c in ApiToken.__table__.columns)
    assert secret not in stored
    assert row.rate_per_minute == 30 and row.max_concurrent_checks is None


async def test_verify_accepts_the_secret_and_rejects_everything_else(sessions) -> None:
    secret, info = await create_token(sessions, "ci")
    assert (await verify(sessions, secret)).id == info.id
    other = "unm_" + "A" * 43
    for bad in ("", "Bearer " + secret, secret[:-1], secret + "x", other, secret.replace("unm_", "xyz_")):
        assert await verify(sessions, bad) is None, bad


async def test_revoked_token_no_longer_verifies(sessions) -> None:
    secret, _ = await create_token(sessions, "old")
    revoked = await revoke_token(sessions, "old")
    assert revoked.revoked_at is not None
    assert await verify(sessions, secret) is None
    with pytest.raises(NotFound):
        await revoke_token(sessions, "old")


async def test_revoke_by_prefix_and_name_reuse_after_revoke(sessions) -> None:
    _, first = await create_token(sessions, "phone")
    with pytest.raises(Conflict):
        await create_token(sessions, "phone")
    await revoke_token(sessions, first.prefix)
    secret, second = await create_token(sessions, "phone")
    assert second.id != first.id and await verify(sessions, secret) is not None
    names = [(t.name, t.revoked_at is None) for t in await list_tokens(sessions)]
    assert names == [("phone", False), ("phone", True)]
    assert [t.id for t in await list_tokens(sessions, include_revoked=False)] == [second.id]


@pytest.mark.parametrize(
    ("name", "limits"),
    [
        ("", {}),
        (" ", {}),
        ("x" * 65, {}),
        ("unm_lookslikeatoken", {}),
        ("tab\tname", {}),
        ("a", {"rate_per_minute": 0}),
        ("b", {"max_concurrent_checks": -1}),
    ],
)
async def test_bad_names_and_limits_are_refused_before_the_database(name: str, limits: dict) -> None:
    with pytest.raises(InvalidField):
        await create_token(None, name, **limits)  # type: ignore[arg-type]


async def test_last_used_is_written_at_most_once_a_minute(sessions, monkeypatch) -> None:
    secret, info = await create_token(sessions, "busy")
    assert info.last_used_at is None
    first = (await verify(sessions, secret)).last_used_at
    assert first is not None
    assert (await verify(sessions, secret)).last_used_at == first
    monkeypatch.setattr(auth, "LAST_USED_RESOLUTION_S", 0.0)
    assert (await verify(sessions, secret)).last_used_at > first


async def test_verifier_cache_hides_a_revocation_for_at_most_its_ttl(sessions) -> None:
    now = [100.0]
    verifier = TokenVerifier(ttl_s=5.0, clock=lambda: now[0])
    secret, _ = await create_token(sessions, "cached")
    assert await verifier.verify(sessions, secret) is not None
    await revoke_token(sessions, "cached")
    now[0] += 4.9
    assert await verifier.verify(sessions, secret) is not None  # still inside the TTL
    now[0] += 0.2
    assert await verifier.verify(sessions, secret) is None  # TTL over: the database says revoked


async def test_verifier_forget_drops_a_token_at_once(sessions) -> None:
    verifier = TokenVerifier(ttl_s=60.0)
    secret, info = await create_token(sessions, "gone")
    assert await verifier.verify(sessions, secret) is not None
    await revoke_token(sessions, "gone")
    verifier.forget(info.id)
    assert await verifier.verify(sessions, secret) is None


@pytest.mark.parametrize(
    ("mode", "host", "required"),
    [
        ("auto", "127.0.0.1", False),
        ("auto", "127.0.0.53", False),
        ("auto", "::1", False),
        ("auto", "[::1]", False),
        ("auto", "localhost", False),
        ("auto", "0.0.0.0", True),
        ("auto", "::", True),
        ("auto", "192.168.1.20", True),
        ("auto", "unmask.example", True),
        ("always", "127.0.0.1", True),
        ("never", "0.0.0.0", False),
    ],
)
def test_auth_required_follows_the_listen_address(mode: str, host: str, required: bool) -> None:
    assert auth_required(Settings(auth=mode, host=host)) is required


def test_settings_validate_the_access_knobs() -> None:
    with pytest.raises(ConfigError, match="auth"):
        Settings().replace(auth="sometimes")
    for name in ("rate_per_minute", "rate_burst", "max_concurrent_checks_per_token"):
        with pytest.raises(ConfigError, match=name):
            Settings().replace(**{name: 0})
    assert Settings().replace(auth="always", rate_burst=5).rate_burst == 5
