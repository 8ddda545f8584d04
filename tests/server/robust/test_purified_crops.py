"""Purified training crops: the right crops purified, grouped by video, written as an image folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from server.errors import ConfigError
from server.robust.purified_crops import purify_training_crops, write_image_folder
from server.samples import generate_samples
from server.vision.datasets import load_items
from server.vision.detector import Detector


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("purified-samples")
    generate_samples(root, n_real=1, n_fake=1, seconds=1.0, size=160, seed=11)
    return root


def test_purifies_each_kind_and_writes_a_folder_split_by_video(
    tiny_checkpoint: Path, samples: Path, tmp_path: Path
) -> None:
    det = Detector.load(tiny_checkpoint, device="cpu")
    seen: list[tuple[int, int]] = []
    crops = purify_training_crops(
        det, samples, n_real=3, n_fake=2, n_attacked=2, preset="tiny", every=3,
        progress=lambda done, total: seen.append((done, total)),
    )  # fmt: skip
    assert crops.kinds == ["real"] * 3 + ["fake"] * 2 + ["attacked"] * 2
    assert crops.images.shape == (7, 3, *det.card.input_size)
    assert seen[-1] == (7, 7) and crops.seconds > 0
    # Purified as a worker scores them: the 8-bit grid, and not the unpurified crops.
    assert torch.equal(crops.images, (crops.images * 255).round() / 255)
    assert crops.labels().tolist() == [0, 0, 0, 1, 1, 1, 1]
    real_videos = {p.stem for p in (samples / "real").iterdir()}
    assert {g.rsplit("/", 1)[-1] for g in crops.groups[:3]} == real_videos

    counts = write_image_folder(crops, tmp_path / "purified")
    assert counts == {"real": 3, "fake": 4}
    items = load_items(tmp_path / "purified", size=tuple(det.card.input_size))
    # Each file keeps its video's group, so a split by group holds whole videos out.
    assert sorted({it.group for it in items if it.label == 0}) == sorted(real_videos)
    assert all(it.label == 1 for it in items if it.group not in real_videos)
    assert sum(1 for it in items if "__a" in Path(str(it.source)).name) == 2


def test_needs_both_classes(tiny_checkpoint: Path, samples: Path, tmp_path: Path) -> None:
    only_real = Path(shutil.copytree(samples / "real", tmp_path / "only" / "real"))
    det = Detector.load(tiny_checkpoint, device="cpu")
    with pytest.raises(ConfigError, match="both real and fake"):
        purify_training_crops(det, only_real.parent, n_real=1, n_fake=1, n_attacked=1, preset="tiny")
