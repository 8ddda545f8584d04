"""Training and evaluation data: image folders (``real/``, ``fake/``), real-only folders with
self-blended pseudo-fakes, and face crops taken from videos with the service's face detector.

A folder whose ``real/`` and ``fake/`` hold videos is read as crops of the largest face per
sampled frame, so the generated sample set can be trained on or evaluated directly.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from server.errors import ConfigError
from server.vision.augment import AugmentConfig, augment
from server.vision.faces import FaceDetector, create_face_detector, crop_face
from server.vision.sbi import crop_face_box, self_blend

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
VIDEO_EXTS = {".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi"}
CLASS_DIRS = {"real": 0, "fake": 1}
# Crops exported from a video are named "<video>__f<frame>.png"; the part before "__" groups
# them, so train/validation splits never put frames of one video on both sides.
GROUP_SEP = "__"
CROP_MARGIN = 0.3  # crop_face's default: the face plus 30 %, as the inference pipeline crops
SBI_LABEL = -1  # an item to be turned into a self-blended pseudo-fake (label 1) when loaded


@dataclass(frozen=True)
class Item:
    """One training/evaluation sample: an image file or an in-memory crop, its label and group."""

    source: Path | np.ndarray
    label: int
    group: str


def _files(folder: Path, exts: set[str]) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in exts)


def group_of(path: Path) -> str:
    """The split group of a file: its video name for exported crops, else the file stem."""
    return path.stem.split(GROUP_SEP)[0]


def is_video_folder(root: str | Path) -> bool:
    """Whether ``root``'s class folders hold videos rather than images."""
    root = Path(root)
    return any(_files(root / d, VIDEO_EXTS) for d in CLASS_DIRS if (root / d).is_dir())


def image_folder(root: str | Path) -> list[Item]:
    """Items of an image folder with ``real/`` (label 0) and ``fake/`` (label 1) subfolders."""
    root = Path(root)
    if not all((root / d).is_dir() for d in CLASS_DIRS):
        raise ConfigError(f"{root} must contain real/ and fake/ subfolders", path=str(root))
    items = [
        Item(p, label, group_of(p)) for d, label in CLASS_DIRS.items() for p in _files(root / d, IMAGE_EXTS)
    ]
    if not items:
        raise ConfigError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) under {root}", path=str(root))
    return items


def real_folder(root: str | Path) -> list[Item]:
    """Real face crops for self-blended training: ``root/real/`` if present, else every image in ``root``."""
    root = Path(root)
    folder = root / "real" if (root / "real").is_dir() else root
    items = [Item(p, 0, group_of(p)) for p in _files(folder, IMAGE_EXTS)]
    if not items:
        raise ConfigError(f"no real images under {folder}", path=str(folder))
    return items


def with_sbi(items: Sequence[Item], ratio: float, seed: int = 0) -> list[Item]:
    """``items`` plus self-blend entries made from ``ratio`` × (number of real items) real ones."""
    reals = [it for it in items if it.label == 0]
    n = round(len(reals) * ratio)
    rng = np.random.default_rng([seed, 0x5B1])
    picks = rng.choice(len(reals), size=n, replace=n > len(reals)) if n and reals else []
    return [*items, *(Item(reals[i].source, SBI_LABEL, reals[i].group) for i in picks)]


def split_by_group(items: Sequence[Item], fraction: float, seed: int = 0) -> tuple[list[Item], list[Item]]:
    """(train, val): about ``fraction`` of the groups of each class go to validation."""
    train: list[Item] = []
    val: list[Item] = []
    rng = np.random.default_rng([seed, 0x5717])
    for label in (0, 1):
        groups = sorted({it.group for it in items if max(it.label, 0) == label})
        n_val = min(len(groups) - 1, max(1, round(len(groups) * fraction))) if fraction > 0 and groups else 0
        held = set(rng.permutation(groups)[:n_val].tolist()) if n_val > 0 else set()
        for it in items:
            if max(it.label, 0) == label:
                (val if it.group in held else train).append(it)
    return train, val


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ConfigError(f"cannot read image {path}", path=str(path))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_rgb(path: str | Path, image: np.ndarray) -> None:
    """Write an HxWx3 uint8 RGB image (format from the suffix)."""
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")


