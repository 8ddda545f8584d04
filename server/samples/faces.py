"""Source photographs for sample media: only images shipped inside pip packages, so a fresh
machine without network can rebuild every sample video and the default detector."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np

# Face boxes (x, y, w, h) measured once with OpenCV's haarcascade_frontalface_default
# (scaleFactor 1.1, minNeighbors 5); fixed here so renders do not depend on detector versions.
_ASTRONAUT_BOX = (177, 66, 95, 95)
_HOPPER_BOX = (155, 105, 222, 222)

# The skimage LFW subset is 25x25 grey crops that are almost all face; the inner 80 % is the face box.
_LFW_SIZE = 25
_LFW_FACES = 100


@dataclass(frozen=True)
class SourcePhoto:
    """One real photograph of one identity, with its face box and credit."""

    identity: str
    image: np.ndarray  # HxWx3 uint8 RGB
    face_box: tuple[int, int, int, int]
    credit: str


CREDITS: list[dict[str, str]] = [
    {
        "name": "astronaut",
        "what": "Eileen Collins, NASA astronaut (identity)",
        "source": "scikit-image skimage.data.astronaut(); NASA Great Images database",
        "license": "public domain (no known copyright restrictions)",
    },
    {
        "name": "grace_hopper",
        "what": "Rear Admiral Grace M. Hopper, official U.S. Navy portrait (identity)",
        "source": "matplotlib mpl-data/sample_data/grace_hopper.jpg",
        "license": "public domain (work of the U.S. federal government)",
    },
    {
        "name": "lfw_subset",
        "what": "100 grey 25x25 face crops, used only as face-swap donors",
        "source": "scikit-image skimage.data.lfw_subset(); Labeled Faces in the Wild, Huang et al. 2007",
        "license": "LFW research data set as redistributed by scikit-image",
    },
    {
        "name": "backgrounds",
        "what": "brick, grass, gravel (CC0Textures), coffee (Rachel Michetti, CC0), "
        "rocket (SpaceX, public domain), hubble_deep_field (NASA, public domain)",
        "source": "scikit-image skimage.data",
        "license": "CC0 / public domain",
    },
]


def _grace_hopper() -> np.ndarray:
    """Grace Hopper's portrait from matplotlib's bundled sample data."""
    import matplotlib  # only for its data folder; plots import it separately

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(path)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@cache
def load_photos() -> tuple[SourcePhoto, ...]:
    """Every identity photograph, in a fixed order."""
    import skimage.data

    return (
        SourcePhoto("astronaut", skimage.data.astronaut(), _ASTRONAUT_BOX, CREDITS[0]["source"]),
        SourcePhoto("grace_hopper", _grace_hopper(), _HOPPER_BOX, CREDITS[1]["source"]),
    )


@cache
def load_lfw_donors() -> tuple[SourcePhoto, ...]:
    """The LFW subset's 100 faces as grey-as-RGB donors (identity ``lfw_<i>``)."""
    import skimage.data

    faces = skimage.data.lfw_subset()[:_LFW_FACES]
    out = []
    m = round(_LFW_SIZE * 0.1)
    for i, face in enumerate(faces):
        grey = np.clip(face * 255.0 if face.max() <= 1.0 else face, 0, 255).astype(np.uint8)
        rgb = np.repeat(grey[:, :, None], 3, axis=2)
        out.append(
            SourcePhoto(
                f"lfw_{i:03d}", rgb, (m, m, _LFW_SIZE - 2 * m, _LFW_SIZE - 2 * m), CREDITS[2]["source"]
            )
        )
    return tuple(out)


@cache
def load_backgrounds() -> tuple[np.ndarray, ...]:
    """Face-free RGB backgrounds (textures and scenes) that frames are composed on."""
    import skimage.data

    out = []
    for name in ("brick", "grass", "gravel", "coffee", "rocket", "hubble_deep_field"):
        img = getattr(skimage.data, name)()
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        out.append(np.ascontiguousarray(img[:, :, :3]))
    return tuple(out)
