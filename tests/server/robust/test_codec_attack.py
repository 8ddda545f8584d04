"""Frame-space, compression-robust attacks: the crop geometry, the codec stand-ins, the fit data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data

from server.robust.codec_attack import (
    FaceTarget,
    FrameAttack,
    codec_robust_crops,
    h264_roundtrip,
    render_crop,
    yuv420,
)
from server.vision.faces import FaceBox, crop_face


@pytest.mark.parametrize(
    "box", [FaceBox(150, 40, 110, 120), FaceBox(5, 3, 60, 60), FaceBox(420, 400, 90, 100)]
)
def test_render_crop_matches_crop_face(box: FaceBox) -> None:
    image = data.astronaut()
    expected = crop_face(image, box, margin=0.3, size=(128, 128)).astype(np.float32) / 255
    pixels = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    got = render_crop(pixels, box, (128, 128)).permute(1, 2, 0).numpy()
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1 / 255  # the same pixels, up to 8-bit rounding


def test_yuv420_is_close_to_the_encoders_chroma_subsampling() -> None:
    image = data.astronaut()[100:228, 150:278]
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    ours = (yuv420(x)[0].permute(1, 2, 0).numpy() * 255).round()
    encoded = h264_roundtrip(image, crf=0).astype(np.float32)  # lossless luma: only 4:2:0 is left
    assert np.abs(ours - encoded).mean() < np.abs(image.astype(np.float32) - encoded).mean()


def test_frame_attack_stays_in_budget_and_lowers_the_loss(toy_model) -> None:
    frame = (np.random.default_rng(0).random((40, 40, 3)) * 200 + 20).astype(np.uint8)
    target = FaceTarget.of(0, frame, [FaceBox(8, 8, 24, 24)])
    attack = FrameAttack(toy_model, (24, 24), offset=0.0, seed=0)
    first = attack.run([target], 8 / 255, 1)
    last = attack.run([target], 8 / 255, 15)
    assert float(target.delta.abs().max()) <= 8 / 255 + 1e-6
    assert last <= first
    assert target.perturbed().dtype == np.uint8


def test_codec_robust_crops_pairs_clean_and_attacked_after_a_real_encode(toy_model) -> None:
    crops = [(np.random.default_rng(i).random((24, 24, 3)) * 255).astype(np.uint8) for i in range(3)]
    clean, attacked = codec_robust_crops(
        toy_model, crops, offset=0.0, eps_values=(4 / 255,), sides=(20, 32), steps=2
    )
    assert clean.shape == attacked.shape == (3, 24, 24, 3) and clean.dtype == np.uint8
    assert not np.array_equal(clean, attacked)
