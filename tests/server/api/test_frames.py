"""Frames captured by a client: open a frames check, post JPEG frames, get a verdict."""

from __future__ import annotations

import asyncio
import io

import aiohttp
import numpy as np
import pytest
from PIL import Image

from server.analysis.lossless import grown_region
from server.keys import runtime_key
from tests.helpers.videos import face_frames


def _jpeg(frame: np.ndarray, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format=fmt, quality=90)
    return buf.getvalue()


def _form(frames: list[np.ndarray], times: list[float], final: bool = False) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for frame, t in zip(frames, times, strict=True):
        form.add_field("frame", _jpeg(frame), filename="f.jpg", content_type="image/jpeg")
        form.add_field("t", str(t))
    if final:
        form.add_field("final", "1")
    return form


async def _open(api) -> dict:
    resp = await api.post("/v1/checks", json={"source": "frames", "page_url": "https://social.example/p/1"})
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert body["status"] == "receiving"
    assert body["links"]["frames"] == f"/v1/checks/{body['id']}/frames"
    return body


async def _done(api, check_id: str) -> dict:
    for _ in range(300):
        body = await (await api.get(f"/v1/checks/{check_id}")).json()
        if body["status"] in ("done", "failed"):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError("not finished")


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return list(face_frames(seconds=4.0, fps=2))


async def test_frames_in_two_batches_then_final_give_a_verdict(api, frames) -> None:
    opened = await _open(api)
    url = opened["links"]["frames"]
    resp = await api.post(url, data=_form(frames[:4], [0.0, 0.5, 1.0, 1.5]))
    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    assert answer["accepted"] == 4
    # No tamper calibration on this model: patches would be read by nothing.
    assert answer["patches"] is False
    assert len(answer["faces"]) == 4 and all(len(f["boxes"]) <= 1 for f in answer["faces"])
    resp = await api.post(url, data=_form(frames[4:8], [2.0, 2.5, 3.0, 3.5], final=True))
    assert resp.status == 200
    assert (await resp.json())["frames"] == 8
    body = await _done(api, opened["id"])
    assert body["status"] == "done", body
    verdict = body["verdict"]
    assert verdict["frames_analyzed"] == 8
    assert verdict["faces"]["frames_with_faces"] >= 6
    # Their face crops went through the batcher every check shares (one row per face).
    batcher = api.server.app[runtime_key].batcher
    assert batcher is not None and batcher.crops >= verdict["faces"]["frames_with_faces"]
    assert [p["t"] for p in verdict["timeline"]] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]
    assert {"kind": "frames", "count": 8} in verdict["keys"]
    # Frames after the end are refused clearly.
    late = await api.post(url, data=_form(frames[:1], [4.0]))
    assert late.status == 409


async def test_idle_frames_check_is_finalised(aiohttp_client, settings, frames) -> None:
    from server.app import create_app

    api = await aiohttp_client(create_app(settings.replace(frames_idle_timeout_s=0.5)))
    opened = await _open(api)
    resp = await api.post(opened["links"]["frames"], data=_form(frames[:3], [0.0, 0.5, 1.0]))
    assert resp.status == 200
    body = await _done(api, opened["id"])
    assert body["status"] == "done"
    assert body["verdict"]["frames_analyzed"] == 3


@pytest.mark.parametrize(
    ("build", "status", "code"),
    [
        pytest.param(
            lambda f: [("frame", b"not a jpeg"), ("t", "0")], 422, "undecodable_media", id="garbage"
        ),
        pytest.param(
            lambda f: [("frame", _jpeg(f[0], "GIF")), ("t", "0")], 415, "unsupported_media", id="gif"
        ),
        pytest.param(lambda f: [("frame", _jpeg(f[0]))], 400, "invalid_field", id="missing-t"),
        pytest.param(lambda f: [("frame", _jpeg(f[0])), ("t", "soon")], 400, "invalid_field", id="bad-t"),
        pytest.param(lambda f: [("frame", _jpeg(f[0])), ("t", "-1")], 400, "invalid_field", id="negative-t"),
        pytest.param(lambda f: [("picture", _jpeg(f[0]))], 400, "invalid_field", id="unknown-field"),
        pytest.param(
            lambda f: [("frame", _jpeg(f[0])), ("t", "0")] * 17, 413, "payload_too_large", id="too-many"
        ),
        pytest.param(
            lambda f: [("frame", _jpeg(np.zeros((2200, 4000, 3), np.uint8))), ("t", "0")],
            422,
            "media_limit_exceeded",
            id="too-big",
        ),
        pytest.param(
            lambda f: [("patch", _jpeg(f[0][:64, :64], "PNG")), ("patch_at", "0,0"), ("frame", _jpeg(f[0]))],
            400,
            "invalid_field",
            id="patch-before-its-frame",
        ),
        pytest.param(
            lambda f: [
                ("frame", _jpeg(f[0])),
                ("t", "0"),
                ("patch", _jpeg(f[0][:64, :64])),
                ("patch_at", "0,0"),
            ],
            415,
            "unsupported_media",
            id="lossy-patch",
        ),
        pytest.param(
            lambda f: [("frame", _jpeg(f[0])), ("t", "0"), ("patch", _jpeg(f[0][:64, :64], "PNG"))],
            400,
            "invalid_field",
            id="patch-without-position",
        ),
        pytest.param(
            lambda f: [
                ("frame", _jpeg(f[0])),
                ("t", "0"),
                ("patch", _jpeg(f[0][:64, :64], "PNG")),
                ("patch_at", "a,b"),
            ],
            400,
            "invalid_field",
            id="bad-position",
        ),
        pytest.param(
            lambda f: [
                ("frame", _jpeg(f[0])),
                ("t", "0"),
                ("patch", _jpeg(f[0][:64, :64], "PNG")),
                ("patch_at", f"{f[0].shape[1] - 32},0"),
            ],
            400,
            "invalid_field",
            id="patch-outside-its-frame",
        ),
    ],
)
async def test_bad_frame_requests(api, frames, build, status: int, code: str) -> None:
    opened = await _open(api)
    form = aiohttp.FormData()
    for name, value in build(frames):
        if isinstance(value, bytes):
            form.add_field(name, value, filename="f.jpg", content_type="image/jpeg")
        else:
            form.add_field(name, value)
    resp = await api.post(opened["links"]["frames"], data=form)
    assert resp.status == status, await resp.text()
    assert (await resp.json())["error"]["code"] == code


