"""Checks through the HTTP API: upload, status, verdict, Server-Sent Events, bad input."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import aiohttp
import pytest


def _form(path: Path, name: str = "video") -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field(name, path.read_bytes(), filename=path.name, content_type="video/mp4")
    return form


async def _wait_done(api, check_id: str, timeout: float = 60.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        body = await (await api.get(f"/v1/checks/{check_id}")).json()
        if body["status"] in ("done", "failed"):
            return body
        assert asyncio.get_running_loop().time() < deadline, f"check still {body['status']}"
        await asyncio.sleep(0.1)


def _parse_sse(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


async def test_upload_gives_202_then_a_verdict_with_a_timeline(api, media_dir: Path) -> None:
    resp = await api.post("/v1/checks", data=_form(media_dir / "face.mp4"))
    assert resp.status == 202, await resp.text()
    created = await resp.json()
    assert set(created) == {"id", "status", "links"}
    assert resp.headers["Location"] == f"/v1/checks/{created['id']}"
    body = await _wait_done(api, created["id"])
    assert body["status"] == "done", body
    verdict = body["verdict"]
    assert verdict["label"] in {"authentic", "manipulated"}
    assert 0.0 <= verdict["score"] <= 1.0
    assert verdict["frames_analyzed"] == 6  # 3 s at 2 frames/s
    assert verdict["faces"]["frames_with_faces"] >= 5
    assert [p["index"] for p in verdict["timeline"]] == list(range(6))
    assert all(p["boxes"] for p in verdict["timeline"][1:])
    assert verdict["model"]["id"] == "test-tiny" and verdict["model"]["demo"] is True
    assert set(verdict["timings"]) >= {"decode", "detect", "purify", "total"}
    assert body["sha256"] and body["size_bytes"] == (media_dir / "face.mp4").stat().st_size
    assert body["frames_analyzed"] == 6


async def test_events_stream_progress_frames_and_the_verdict(api, media_dir: Path) -> None:
    created = await (await api.post("/v1/checks", data=_form(media_dir / "face.mp4"))).json()
    resp = await api.get(f"/v1/checks/{created['id']}/events")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    events = _parse_sse(await resp.text())
    names = [n for n, _ in events]
    assert names.count("frame") == 6
    assert names[-1] == "verdict"
    assert "progress" in names
    frame_times = [d["t"] for n, d in events if n == "frame"]
    assert frame_times == sorted(frame_times)
    # A late subscriber, served from the database after the job is forgotten, sees the same frames.
    replay = _parse_sse(await (await api.get(f"/v1/checks/{created['id']}/events")).text())
    assert [n for n, _ in replay].count("frame") == 6


@pytest.mark.parametrize("name", ["face_moov_at_end.mp4", "face_fragmented.mp4"])
async def test_other_mp4_layouts_are_checked(api, media_dir: Path, name: str) -> None:
    created = await (await api.post("/v1/checks", data=_form(media_dir / name))).json()
    body = await _wait_done(api, created["id"])
    assert body["status"] == "done"
    assert body["verdict"]["frames_analyzed"] == 6


async def test_video_without_faces_is_inconclusive(api, media_dir: Path) -> None:
    created = await (await api.post("/v1/checks", data=_form(media_dir / "blank.mp4"))).json()
    body = await _wait_done(api, created["id"])
    assert body["verdict"]["label"] == "inconclusive"
    assert "no usable face" in body["verdict"]["reason"]


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        pytest.param(b"\x89PNG\r\n\x1a\n" + b"\0" * 100, 415, "unsupported_media", id="png"),
        pytest.param(b"<!doctype html><html></html>", 415, "unsupported_media", id="html"),
        pytest.param(b"\0\0\0\x18ftypisom" + b"\x07" * 5000, 422, "undecodable_media", id="garbage-mp4"),
        pytest.param(b"", 400, "missing_video", id="empty"),
    ],
)
async def test_bad_uploads_get_a_clear_4xx(api, payload: bytes, status: int, code: str) -> None:
    form = aiohttp.FormData()
    form.add_field("video", payload, filename="x.mp4", content_type="video/mp4")
    resp = await api.post("/v1/checks", data=form)
    assert resp.status == status, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] == code
    assert error["message"]


async def test_missing_video_field_is_400(api) -> None:
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("page_url", "https://example.com/")
    resp = await api.post("/v1/checks", data=form)
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "missing_video"


async def test_json_body_without_url_support_is_rejected_clearly(api) -> None:
    resp = await api.post("/v1/checks", data=b"hello", headers={"Content-Type": "text/plain"})
    assert resp.status == 400
    assert "multipart/form-data" in (await resp.json())["error"]["message"]


async def test_unknown_check_is_404(api) -> None:
    for path in ("/v1/checks/" + "0" * 32, "/v1/checks/" + "0" * 32 + "/events"):
        resp = await api.get(path)
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"


async def test_a_finished_check_stores_face_thumbnails_for_its_report(api, media_dir: Path) -> None:
    from server.db.thumbnails import get_thumbnails
    from server.keys import sessions_key
    from server.report.thumbs import FACE_THUMBNAILS

    created = await (await api.post("/v1/checks", data=_form(media_dir / "face.mp4"))).json()
    body = await _wait_done(api, created["id"])
    thumbs = await get_thumbnails(api.app[sessions_key], created["id"])
    # The first face frames, as many as the report shows (no frame is suspicious here).
    face_frames = [p["index"] for p in body["verdict"]["timeline"] if p["score"] is not None]
    assert face_frames
    assert sorted(t.index for t in thumbs) == face_frames[:FACE_THUMBNAILS]
    assert all(t.kind == "face" and t.jpeg[:2] == b"\xff\xd8" for t in thumbs)
    page = await api.get(f"/checks/{created['id']}")
    assert page.status == 200
    assert "data:image/jpeg" in await page.text() or "/thumbnails/" in await page.text()


async def test_with_purification_off_suspicious_frames_are_flagged_and_the_check_still_ends(
    aiohttp_client, settings, flagging_checkpoint: Path, media_dir: Path
) -> None:
    # No worker runs here: with purification on, this check would wait for one.
    from server.app import create_app

    api = await aiohttp_client(
        create_app(dataclasses.replace(settings, model_dir=flagging_checkpoint, purify=False))
    )
    created = await (await api.post("/v1/checks", data=_form(media_dir / "face.mp4"))).json()
    body = await _wait_done(api, created["id"])
    assert body["status"] == "done", body
    verdict = body["verdict"]
    face_frames = verdict["faces"]["frames_with_faces"]
    assert face_frames >= 5
    assert verdict["tamper"]["suspicious_frames"] == verdict["tamper"]["purify_failed"] == face_frames
    assert verdict["tamper"]["purified_frames"] == 0
    assert "purification is off on this server" in verdict["reason"]
    flagged = [p for p in verdict["timeline"] if p["boxes"]]
    assert {p["purify_status"] for p in flagged} == {"failed"}
