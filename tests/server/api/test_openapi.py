"""``/openapi.json`` matches the app: every route is documented, every documented path is a route,
and live responses of every operation validate against their documented schemas."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from jsonschema import Draft202012Validator
from PIL import Image

from server.openapi import openapi_document
from tests.helpers.videos import face_frames

# aiohttp adds HEAD to every GET route; OpenAPI describes HEAD implicitly through GET.
IMPLICIT_METHODS = {"HEAD"}


def _routes(app) -> set[tuple[str, str]]:
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method not in IMPLICIT_METHODS and route.resource is not None
    }


def _documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in doc["paths"].items() for method in item}


class Conformance:
    """Validates live responses against the document; remembers which operations were seen."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.seen: set[tuple[str, str, str]] = set()
        self.patterns = [
            (re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), path) for path in doc["paths"]
        ]

    def template(self, path: str) -> str:
        matches = [tpl for rx, tpl in self.patterns if rx.match(path)]
        assert matches, f"{path} matches no documented path"
        return min(matches, key=lambda t: t.count("{"))  # /v1/verdicts/lookup before /{check_id}

    async def check(self, resp: aiohttp.ClientResponse, body: bytes | None = None) -> Any:
        method, path = resp.method, resp.url.path
        template = self.template(path)
        op = self.doc["paths"][template].get(method.lower())
        assert op is not None, f"{method} {template} is not documented"
        status = str(resp.status)
        assert status in op["responses"], f"{method} {path}: status {status} is not documented"
        documented = op["responses"][status]
        content = documented.get("content", {})
        media = resp.content_type
        assert media in content, f"{method} {path} {status}: content type {media} not in {list(content)}"
        self.seen.add((method, template, status))
        body = await resp.read() if body is None else body
        if media != "application/json":
            return body.decode()
        data = await resp.json()
        schema = {**content[media]["schema"], "components": self.doc["components"]}
        errors = sorted(Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.path))
        assert not errors, f"{method} {path} {status}: " + "; ".join(
            f"{list(e.path)}: {e.message}" for e in errors[:5]
        )
        return data


def _jpeg(frame) -> bytes:
    out = io.BytesIO()
    Image.fromarray(frame).save(out, format="JPEG", quality=85)
    return out.getvalue()


def test_the_document_is_openapi_3_1_with_valid_schemas() -> None:
    doc = openapi_document()
    assert doc["openapi"].startswith("3.1")
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op.get("operationId") and op.get("summary"), (method, path)
            assert "500" in op["responses"], (method, path)
            for status, response in op["responses"].items():
                assert re.fullmatch(r"[1-5]\d\d", status), (method, path, status)
                for media in response.get("content", {}).values():
                    Draft202012Validator.check_schema(media["schema"])


async def test_every_route_is_documented_and_every_documented_path_is_a_route(api) -> None:
    doc = await (await api.get("/openapi.json")).json()
    routes, documented = _routes(api.app), _documented(doc)
    assert routes - documented == set(), "routes missing from /openapi.json"
    assert documented - routes == set(), "documented operations without a route"


