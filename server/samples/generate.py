"""Write the sample video set: real clips of the source photographs and manipulated ones
(self-blended and face-swapped), as faststart H.264 MP4 plus a ``manifest.json``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from server.media.encode import write_video
from server.samples.compose import FacePose, render_scene, sample_scene
from server.samples.faces import CREDITS, load_lfw_donors, load_photos
from server.samples.manipulate import FaceSwapTrack, SelfBlendTrack

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
FPS = 25
METHODS = ("self_blend", "face_swap")
# x264 quality varies per clip like uploads do (18 = near-lossless, 30 = heavily compressed).
CRF_RANGE = (18, 30)

Manipulation = Callable[[np.ndarray, FacePose, int], np.ndarray]


def _video_seed(seed: int, index: int) -> int:
    """A per-video seed derived from the set seed, recorded so one clip can be rebuilt alone."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _frame_size(size: int) -> tuple[int, int]:
    """(w, h) for a ``size``-wide 4:3 frame, both even as yuv420p needs."""
    w = size - size % 2
    h = round(w * 3 / 4)
    return w, h - h % 2


def _plan(n_real: int, n_fake: int, seed: int) -> list[dict[str, Any]]:
    """Label, identity, method and donor of every clip, in a fixed order."""
    photos = load_photos()
    plan: list[dict[str, Any]] = []
    for i in range(n_real):
        plan.append(
            {"label": "real", "method": "none", "identity": photos[i % len(photos)].identity, "donor": None}
        )
    pick = np.random.default_rng([seed, 7])
    for j in range(n_fake):
        method = METHODS[j % len(METHODS)]
        target = photos[(j // len(METHODS)) % len(photos)]
        donor = None
        if method == "face_swap":
            others = [p.identity for p in photos if p.identity != target.identity]
            # Alternate a full-colour identity with a low-resolution grey LFW face.
            if (j // len(METHODS)) % 2 == 0 and others:
                donor = others[int(pick.integers(len(others)))]
            else:
                donor = f"lfw_{int(pick.integers(len(load_lfw_donors()))):03d}"
        plan.append({"label": "fake", "method": method, "identity": target.identity, "donor": donor})
    for index, item in enumerate(plan):
        item["seed"] = _video_seed(seed, index)
    return plan


def _manipulation(item: dict[str, Any], rng: np.random.Generator, n_frames: int) -> Manipulation | None:
    """The per-frame manipulation for one planned clip (None for real clips)."""
    if item["method"] == "self_blend":
        return SelfBlendTrack(rng, n_frames)
    if item["method"] == "face_swap":
        donors = {p.identity: p for p in (*load_photos(), *load_lfw_donors())}
        return FaceSwapTrack(donors[item["donor"]], rng)
    return None


def _frames(
    item: dict[str, Any], n_frames: int, size: tuple[int, int], boxes: list[list[int]]
) -> Iterator[np.ndarray]:
    """Render one clip frame by frame, recording the face box of each frame in ``boxes``."""
    rng = np.random.default_rng(item["seed"])
    photo = next(p for p in load_photos() if p.identity == item["identity"])
    scene = sample_scene(rng)
    manip = _manipulation(item, rng, n_frames)
    for i, (frame, pose) in enumerate(
        render_scene(photo, scene, n_frames=n_frames, size=size, fps=FPS, rng=rng)
    ):
        boxes.append(list(pose.box))
        yield frame if manip is None else manip(frame, pose, i)


def generate_samples(
    out_dir: str | Path,
    *,
    n_real: int = 12,
    n_fake: int = 12,
    seconds: float = 3.0,
    size: int = 320,
    seed: int = 0,
) -> dict[str, Any]:
    """Write ``n_real`` real and ``n_fake`` manipulated clips under ``out_dir`` and return the manifest.

    Files go to ``real/`` and ``fake/``; ``manifest.json`` lists every clip's label, identity,
    method, donor, seed, size, frame count and per-frame face boxes, plus the photo credits.
    """
    if n_real < 0 or n_fake < 0 or n_real + n_fake == 0:
        raise ValueError("generate_samples needs at least one video")
    if seconds <= 0 or size < 64:
        raise ValueError("seconds must be > 0 and size >= 64")
    out = Path(out_dir)
    (out / "real").mkdir(parents=True, exist_ok=True)
    (out / "fake").mkdir(parents=True, exist_ok=True)
    frame_size = _frame_size(size)
    n_frames = max(1, round(seconds * FPS))
    started = time.perf_counter()
    videos = []
    for index, item in enumerate(_plan(n_real, n_fake, seed)):
        suffix = item["identity"] if item["label"] == "real" else f"{item['method']}_{item['identity']}"
        if item["donor"]:
            suffix += f"_from_{item['donor']}"
        rel = f"{item['label']}/{index:03d}_{suffix}.mp4"
        crf = int(np.random.default_rng(item["seed"] ^ 0x5EED).integers(CRF_RANGE[0], CRF_RANGE[1] + 1))
        boxes: list[list[int]] = []
        write_video(
            _frames(item, n_frames, frame_size, boxes), out / rel, fps=FPS, crf=crf, layout="faststart"
        )
        videos.append(
            {"file": rel, **item, "crf": crf, "fps": FPS, "frames": n_frames, "width": frame_size[0],
             "height": frame_size[1], "face_boxes": boxes}
        )  # fmt: skip
    manifest = {
        "version": MANIFEST_VERSION,
        "seed": seed,
        "fps": FPS,
        "seconds": seconds,
        "size": list(frame_size),
        "n_real": n_real,
        "n_fake": n_fake,
        "credits": CREDITS,
        "generation_s": round(time.perf_counter() - started, 2),
        "videos": videos,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def load_manifest(directory: str | Path) -> dict[str, Any]:
    """Read a sample set's manifest."""
    return json.loads((Path(directory) / MANIFEST).read_text())
