"""Hostile media never crashes the server: every file ends as frames or a clear 4xx."""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import pytest

from server.errors import UnmaskError
from server.media.sandbox import SandboxLimits, SandboxPool, _Child, open_sandboxed_video
from tests.fuzz.corpus import TRICKS, mutants, write_bases

LIMITS = SandboxLimits(hang_s=20.0)

# Every API_STRIDE-th mutant (and every trick) also goes through the HTTP API.
API_STRIDE = 12


class _RecordingPool(SandboxPool):
    """A pool that remembers its children, to read their peak memory afterwards."""

    def __init__(self) -> None:
        super().__init__()
        self.children: list[_Child] = []

    def take(self) -> _Child:
        child = super().take()
        self.children.append(child)
        return child


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, Path]]:
    """The mutated files on disk, named by their mutation."""
    directory = tmp_path_factory.mktemp("fuzz")
    out = []
    for name, data in mutants(write_bases(directory)):
        path = directory / f"m{len(out):04d}-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}"
        path.write_bytes(data)
        out.append((name, path))
    return out


def _decode(path: Path, pool: SandboxPool) -> tuple[str, str]:
    """("frames", count) or ("error", "<status> <code>: <message>"); anything else propagates."""
    try:
        with open_sandboxed_video(path, rlimits=LIMITS, pool=pool) as reader:
            return "frames", str(sum(1 for _ in reader.samples(2.0)))
    except UnmaskError as err:
        return "error", f"{err.status} {err.code}: {err.message}"


def test_every_mutant_decodes_or_gets_a_clear_client_error(corpus: list[tuple[str, Path]]) -> None:
    assert len(corpus) >= 500
    pool = _RecordingPool()
    try:
        with ThreadPoolExecutor(max_workers=4) as executor:
            outcomes = list(executor.map(lambda item: _decode(item[1], pool), corpus))
    finally:
        pool.close()
    bad = []
    for (name, _), (kind, detail) in zip(corpus, outcomes, strict=True):
        if kind == "error" and not re.match(r"4\d\d [a-z_]+: \S", detail):
            bad.append((name, detail))
    assert not bad, bad[:10]
    assert any(kind == "frames" for kind, _ in outcomes), "some light mutants should still decode"
    assert sum(kind == "error" for kind, _ in outcomes) > len(corpus) // 4
    peaks = [c.peak_rss_bytes for c in pool.children if c.peak_rss_bytes is not None]
    assert len(peaks) >= len(pool.children) * 0.9, "the zygote should report (almost) every exit"
    assert max(peaks) < LIMITS.address_space_bytes


async def test_the_api_answers_every_mutant_with_4xx_or_a_verdict(
    api, corpus: list[tuple[str, Path]]
) -> None:
    chosen = [item for i, item in enumerate(corpus) if i % API_STRIDE == 0 or item[0] in TRICKS]
    accepted: list[tuple[str, str]] = []
    for name, path in chosen:
        form = aiohttp.FormData()
        form.add_field("video", path.read_bytes(), filename=path.name, content_type="video/mp4")
        resp = await api.post("/v1/checks", data=form)
        body = await resp.json()
        assert resp.status < 500, (name, body)
        if resp.status >= 400:
            assert body["error"]["message"] and body["error"]["code"] != "internal", (name, body)
        elif resp.status == 200:
            assert body["verdict"], (name, body)
        else:
            assert resp.status == 202, (name, body)
            accepted.append((name, body["id"]))
    for name, check_id in accepted:
        body = await _wait_finished(api, check_id)
        if body["status"] == "failed":
            assert body["error"]["message"] and body["error"]["code"] != "internal", (name, body)
        else:
            assert body["verdict"]["label"], (name, body)
    assert (await api.get("/healthz")).status == 200


async def _wait_finished(api, check_id: str, timeout: float = 60.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        body = await (await api.get(f"/v1/checks/{check_id}")).json()
        if body["status"] in ("done", "failed"):
            return body
        assert asyncio.get_running_loop().time() < deadline, f"check {check_id} still {body['status']}"
        await asyncio.sleep(0.1)


async def test_a_malformed_part_header_is_a_400(api) -> None:
    """Found by the atheris harness: aiohttp's InvalidHeader inside a multipart body was a 500."""
    body = (
        b'--b\r\nContent-Disposition: form-data; name="video"; filena\xbc\xb4\x00\x1f\x01\r\n\r\n'
        + b"\0" * 64
        + b"\r\n--b--\r\n"
    )
    resp = await api.post(
        "/v1/checks", data=body, headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["error"]["message"].startswith("malformed request body")


async def test_a_body_without_its_boundary_is_a_400(api) -> None:
    """Found by the atheris harness: aiohttp's ValueError for a missing boundary was a 500."""
    headers = {"Content-Type": "multipart/form-data; boundary=b"}
    resp = await api.post("/v1/checks", data=b":nb\x00\x1aE\xdf\xa3", headers=headers)
    assert resp.status == 400, await resp.text()
    assert "malformed multipart body" in (await resp.json())["error"]["message"]
