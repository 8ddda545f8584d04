"""Lossless face patches: pasting them into a captured frame, and which crops they cover."""

from __future__ import annotations

import numpy as np
import pytest

from server.analysis.frames import CROP_MARGIN
from server.analysis.lossless import Region, covers_crops, grown_region, paste_patch
from server.vision.faces import FaceBox, crop_face, crop_square


def test_paste_patch_writes_the_exact_pixels_and_names_the_region() -> None:
    frame = np.zeros((90, 160, 3), np.uint8)
    patch = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    region = paste_patch(frame, patch, 100, 50)
    assert region == Region(100, 50, 30, 20)
    assert np.array_equal(frame[50:70, 100:130], patch)
    assert frame[:50].sum() == 0 and frame[:, :100].sum() == 0


@pytest.mark.parametrize(("x", "y"), [(131, 0), (0, 71), (150, 80)])
def test_a_patch_that_does_not_fit_its_frame_is_refused(x: int, y: int) -> None:
    frame = np.zeros((90, 160, 3), np.uint8)
    with pytest.raises(ValueError, match="does not fit in the 160x90 frame"):
        paste_patch(frame, np.ones((20, 30, 3), np.uint8), x, y)
    assert frame.sum() == 0


def test_covers_crops_uses_the_pixels_crop_face_reads() -> None:
    shape = (288, 384, 3)
    box = FaceBox(100, 80, 60, 60)
    x0, y0, x1, y1 = crop_square(box, CROP_MARGIN)
    assert x1 - x0 == round(60 * (1 + CROP_MARGIN))
    exact = Region(x0, y0, x1 - x0, y1 - y0)
    assert covers_crops(exact, [box], shape, CROP_MARGIN)
    # One pixel short on any side: the crop would read JPEG pixels.
    for short in (
        Region(x0 + 1, y0, x1 - x0 - 1, y1 - y0),
        Region(x0, y0, x1 - x0 - 1, y1 - y0),
        Region(x0, y0 + 1, x1 - x0, y1 - y0 - 1),
        Region(x0, y0, x1 - x0, y1 - y0 - 1),
    ):
        assert not covers_crops(short, [box], shape, CROP_MARGIN)
    # Every face must be covered; no patch or no face: nothing to check.
    assert not covers_crops(exact, [box, FaceBox(300, 200, 40, 40)], shape, CROP_MARGIN)
    assert not covers_crops(None, [box], shape, CROP_MARGIN)
    assert not covers_crops(exact, [], shape, CROP_MARGIN)


def test_a_crop_past_the_frame_edge_needs_only_the_pixels_inside() -> None:
    shape = (288, 384, 3)
    box = FaceBox(0, 0, 50, 50)  # its crop starts above and left of the frame (edge-replicated)
    assert crop_square(box, CROP_MARGIN)[0] < 0
    x1, y1 = crop_square(box, CROP_MARGIN)[2:]
    assert covers_crops(Region(0, 0, x1, y1), [box], shape, CROP_MARGIN)
    frame = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    patched = np.zeros_like(frame)
    paste_patch(patched, frame[:y1, :x1], 0, 0)
    # Same crop from the patched frame as from the original: only the region was read.
    assert np.array_equal(
        crop_face(patched, box, margin=CROP_MARGIN, size=(64, 64)),
        crop_face(frame, box, margin=CROP_MARGIN, size=(64, 64)),
    )


def test_grown_region_is_the_extensions_patch_region() -> None:
    # Same numbers as extension/test/units.test.mjs (PATCH_GROW 2.2): box [280, 140, 80, 80] in 640x360.
    assert grown_region([280, 140, 80, 80], (360, 640, 3), 2.2) == Region(232, 92, 176, 176)
    # At the frame's corner: clipped (the extension's reach is ceil(20 + 44) = 64).
    assert grown_region([0, 0, 40, 40], (360, 640, 3), 2.2) == Region(0, 0, 64, 64)
    frame = np.arange(360 * 640 * 3, dtype=np.uint32).reshape(360, 640, 3)
    assert np.array_equal(Region(232, 92, 176, 176).of(frame), frame[92:268, 232:408])
