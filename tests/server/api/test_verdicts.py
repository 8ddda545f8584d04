"""Cached verdicts through the API: by sha256, by frame hashes, re-uploads, re-encodes, model change."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import aiohttp
import cv2
import pytest

from server.media.decode import open_video
from server.media.encode import write_video
from server.vision.phash import phash64, to_hex
from tests.helpers.videos import face_frames


@pytest.fixture(scope="module")
def cache_media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("apicache")
    frames = list(face_frames(seconds=6.0, size=(384, 288)))
    return {
        "original": write_video(frames, d / "original.mp4"),
        "reencoded": write_video([cv2.resize(f, (256, 192)) for f in frames], d / "reencoded.mp4", crf=34),
    }


def _form(path: Path) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("video", path.read_bytes(), filename=path.name, content_type="video/mp4")
    return form


async def _check(api, path: Path) -> tuple[int, dict]:
    resp = await api.post("/v1/checks", data=_form(path))
    body = await resp.json()
    if resp.status == 202:
        for _ in range(600):
            body = await (await api.get(f"/v1/checks/{body['id']}")).json()
            if body["status"] in ("done", "failed"):
                break
            await asyncio.sleep(0.1)
    return resp.status, body


async def test_same_bytes_again_are_answered_from_cache(api, cache_media) -> None:
    status, first = await _check(api, cache_media["original"])
    assert status == 202 and first["verdict"]["cached"] is False
    assert {"kind": "sha256", "value": first["sha256"]} in first["verdict"]["keys"]
    status, again = await _check(api, cache_media["original"])
    assert status == 200
    assert again["verdict"]["cached"] is True
    assert again["verdict"]["cache"]["check_id"] == first["id"]
    assert again["verdict"]["label"] == first["verdict"]["label"]
    assert again["verdict"]["score"] == first["verdict"]["score"]


async def test_reencoded_upload_ends_with_the_cached_verdict(api, cache_media) -> None:
    _, first = await _check(api, cache_media["original"])
    status, second = await _check(api, cache_media["reencoded"])
    assert status == 202  # different bytes: a fresh check starts, then finds the near-duplicate
    assert second["status"] == "done"
    assert second["verdict"]["cached"] is True
    assert second["verdict"]["cache"]["matched_by"] == "frames"
    assert second["verdict"]["cache"]["check_id"] == first["id"]
    # The re-encode's own bytes are now a key to the same verdict.
    sha = hashlib.sha256(cache_media["reencoded"].read_bytes()).hexdigest()
    resp = await api.get("/v1/verdicts", params={"sha256": sha})
    assert resp.status == 200
    assert (await resp.json())["check_id"] == first["id"]


async def test_lookup_by_sha256_and_by_frame_hashes(api, cache_media) -> None:
    _, first = await _check(api, cache_media["original"])
    resp = await api.get("/v1/verdicts", params={"sha256": first["sha256"]})
    assert resp.status == 200
    body = await resp.json()
    assert body["matched_by"] == "sha256" and body["verdict"]["cached"] is True
    with open_video(cache_media["reencoded"]) as reader:
        hashes = [to_hex(phash64(s.image)) for s in reader.samples(2.0)]
    resp = await api.post("/v1/verdicts/lookup", json={"frame_hashes": hashes})
    assert resp.status == 200
    assert (await resp.json())["check_id"] == first["id"]


async def test_misses_and_bad_lookups(api) -> None:
    assert (await api.get("/v1/verdicts", params={"sha256": "0" * 64})).status == 404
    assert (await api.get("/v1/verdicts", params={"url": "https://example.com/nothing.mp4"})).status == 404
    resp = await api.get("/v1/verdicts", params={"sha256": "xyz"})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_field"
    assert (await api.get("/v1/verdicts")).status == 400
    resp = await api.post("/v1/verdicts/lookup", json={"frame_hashes": ["nothex"]})
    assert resp.status == 400
    resp = await api.post("/v1/verdicts/lookup", data=b"{", headers={"Content-Type": "application/json"})
    assert resp.status == 400
    resp = await api.post("/v1/verdicts/lookup", json={"frame_hashes": ["0" * 16] * 300})
    assert resp.status == 400


async def test_invalidation_through_the_api(api, cache_media) -> None:
    _, first = await _check(api, cache_media["original"])
    resp = await api.delete(f"/v1/verdicts/{first['id']}")
    assert resp.status == 200 and (await resp.json())["removed"] > 1
    assert (await api.get("/v1/verdicts", params={"sha256": first["sha256"]})).status == 404
    assert (await api.delete(f"/v1/verdicts/{first['id']}")).status == 404


async def test_a_new_model_does_not_serve_the_old_verdict(
    aiohttp_client, settings, cache_media, tmp_path
) -> None:
    import torch

    from server.app import create_app
    from server.vision.card import default_card
    from server.vision.checkpoint import save_checkpoint
    from server.vision.registry import create_model

    first_client = await aiohttp_client(create_app(settings))
    _, first = await _check(first_client, cache_media["original"])
    await first_client.close()
    torch.manual_seed(1)
    newer = tmp_path / "newer"
    save_checkpoint(
        create_model("unmask_tiny"), default_card("unmask_tiny", id="test-tiny", version="0.0.2"), newer
    )
    second_client = await aiohttp_client(create_app(settings.replace(model_dir=newer)))
    resp = await second_client.get("/v1/verdicts", params={"sha256": first["sha256"]})
    assert resp.status == 404
    status, again = await _check(second_client, cache_media["original"])
    assert status == 202 and again["verdict"]["cached"] is False
    assert again["verdict"]["model"]["version"] == "0.0.2"
