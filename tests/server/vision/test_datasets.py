"""Tests for training/evaluation data loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from server.errors import ConfigError
from server.media.encode import write_video
from server.samples.faces import load_photos
from server.vision.augment import AugmentConfig
from server.vision.datasets import (
    SBI_LABEL,
    CropDataset,
    Item,
    export_video_crops,
    image_folder,
    is_video_folder,
    load_items,
    real_folder,
    split_by_group,
    with_sbi,
    write_rgb,
)


def make_folder(root: Path, n: int = 4, size: int = 40) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("real", "fake"):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            write_rgb(
                root / cls / f"vid{i % 2}__f{i:05d}.png",
                rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
            )
    return root


def test_image_folder_labels_and_groups(tmp_path: Path) -> None:
    items = image_folder(make_folder(tmp_path))
    assert sorted(it.label for it in items) == [0] * 4 + [1] * 4
    assert {it.group for it in items} == {"vid0", "vid1"}


def test_image_folder_needs_class_dirs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="real/ and fake/"):
        image_folder(tmp_path)


def test_real_folder_without_subdir(tmp_path: Path) -> None:
    write_rgb(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    assert [it.label for it in real_folder(tmp_path)] == [0]
    with pytest.raises(ConfigError):
        real_folder(tmp_path / "empty")


def test_split_by_group_never_splits_a_group(tmp_path: Path) -> None:
    items = [Item(np.zeros((4, 4, 3), np.uint8), i % 2, f"v{i % 10}") for i in range(40)]
    items = with_sbi(items, 0.5)
    train, val = split_by_group(items, 0.4, seed=1)
    assert {it.group for it in train}.isdisjoint({it.group for it in val})
    assert len(train) + len(val) == len(items) and {max(it.label, 0) for it in val} == {0, 1}


def test_with_sbi_adds_entries_from_reals() -> None:
    items = [Item(np.zeros((4, 4, 3), np.uint8), 0, "a"), Item(np.zeros((4, 4, 3), np.uint8), 1, "b")]
    out = with_sbi(items, 2.0)
    assert len(out) == 4 and [it.label for it in out[2:]] == [SBI_LABEL, SBI_LABEL]


def test_crop_dataset_sbi_augment_and_determinism(tmp_path: Path) -> None:
    photo = load_photos()[0]
    x, y, w, h = photo.face_box
    crop = np.ascontiguousarray(photo.image[y - 15 : y + h + 15, x - 15 : x + w + 15])
    items = [Item(crop, 0, "a"), Item(crop, SBI_LABEL, "a")]
    ds = CropDataset(items, (64, 64), augment_cfg=AugmentConfig(), seed=3)
    x0, l0 = ds[0]
    x1, l1 = ds[1]
    assert x0.shape == (3, 64, 64) and x0.dtype == torch.float32 and x0.min() >= 0 and x0.max() <= 1
    assert (l0, l1) == (0, 1) and ds.labels().tolist() == [0, 1]
    assert torch.equal(ds[1][0], x1)  # same epoch, same sample
    ds.set_epoch(1)
    assert not torch.equal(ds[1][0], x1)  # new epoch, new randomness


def test_video_folder_crops(tmp_path: Path) -> None:
    photo = load_photos()[0]
    frames = [np.ascontiguousarray(photo.image[:256, 100:356]) for _ in range(4)]
    for cls in ("real", "fake"):
        (tmp_path / "v" / cls).mkdir(parents=True)
        write_video(frames, tmp_path / "v" / cls / "clip.mp4", fps=25)
    assert is_video_folder(tmp_path / "v")
    items = load_items(tmp_path / "v", size=(32, 32), every=2)
    assert len(items) == 4 and {it.group for it in items} == {"real/clip", "fake/clip"}
    assert items[0].source.shape == (32, 32, 3)
    counts = export_video_crops(tmp_path / "v", tmp_path / "crops", size=(32, 32), every=2)
    assert counts == {"real": 2, "fake": 2}
    assert not is_video_folder(tmp_path / "crops")
    assert {it.group for it in image_folder(tmp_path / "crops")} == {"clip"}
