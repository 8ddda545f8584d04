"""Tests for the offline source photographs and their credits."""

from __future__ import annotations

import numpy as np

from server.samples.faces import CREDITS, load_backgrounds, load_lfw_donors, load_photos
from server.vision.faces import create_face_detector


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_photos_load_offline_with_detectable_faces() -> None:
    photos = load_photos()
    assert [p.identity for p in photos] == ["astronaut", "grace_hopper"]
    det = create_face_detector("haar")
    for p in photos:
        assert p.image.dtype == np.uint8 and p.image.ndim == 3 and p.credit
        found = det.detect(p.image)
        assert found and iou(tuple(found[0].as_list()), p.face_box) > 0.6, p.identity


def test_lfw_donors_and_backgrounds() -> None:
    donors = load_lfw_donors()
    assert len(donors) == 100 and donors[0].image.shape == (25, 25, 3) and donors[0].image.max() > 50
    assert len({d.identity for d in donors}) == 100
    assert all(b.ndim == 3 and b.shape[2] == 3 and b.dtype == np.uint8 for b in load_backgrounds())


def test_credits_name_every_source() -> None:
    names = {c["name"] for c in CREDITS}
    assert {"astronaut", "grace_hopper", "lfw_subset", "backgrounds"} <= names
    assert all(c["license"] and c["source"] for c in CREDITS)
