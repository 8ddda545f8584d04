"""Tests for the frame manipulations (self-blend and face swap) and the moving-face renderer."""

from __future__ import annotations

import numpy as np
import pytest

from server.samples.compose import render_scene, sample_scene
from server.samples.faces import load_lfw_donors, load_photos
from server.samples.manipulate import (
    VIDEO_SBI_MIN_VISIBILITY,
    FaceSwapTrack,
    SelfBlendTrack,
    color_transfer,
    visibility,
)

SIZE = (192, 144)


@pytest.fixture(scope="module")
def clip() -> list:
    rng = np.random.default_rng(0)
    photo = load_photos()[0]
    return list(render_scene(photo, sample_scene(rng), n_frames=6, size=SIZE, fps=25, rng=rng))


def test_render_scene_moves_the_face(clip: list) -> None:
    frames = [f for f, _ in clip]
    poses = [p for _, p in clip]
    assert all(f.shape == (SIZE[1], SIZE[0], 3) and f.dtype == np.uint8 for f in frames)
    assert len({p.box for p in poses}) > 1  # the face moves or zooms
    for p in poses:
        x, y, w, h = p.box
        assert x >= 0 and y >= 0 and x + w <= SIZE[0] and y + h <= SIZE[1]


def changed_outside_face(before: np.ndarray, after: np.ndarray, box: tuple[int, int, int, int]) -> float:
    x, y, w, h = box
    diff = np.abs(after.astype(int) - before.astype(int)).sum(axis=2)
    grow = w  # the blend may reach past the box, never a whole face width further
    diff[max(0, y - grow) : y + h + grow, max(0, x - grow) : x + w + grow] = 0
    return float(diff.max())


def test_self_blend_track_changes_the_face_only(clip: list) -> None:
    track = SelfBlendTrack(np.random.default_rng(1), n_frames=len(clip))
    frame, pose = clip[0]
    out = track(frame, pose, 0)
    x, y, w, h = pose.box
    assert np.abs(out.astype(int) - frame)[y : y + h, x : x + w].mean() > 0.5
    assert changed_outside_face(frame, out, pose.box) == 0
    assert track.params(0) == track.start


@pytest.mark.parametrize("donor", [load_photos()[1], load_lfw_donors()[0]], ids=["colour", "lfw-grey"])
def test_face_swap_track(clip: list, donor) -> None:  # type: ignore[no-untyped-def]
    track = FaceSwapTrack(donor, np.random.default_rng(2))
    frame, pose = clip[3]
    out = track(frame, pose, 3)
    x, y, w, h = pose.box
    assert np.abs(out.astype(int) - frame)[y : y + h, x : x + w].mean() > 3.0
    assert changed_outside_face(frame, out, pose.box) == 0


def test_color_transfer_matches_target_statistics() -> None:
    rng = np.random.default_rng(0)
    donor = rng.uniform(20, 120, (32, 32, 3)).astype(np.float32)
    target = rng.uniform(120, 240, (32, 32, 3)).astype(np.float32)
    region = np.ones((32, 32), bool)
    out = color_transfer(donor, target, region)
    assert abs(out.mean() - target.mean()) < 8.0


def test_self_blend_track_stays_visible_over_the_clip() -> None:
    for seed in range(5):
        track = SelfBlendTrack(np.random.default_rng(seed), n_frames=50)
        assert visibility(track.start) >= VIDEO_SBI_MIN_VISIBILITY
        assert track.params(0) != track.params(49)  # it drifts
        assert min(track.params(i).blend for i in range(50)) >= 0.75
