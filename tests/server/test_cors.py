"""CORS is granted to the configured extension origins only."""

from __future__ import annotations

import pytest

EXT = "chrome-extension://abcdefghijklmnopabcdefghijklmnop"


@pytest.fixture
async def cors_api(aiohttp_client, settings):
    from server.app import create_app

    return await aiohttp_client(create_app(settings.replace(cors_origins=f"{EXT}, moz-extension://1234")))


async def test_preflight_for_an_allowed_origin(cors_api) -> None:
    resp = await cors_api.options(
        "/v1/checks", headers={"Origin": EXT, "Access-Control-Request-Method": "POST"}
    )
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == EXT
    assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]


async def test_preflight_for_another_origin_is_refused(cors_api) -> None:
    resp = await cors_api.options(
        "/v1/checks", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert resp.status == 403
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_simple_responses_carry_cors_only_for_allowed_origins(cors_api) -> None:
    ok = await cors_api.get("/healthz", headers={"Origin": EXT})
    assert ok.headers["Access-Control-Allow-Origin"] == EXT
    assert ok.headers["X-Request-Id"]
    other = await cors_api.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    missing = await cors_api.get("/v1/checks/" + "0" * 32, headers={"Origin": EXT})
    assert missing.status == 404 and missing.headers["Access-Control-Allow-Origin"] == EXT