def _fit(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to (H, W) unless it already is."""
    if image.shape[:2] == tuple(size):
        return image
    shrink = image.shape[0] > size[0]
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def iter_video_frames(path: str | Path, every: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """(index, RGB frame) for every ``every``-th decoded frame of a local video file."""
    with av.open(str(path), options={"protocol_whitelist": "file"}) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % every == 0:
                yield i, frame.to_ndarray(format="rgb24")


def video_crops(
    path: str | Path,
    *,
    size: tuple[int, int],
    every: int = 1,
    margin: float = CROP_MARGIN,
    detector: FaceDetector | None = None,
) -> list[tuple[int, np.ndarray]]:
    """(frame index, crop) of the largest face in every ``every``-th frame; faceless frames are skipped."""
    detector = detector or create_face_detector("haar")
    out = []
    for i, frame in iter_video_frames(path, every):
        faces = detector.detect(frame)
        if faces:
            out.append((i, crop_face(frame, faces[0], margin=margin, size=size)))
    return out


def video_folder(
    root: str | Path,
    *,
    size: tuple[int, int],
    every: int = 1,
    margin: float = CROP_MARGIN,
    detector: str = "haar",
) -> list[Item]:
    """In-memory face-crop items of a folder with ``real/`` and ``fake/`` videos (group = video)."""
    root = Path(root)
    det = create_face_detector(detector)
    items = []
    for d, label in CLASS_DIRS.items():
        for video in _files(root / d, VIDEO_EXTS) if (root / d).is_dir() else []:
            group = f"{d}/{video.stem}"
            items += [
                Item(c, label, group)
                for _, c in video_crops(video, size=size, every=every, margin=margin, detector=det)
            ]
    if not items:
        raise ConfigError(f"no faces found in videos under {root}", path=str(root))
    return items


def export_video_crops(
    root: str | Path,
    out: str | Path,
    *,
    size: tuple[int, int],
    every: int = 1,
    margin: float = CROP_MARGIN,
    detector: str = "haar",
) -> dict[str, int]:
    """Write a video folder's face crops as an image folder (``<video>__f<frame>.png``); counts per class."""
    root, out = Path(root), Path(out)
    det = create_face_detector(detector)
    counts = {d: 0 for d in CLASS_DIRS}
    for d in CLASS_DIRS:
        (out / d).mkdir(parents=True, exist_ok=True)
        for video in _files(root / d, VIDEO_EXTS) if (root / d).is_dir() else []:
            stem = re.sub(r"[^A-Za-z0-9_.-]", "_", video.stem)
            for i, crop in video_crops(video, size=size, every=every, margin=margin, detector=det):
                write_rgb(out / d / f"{stem}{GROUP_SEP}f{i:05d}.png", crop)
                counts[d] += 1
    return counts


def load_items(
    data: str | Path,
    *,
    size: tuple[int, int],
    real_only: bool = False,
    every: int = 1,
    margin: float = CROP_MARGIN,
) -> list[Item]:
    """Items of any supported folder: real-only images, an image folder, or a video folder."""
    if real_only:
        return real_folder(data)
    if is_video_folder(data):
        return video_folder(data, size=size, every=every, margin=margin)
    return image_folder(data)


class CropDataset(Dataset):
    """Face crops as (float tensor 3xHxW in [0, 1], label) with seeded per-item randomness.

    Each item's augmentation and self-blend use an RNG seeded by (seed, epoch, index), so an
    epoch is reproducible regardless of worker order, and a resumed run sees the same data.
    """

    def __init__(
        self,
        items: Sequence[Item],
        size: tuple[int, int],
        *,
        augment_cfg: AugmentConfig | None = None,
        seed: int = 0,
        margin: float = CROP_MARGIN,
        cache: bool = True,
    ) -> None:
        self.items = list(items)
        self.size = tuple(size)
        self.augment_cfg = augment_cfg
        self.seed = seed
        self.epoch = 0
        self.face_box = crop_face_box(self.size, margin)
        self._cache: dict[int, np.ndarray] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Select the per-epoch randomness (call before each epoch)."""
        self.epoch = epoch

    def labels(self) -> np.ndarray:
        """Labels as loaded (self-blend entries count as fake)."""
        return np.array([1 if it.label == SBI_LABEL else it.label for it in self.items], np.int64)

    def image(self, index: int) -> np.ndarray:
        """The (cached) resized source crop of item ``index``, before any randomness."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        src = self.items[index].source
        img = _fit(src if isinstance(src, np.ndarray) else read_rgb(src), self.size)
        if self._cache is not None:
            self._cache[index] = img
        return img

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        item = self.items[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        img = self.image(index)
        label = item.label
        if label == SBI_LABEL:
            img, _ = self_blend(img, self.face_box, rng)
            label = 1
        if self.augment_cfg is not None:
            img = augment(img, rng, self.augment_cfg)
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)
        return x, label
