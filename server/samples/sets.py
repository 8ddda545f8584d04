"""The default detector's sample sets, and a cache of generated sets keyed by spec and code.

models/build_default.py trains and evaluates on these sets; ``unmask eval-robustness --samples``
reuses them (server/robust/prepare.py), so both read identical videos.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

# Training crops: every 3rd frame (neighbouring frames are near-duplicates).
TRAIN_CROP_EVERY = 3
# The test set uses another seed, so its motion paths, lighting, backgrounds, compression, blend
# parameters and swap donors are all unseen in training.
TRAIN_SET = {"n_real": 48, "n_fake": 48, "seconds": 3.0, "size": 320, "seed": 101}
TEST_SET = {"n_real": 12, "n_fake": 12, "seconds": 3.0, "size": 320, "seed": 202}

# Written last into a cached directory: an interrupted step leaves none and is redone.
MARKER = "fingerprint.txt"
_SERVER = Path(__file__).resolve().parents[1]
# What decides how a sample video looks (not samples/adversarial.py: it makes other videos).
SAMPLE_CODE = (
    "samples/__init__.py",
    "samples/compose.py",
    "samples/faces.py",
    "samples/generate.py",
    "samples/manipulate.py",
    "vision/sbi.py",
    "media/encode.py",
)


def fingerprint(spec: dict[str, Any]) -> str:
    """The spec plus the code that renders samples: a cached set is reused only if both match."""
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode())
    for path in SAMPLE_CODE:
        digest.update((_SERVER / path).read_bytes())
    return digest.hexdigest()


def is_cached(directory: Path, key: str) -> bool:
    """Whether ``directory`` was completed for ``key``."""
    marker = directory / MARKER
    return marker.is_file() and marker.read_text() == key


def ensure_sample_set(directory: Path, spec: dict[str, Any]) -> bool:
    """Generate a sample set into ``directory`` unless it holds one of this spec; True if generated."""
    from server.samples.generate import generate_samples

    key = fingerprint(spec)
    if is_cached(directory, key):
        return False
    shutil.rmtree(directory, ignore_errors=True)
    generate_samples(directory, **spec)
    (directory / MARKER).write_text(key)
    return True


def ensure_crops(videos: Path, out: Path, size: tuple[int, int], every: int = TRAIN_CROP_EVERY) -> bool:
    """Export the face crops of the sample set ``videos`` into ``out`` (with ``counts.json``) unless
    done for the same set, size and spacing; True if exported."""
    from server.vision.datasets import export_video_crops

    key = hashlib.sha256(f"{(videos / MARKER).read_text()}:{size}:{every}".encode()).hexdigest()
    if is_cached(out, key):
        return False
    shutil.rmtree(out, ignore_errors=True)
    counts = export_video_crops(videos, out, size=size, every=every)
    (out / "counts.json").write_text(json.dumps(counts))
    (out / MARKER).write_text(key)
    return True