async def test_frames_to_an_upload_check_or_unknown_check(api, media_dir, frames) -> None:
    form = aiohttp.FormData()
    form.add_field("video", (media_dir / "face.mp4").read_bytes(), filename="a.mp4", content_type="video/mp4")
    created = await (await api.post("/v1/checks", data=form)).json()
    resp = await api.post(f"/v1/checks/{created['id']}/frames", data=_form(frames[:1], [0.0]))
    assert resp.status == 409
    resp = await api.post(f"/v1/checks/{'0' * 32}/frames", data=_form(frames[:1], [0.0]))
    assert resp.status == 404


async def test_only_frames_with_a_lossless_face_patch_get_the_tamper_check(
    aiohttp_client, settings, flagging_checkpoint, frames
) -> None:
    from server.app import create_app

    # A calibration that flags every frame it sees, and no worker: flagged frames fail purification.
    api = await aiohttp_client(create_app(settings.replace(model_dir=flagging_checkpoint, purify=False)))
    opened = await _open(api)
    url = opened["links"]["frames"]
    resp = await api.post(url, data=_form(frames[:2], [0.0, 0.5]))
    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    assert answer["patches"] is True  # this server has a tamper calibration: patches are read
    first = answer["faces"]
    assert [f["tamper_checked"] for f in first] == [False, False]  # JPEG only: no check
    box = next(f["boxes"][0] for f in reversed(first) if f["boxes"])  # the latest face
    patch = grown_region(box, frames[2].shape, grow=3.0)
    form = aiohttp.FormData()
    for i, t in ((2, 1.0), (3, 1.5)):
        form.add_field("frame", _jpeg(frames[i]), filename="f.jpg", content_type="image/jpeg")
        form.add_field("t", str(t))
        form.add_field("patch", _jpeg(patch.of(frames[i]), "PNG"), filename="p.png", content_type="image/png")
        form.add_field("patch_at", f"{patch.x},{patch.y}")
    # A patch too small for the face's crop (just the box itself): that frame gets no check.
    form.add_field("frame", _jpeg(frames[4]), filename="f.jpg", content_type="image/jpeg")
    form.add_field("t", "2.0")
    bx, by, bw, bh = box
    form.add_field("patch", _jpeg(frames[4][by : by + bh, bx : bx + bw], "PNG"), filename="p.png")
    form.add_field("patch_at", f"{bx},{by}")
    form.add_field("final", "1")
    resp = await api.post(url, data=form)
    assert resp.status == 200, await resp.text()
    second = (await resp.json())["faces"]
    assert [f["tamper_checked"] for f in second] == [True, True, False], second
    verdict = (await _done(api, opened["id"]))["verdict"]
    tamper = verdict["tamper"]
    assert tamper["checked_frames"] == 2 and tamper["suspicious_frames"] == 2, tamper
    timeline = {p["t"]: p for p in verdict["timeline"]}
    assert timeline[1.0]["tamper"] is not None and timeline[0.0]["tamper"] is None
    assert timeline[1.0]["purify_status"] == "failed"  # flagged, and this server purifies nothing
    assert verdict["keys"]  # checked: indexed for reuse


@pytest.mark.parametrize("patched", [0, 1])
async def test_a_verdict_the_tamper_check_saw_too_little_of_is_not_kept_for_reuse(
    aiohttp_client, settings, flagging_checkpoint, frames, patched: int
) -> None:
    """No checked frame, or one: fewer than a tampered verdict needs, so the check could not have
    caught an attack; such a verdict must not answer the next check of these frames."""
    from server.app import create_app

    api = await aiohttp_client(create_app(settings.replace(model_dir=flagging_checkpoint, purify=False)))
    opened = await _open(api)
    form = _form(frames[:4], [0.0, 0.5, 1.0, 1.5], final=True)
    if patched:  # the whole of the last frame, losslessly: its face gets the check
        form = aiohttp.FormData()
        for i, t in enumerate([0.0, 0.5, 1.0, 1.5]):
            form.add_field("frame", _jpeg(frames[i]), filename="f.jpg", content_type="image/jpeg")
            form.add_field("t", str(t))
        form.add_field("patch", _jpeg(frames[3], "PNG"), filename="p.png", content_type="image/png")
        form.add_field("patch_at", "0,0")
        form.add_field("final", "1")
    resp = await api.post(opened["links"]["frames"], data=form)
    assert resp.status == 200, await resp.text()
    verdict = (await _done(api, opened["id"]))["verdict"]
    assert verdict["faces"]["frames_with_faces"] >= 3 and verdict["tamper"]["checked_frames"] == patched
    assert verdict["keys"] == []
    # The same frames again are checked anew, not answered from the cache.
    again = await _open(api)
    await api.post(again["links"]["frames"], data=_form(frames[:4], [0.0, 0.5, 1.0, 1.5], final=True))
    assert (await _done(api, again["id"]))["verdict"]["cached"] is False
