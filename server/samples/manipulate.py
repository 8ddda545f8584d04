"""Frame manipulations for the fake sample videos: self-blending (the face with a transformed
copy of itself) and face swapping (another identity's face, aligned by the face box, colour
matched in LAB and pasted through a feathered ellipse)."""

from __future__ import annotations

import math
from dataclasses import replace

import cv2
import numpy as np

from server.samples.compose import FacePose
from server.samples.faces import SourcePhoto
from server.vision.sbi import SBIParams, apply_sbi, lerp_params, sample_sbi_params

# Sample fakes are meant to be detectable by a small demo model after H.264 compression: the
# self-blend transform is drawn 1.5x stronger than the training-time pseudo-fakes, never
# blended below 75 %, and redrawn until at least one cue is clearly visible.
VIDEO_SBI_STRENGTH = 1.5
VIDEO_SBI_MIN_BLEND = 0.75
VIDEO_SBI_MIN_VISIBILITY = 0.7
# Over a clip the parameters drift this far towards a second random set ("slowly varying"),
# so no frame passes through an invisible, identity-like blend.
VIDEO_SBI_DRIFT = 0.35
# Below this LAB channel spread a donor carries no colour (grey LFW crops): keep the target's.
_FLAT_STD = 1e-2


def visibility(p: SBIParams) -> float:
    """How strong the strongest cue of a self-blend is, 1.0 = the edge of the training range."""
    return max(
        abs(p.scale - 1) / 0.06,
        max(abs(v) for v in p.shift) / 0.04,
        max(abs(v) for v in p.rgb_shift) / 0.08,
        abs(p.brightness) / 0.08,
        abs(p.contrast - 1) / 0.12,
        abs(p.sharpness),
    )


class SelfBlendTrack:
    """Self-blend parameters that drift smoothly from one random set to another over a clip."""

    def __init__(self, rng: np.random.Generator, n_frames: int) -> None:
        self.start = self._draw(rng)
        self.end = lerp_params(self.start, self._draw(rng), VIDEO_SBI_DRIFT)
        self.n_frames = max(1, n_frames)

    @staticmethod
    def _draw(rng: np.random.Generator) -> SBIParams:
        while True:
            p = sample_sbi_params(rng, strength=VIDEO_SBI_STRENGTH)
            if visibility(p) >= VIDEO_SBI_MIN_VISIBILITY:
                return replace(p, blend=max(p.blend, VIDEO_SBI_MIN_BLEND))

    def params(self, i: int) -> SBIParams:
        """Parameters for frame ``i`` (cosine ease between the two sets)."""
        t = 0.5 - 0.5 * math.cos(math.pi * i / self.n_frames)
        return lerp_params(self.start, self.end, t)

    def __call__(self, frame: np.ndarray, pose: FacePose, i: int) -> np.ndarray:
        """The self-blended version of ``frame``."""
        return apply_sbi(frame, pose.box, self.params(i))[0]


def _lab(img: np.ndarray) -> np.ndarray:
    """RGB float32 0–255 → OpenCV float LAB (L 0–100)."""
    return cv2.cvtColor(np.clip(img, 0, 255).astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def color_transfer(donor: np.ndarray, target: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Match donor's LAB mean/std to target's inside ``region`` (bool HxW); returns RGB float32."""
    d, t = _lab(donor), _lab(target)
    out = np.empty_like(d)
    for c in range(3):
        dv, tv = d[:, :, c][region], t[:, :, c][region]
        ds, ts = float(dv.std()), float(tv.std())
        if ds < _FLAT_STD:
            out[:, :, c] = t[:, :, c] if c else (d[:, :, c] - dv.mean()) + tv.mean()
        else:
            out[:, :, c] = (d[:, :, c] - dv.mean()) / ds * ts + tv.mean()
    out[:, :, 0] = np.clip(out[:, :, 0], 0, 100)
    return cv2.cvtColor(out, cv2.COLOR_LAB2RGB) * 255.0


class FaceSwapTrack:
    """Pastes ``donor``'s face onto each frame's face, following its pose."""

    def __init__(self, donor: SourcePhoto, rng: np.random.Generator) -> None:
        self.donor = donor
        self.axes = (float(rng.uniform(0.78, 0.92)), float(rng.uniform(0.95, 1.12)))
        self.feather = float(rng.uniform(0.04, 0.1))
        self.blend = float(rng.uniform(0.85, 1.0))
        img = donor.image.astype(np.float32)
        x, y, w, h = donor.face_box
        mask = np.zeros(img.shape[:2], np.float32)
        center = (round(x + w / 2), round(y + h / 2 + 0.05 * h))
        axes = (max(1, round(w / 2 * self.axes[0])), max(1, round(h / 2 * self.axes[1])))
        cv2.ellipse(mask, center, axes, 0, 0, 360, 1.0, -1)
        self.image, self.mask = img, mask

    def __call__(self, frame: np.ndarray, pose: FacePose, i: int) -> np.ndarray:
        """The face-swapped version of ``frame``."""
        x, y, w, h = self.donor.face_box
        cx, cy = x + w / 2, y + h / 2
        zoom = pose.box[2] / w
        m = cv2.getRotationMatrix2D((cx, cy), pose.angle, zoom)
        m[:, 2] += (pose.center[0] - cx, pose.center[1] - cy)
        fh, fw = frame.shape[:2]
        donor = cv2.warpAffine(
            self.image, m, (fw, fh), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE
        )
        mask = cv2.warpAffine(self.mask, m, (fw, fh), flags=cv2.INTER_LINEAR, borderValue=0)
        region = mask > 0.5
        if not region.any():
            return frame
        target = frame.astype(np.float32)
        matched = color_transfer(donor, target, region)
        soft = cv2.GaussianBlur(mask, (0, 0), max(0.5, self.feather * pose.box[2])) * self.blend
        out = soft[:, :, None] * matched + (1 - soft[:, :, None]) * target
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