async def test_live_responses_match_their_schemas(api, media_dir: Path) -> None:
    doc = await (await api.get("/openapi.json")).json()
    c = Conformance(doc)
    await c.check(await api.get("/openapi.json"))
    assert "<h1>Unmask API" in await c.check(await api.get("/docs"))
    await c.check(await api.get("/healthz"))
    await c.check(await api.get("/readyz"))
    await c.check(await api.get("/v1/models"))

    # An upload, followed to its verdict.
    form = aiohttp.FormData()
    form.add_field(
        "video", (media_dir / "face.mp4").read_bytes(), filename="face.mp4", content_type="video/mp4"
    )
    created = await c.check(await api.post("/v1/checks", data=form))
    check_id = created["id"]
    for _ in range(600):
        body = await c.check(await api.get(f"/v1/checks/{check_id}"))
        if body["status"] in ("done", "failed"):
            break
        await asyncio.sleep(0.1)
    assert body["status"] == "done", body
    events = await c.check(await api.get(f"/v1/checks/{check_id}/events"))
    assert "event: verdict" in events
    assert "<svg" in await c.check(await api.get(f"/checks/{check_id}"))

    # The cache, by every look-up route, then invalidated.
    sha = body["sha256"]
    await c.check(await api.get("/v1/verdicts", params={"sha256": sha}))
    await c.check(await api.post("/v1/verdicts/lookup", json={"sha256": sha}))
    again = aiohttp.FormData()
    again.add_field(
        "video", (media_dir / "face.mp4").read_bytes(), filename="f.mp4", content_type="video/mp4"
    )
    cached = await c.check(await api.post("/v1/checks", data=again))
    assert cached["verdict"]["cached"] is True
    await c.check(await api.delete(f"/v1/verdicts/{check_id}"))
    await c.check(await api.delete(f"/v1/verdicts/{check_id}"))  # 404 now

    # A frames check: open, send frames, finish.
    opened = await c.check(await api.post("/v1/checks", json={"source": "frames"}))
    frames = aiohttp.FormData()
    for i, frame in enumerate(list(face_frames(seconds=0.2, fps=20))[:3]):
        frames.add_field("frame", _jpeg(frame), filename=f"{i}.jpg", content_type="image/jpeg")
        frames.add_field("t", str(i * 0.5))
    frames.add_field("final", "1")
    await c.check(await api.post(f"/v1/checks/{opened['id']}/frames", data=frames))
    conflict = aiohttp.FormData()
    conflict.add_field("frame", b"x", filename="x.jpg", content_type="image/jpeg")
    conflict.add_field("t", "0")
    await c.check(await api.post(f"/v1/checks/{check_id}/frames", data=conflict))  # 409: not a frames check

    # Errors: each documented error body validates too.
    missing = "0" * 32
    await c.check(await api.get(f"/v1/checks/{missing}"))
    await c.check(await api.get(f"/v1/checks/{missing}/events"))
    await c.check(await api.post(f"/v1/checks/{missing}/frames", data=conflict))
    await c.check(await api.get(f"/checks/{missing}"))
    await c.check(await api.get("/v1/verdicts"))
    await c.check(await api.get("/v1/verdicts", params={"sha256": "abc"}))
    await c.check(await api.get("/v1/verdicts", params={"url": "https://example.com/v.mp4"}))
    await c.check(await api.post("/v1/verdicts/lookup", json={"frame_hashes": ["zz"]}))
    await c.check(await api.post("/v1/verdicts/lookup", json={"frame_hashes": ["00ff00ff00ff00ff"]}))
    await c.check(
        await api.post("/v1/verdicts/lookup", data=b"{", headers={"Content-Type": "application/json"})
    )
    await c.check(await api.post("/v1/checks", json={"url": "http://127.0.0.1:9/v.mp4"}))
    await c.check(await api.post("/v1/checks", data=b"x", headers={"Content-Type": "text/plain"}))
    bad = aiohttp.FormData()
    bad.add_field("video", b"<!doctype html><html></html>", filename="x.mp4", content_type="video/mp4")
    await c.check(await api.post("/v1/checks", data=bad))
    await c.check(await api.get("/metrics"))

    operations = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert {(m, p) for m, p, _ in c.seen} == operations, "every operation was exercised"
    statuses = {s for _, _, s in c.seen}
    assert {"200", "202", "400", "404", "409", "415"} <= statuses


@pytest.mark.parametrize(
    ("label"),
    ["authentic", "manipulated", "tampered", "inconclusive"],
)
async def test_report_verdict_payloads_match_the_verdict_schema(api, label: str) -> None:
    """The representative verdicts the report tests use are valid API verdicts too."""
    from server.keys import sessions_key
    from tests.helpers.verdicts import make_check

    doc = openapi_document()
    check_id = await make_check(api.app[sessions_key], label, thumbs=False)
    await Conformance(doc).check(await api.get(f"/v1/checks/{check_id}"))
