"""Checks with representative verdicts of every label, written straight to the database.

The report-page, OpenAPI and schemathesis tests use them instead of running real analyses.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import numpy as np

from server.db import repo
from server.db.thumbnails import save_thumbnails
from server.report.thumbs import FACE_THUMBNAILS, crop_thumbnail, face_thumbnail
from tests.helpers.videos import face_frames

LABELS = ("authentic", "manipulated", "tampered", "inconclusive")
BOX = [150, 40, 200, 233]  # where face_frames puts the face in a 384x288 frame (near enough)
PAIRS_SHOWN = 4  # original/purified pairs stored per tampered check


def _timeline(label: str) -> list[dict[str, Any]]:
    rng = np.random.default_rng(len(label))
    base = {"authentic": 0.12, "manipulated": 0.86, "tampered": 0.08, "inconclusive": 0.3}[label]
    points = []
    for i in range(16):
        no_face = label == "inconclusive" and i % 8 != 3
        score = None if no_face else float(np.clip(base + rng.normal(0, 0.06), 0, 1))
        tamper = None if no_face else float(abs(rng.normal(0.4, 0.15)))
        purified = None
        if label == "tampered" and 2 <= i <= 13:
            tamper, purified = 2.6 + i / 10, float(np.clip(0.9 + rng.normal(0, 0.03), 0, 1))
        points.append(
            {
                "index": i,
                "t": i * 0.5,
                "score": None if score is None else round(score, 4),
                "tamper": None if tamper is None else round(tamper, 4),
                "purified_score": purified,
                "boxes": [] if no_face else [BOX],
            }
        )
    return points


def verdict_payload(label: str, check_id: str) -> dict[str, Any]:
    """A representative verdict object of each label, as server.analysis.verdict builds it."""
    timeline = _timeline(label)
    faces = [p for p in timeline if p["score"] is not None]
    suspicious = [p for p in timeline if (p["tamper"] or 0) >= 2.0]
    scores = [p["purified_score"] if p in suspicious else p["score"] for p in faces]
    score = round(sum(scores) / len(scores), 4) if label != "inconclusive" else None
    reason = {
        "tampered": f"{len(suspicious)} frame(s) carry an adversarial perturbation; after purification "
        "the content scores manipulated",
        "inconclusive": f"no usable face: faces were found in {len(faces)} of 16 sampled frames "
        "(at least 3 are needed)",
    }.get(label)
    payload = {
        "label": label,
        "score": score,
        "confidence": None if score is None else 0.9375,
        "reason": reason,
        "frames_analyzed": len(timeline),
        "faces": {"frames_with_faces": len(faces), "max_per_frame": 1, "total": len(faces)},
        "tamper": {
            "suspicious_frames": len(suspicious),
            "purified_frames": len(suspicious),
            "max_score": max((p["tamper"] for p in timeline if p["tamper"] is not None), default=None),
            "threshold": 2.0,
        },
        "timeline": timeline,
        "model": {
            "id": "test-tiny",
            "version": "0.0.1",
            "architecture": "unmask_tiny",
            "demo": True,
            "threshold": 0.5,
        },
        "media": {"container": "mp4", "width": 384, "height": 288},
        "truncated": False,
        "cached": False,
        "keys": [{"kind": "sha256", "value": "ab" * 32}],
        "timings": {"decode": 0.41, "detect": 1.27, "purify": 3.9 if suspicious else 0.0, "total": 5.8},
        "created_at": datetime.now(UTC).isoformat(),
        "check_id": check_id,
    }
    if label == "tampered":
        payload["manipulated"] = score >= 0.5
    return payload


async def make_check(sessions, label: str, *, filename: str = "clip.mp4", thumbs: bool = True) -> str:
    """A finished check with ``label``'s verdict and thumbnails, written straight to the database."""
    check_id = uuid.uuid4().hex
    await repo.create_check(
        sessions,
        id=check_id,
        source="upload",
        filename=filename,
        model_id="test-tiny",
        model_version="0.0.1",
        status="running",
    )
    payload = verdict_payload(label, check_id)
    await repo.finish_check(sessions, check_id, payload)
    if thumbs:
        frames = list(islice(face_frames(seconds=1.0, fps=16), 16))
        items = [
            face_thumbnail(p["index"], p["t"], frames[p["index"]], p["boxes"])
            for p in payload["timeline"]
            if p["boxes"]
        ][:FACE_THUMBNAILS]
        for p in [p for p in payload["timeline"] if p["purified_score"] is not None][:PAIRS_SHOWN]:
            x, y, w, h = BOX
            crop = np.ascontiguousarray(frames[p["index"]][y : y + h, x : x + w])
            items.append(crop_thumbnail(p["index"], p["t"], crop, purified=False))
            smooth = (crop.astype(np.float32) * 0.85 + 30).astype(np.uint8)
            items.append(crop_thumbnail(p["index"], p["t"], smooth, purified=True))
        await save_thumbnails(sessions, check_id, items)
    return check_id
