"""Liveness, readiness and the model card endpoint."""

from __future__ import annotations


async def test_healthz_answers(api) -> None:
    resp = await api.get("/healthz")
    assert resp.status == 200
    assert (await resp.json()) == {"status": "ok"}


async def test_readyz_checks_database_and_model(api) -> None:
    resp = await api.get("/readyz")
    assert resp.status == 200
    assert (await resp.json())["status"] == "ready"


async def test_models_returns_the_active_card(api) -> None:
    resp = await api.get("/v1/models")
    assert resp.status == 200
    card = (await resp.json())["active"]
    assert card["id"] == "test-tiny"
    assert card["architecture"] == "unmask_tiny"
    assert card["demo"] is True
    assert len(card["weights_sha256"]) == 64


async def test_unknown_route_is_a_json_404(api) -> None:
    resp = await api.get("/v1/nope")
    assert resp.status == 404
    body = await resp.json()
    assert body["error"]["code"] == "not_found"
    assert body["error"]["request_id"]
