"""Compression-robust attacks in frame space: what an attacker who publishes a video must do.

The perturbation lives on frame pixels and is optimised through the request path's own crop
geometry (``crop_face``'s square with margin 0.3, resized to the detector's input) in torch, so
gradients reach the frame. Each step averages the loss over random stand-ins for the H.264
encode and for face-box jitter (Expectation over Transformation, as Hussain et al., WACV 2021,
did against video detectors): 4:2:0 chroma subsampling, JPEG with straight-through gradients,
sensor-level noise, small shifts and rescales. ``server.samples.adversarial`` uses it on whole
videos; ``codec_robust_crops`` makes such perturbations for single face crops, passed through a
real one-frame x264 encode, for the tamper check's calibration.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import av
import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from server.robust.attacks.eot import gaussian_noise, jpeg_bpda
from server.vision.faces import FaceBox

TransformFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
# Must match server.analysis.frames.CROP_MARGIN (the request path's crops).
CROP_MARGIN = 0.3
# Transforms averaged per step, drawn from ``codec_transforms``.
EOT_SAMPLES = 4
# Aim this far past the decision boundary (raw logits), so the encode does not undo it.
KAPPA = 3.0
# Face-box jitter the transforms cover: the face is found again on the decoded frame.
SHIFT_PX = 5
SCALE_JITTER = (0.92, 1.08)
# x264 quality of published adversarial video: 14 is visually lossless.
DEFAULT_CRF = 14
# Crops attacked together by ``codec_robust_crops`` (each step runs EOT_SAMPLES copies of each).
ATTACK_BATCH = 32


def yuv420(x: torch.Tensor) -> torch.Tensor:
    """RGB → BT.601 YCbCr with chroma averaged over 2x2 blocks → RGB: what yuv420p keeps."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb, cr = (b - y) * 0.564, (r - y) * 0.713
    h, w = x.shape[-2:]
    cb = F.interpolate(F.avg_pool2d(cb, 2, ceil_mode=True), size=(h, w), mode="bilinear", align_corners=False)
    cr = F.interpolate(F.avg_pool2d(cr, 2, ceil_mode=True), size=(h, w), mode="bilinear", align_corners=False)
    r2, b2 = y + cr / 0.713, y + cb / 0.564
    g2 = (y - 0.299 * r2 - 0.114 * b2) / 0.587
    return torch.cat([r2, g2, b2], dim=1).clamp(0, 1)


def shift_scale(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random shift of ±SHIFT_PX and a rescale within SCALE_JITTER (face-box jitter)."""
    h, w = x.shape[-2:]
    scale = SCALE_JITTER[0] + (SCALE_JITTER[1] - SCALE_JITTER[0]) * float(torch.rand(1, generator=gen))
    dx, dy = (int(v) for v in torch.randint(-SHIFT_PX, SHIFT_PX + 1, (2,), generator=gen))
    theta = torch.tensor([[scale, 0.0, 2 * dx / w], [0.0, scale, 2 * dy / h]], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def codec_transforms() -> list[tuple[str, TransformFn]]:
    """(name, fn(x, generator)) stand-ins for the H.264 encode and the re-detected face box."""
    return [
        ("identity", lambda x, g: x),
        ("yuv420", lambda x, g: yuv420(x)),
        ("yuv420+jpeg90", lambda x, g: jpeg_bpda(yuv420(x), 90)),
        ("jpeg80", lambda x, g: jpeg_bpda(x, 80)),
        ("noise", lambda x, g: gaussian_noise(x, 2 / 255, g)),
        ("box_jitter+yuv420", lambda x, g: shift_scale(yuv420(x), g)),
        ("box_jitter+jpeg90", lambda x, g: jpeg_bpda(shift_scale(x, g), 90)),
    ]


@dataclass
class FaceTarget:
    """One frame to perturb: its pixels, its delta and the face boxes its crops are taken from."""

    index: int
    frame: torch.Tensor  # (3, H, W) in [0, 1]
    delta: torch.Tensor  # (3, H, W)
    boxes: list[FaceBox] = field(default_factory=list)

    @classmethod
    def of(cls, index: int, frame: np.ndarray, boxes: Sequence[FaceBox]) -> FaceTarget:
        """A target for an RGB uint8 frame, with a zero delta."""
        pixels = torch.from_numpy(frame).permute(2, 0, 1).float().div(255)
        return cls(index, pixels, torch.zeros_like(pixels), list(boxes))

    def perturbed(self) -> np.ndarray:
        """The frame with its delta, as RGB uint8."""
        pixels = ((self.frame + self.delta).clamp(0, 1) * 255).round().to(torch.uint8)
        return np.ascontiguousarray(pixels.permute(1, 2, 0).numpy())


def crop_geometry(box: FaceBox, shape: tuple[int, int], margin: float = CROP_MARGIN) -> tuple[int, ...]:
    """``crop_face``'s square (x0, y0, side) and its in-image part (x0c, y0c, x1c, y1c)."""
    ih, iw = shape
    side = max(1, round(max(box.w, box.h) * (1.0 + margin)))
    x0, y0 = round(box.x + box.w / 2 - side / 2), round(box.y + box.h / 2 - side / 2)
    return x0, y0, side, max(0, x0), max(0, y0), min(iw, x0 + side), min(ih, y0 + side)


def render_crop(image: torch.Tensor, box: FaceBox, size: tuple[int, int]) -> torch.Tensor:
    """``crop_face`` in torch: the (3, h, w) crop of ``image`` (3, H, W), differentiable."""
    x0, y0, side, x0c, y0c, x1c, y1c = crop_geometry(box, (image.shape[-2], image.shape[-1]))
    region = image[:, y0c:y1c, x0c:x1c].unsqueeze(0)
    pads = (x0c - x0, x0 + side - x1c, y0c - y0, y0 + side - y1c)
    if any(pads):
        region = F.pad(region, pads, mode="replicate")
    if side > size[0]:  # crop_face shrinks with INTER_AREA and enlarges with INTER_LINEAR
        rows, cols = area_matrix(side, size[0], image), area_matrix(side, size[1], image)
        return rows @ region[0] @ cols.T
    return F.interpolate(region, size=size, mode="bilinear", align_corners=False)[0]


def area_matrix(n_in: int, n_out: int, like: torch.Tensor) -> torch.Tensor:
    """(n_out, n_in) weights of OpenCV's INTER_AREA shrink: each output averages the input
    interval it covers, partly covered pixels weighted by their overlap."""
    edges = torch.arange(n_out + 1, dtype=torch.float64) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    j = torch.arange(n_in, dtype=torch.float64)[None, :]
    overlap = (torch.minimum(hi, j + 1) - torch.maximum(lo, j)).clamp_min(0)
    return (overlap / (n_in / n_out)).to(like.dtype)


def decision_offset(calibration: dict, threshold: float) -> float:
    """Raw margin Z_fake − Z_real at a card's threshold (temperature or no calibration)."""
    p = min(max(threshold, 1e-6), 1 - 1e-6)
    scale = float(calibration["temperature"]) if calibration.get("type") == "temperature" else 1.0
    return scale * math.log(p / (1 - p))


class FrameAttack:
    """L∞ PGD with EOT on many frames' deltas at once: one batched forward per step.

    Minimises mean over transforms of max(Z_fake − Z_real − offset + κ, 0): every crop of every
    target is pushed below the detector's decision threshold, with margin κ.
    """

    def __init__(
        self,
        model: nn.Module,
        size: tuple[int, int],
        offset: float,
        *,
        transforms: Sequence[tuple[str, TransformFn]] | None = None,
        seed: int = 0,
    ) -> None:
        self.net = model
        self.size = size
        self.offset = offset
        self.transforms = list(transforms) if transforms is not None else codec_transforms()
        self.gen = torch.Generator().manual_seed(seed)

    def run(self, targets: Sequence[FaceTarget], eps: float, steps: int) -> float:
        """``steps`` signed steps of eps/8 on the targets' deltas (in place); the last mean loss."""
        alpha = eps / 8
        loss_value = float("nan")
        was_training = self.net.training
        self.net.eval()
        try:
            for _ in range(steps):
                loss_value = self._step(targets, eps, alpha)
        finally:
            self.net.train(was_training)
        return loss_value

    def _step(self, targets: Sequence[FaceTarget], eps: float, alpha: float) -> float:
        deltas = [t.delta.clone().requires_grad_(True) for t in targets]
        crops = []
        for t, d in zip(targets, deltas, strict=True):
            box = t.boxes[int(torch.randint(len(t.boxes), (1,), generator=self.gen))]
            crops.append(render_crop((t.frame + d).clamp(0, 1), box, self.size))
        x = torch.stack(crops)
        k = min(EOT_SAMPLES, len(self.transforms))
        picks = torch.randperm(len(self.transforms), generator=self.gen)[:k].tolist()
        with torch.inference_mode(False), torch.enable_grad():
            logits = self.net(torch.cat([self.transforms[i][1](x, self.gen) for i in picks]))
            margin = logits[:, 1] - logits[:, 0] - self.offset
            loss = (margin + KAPPA).clamp_min(0).view(k, -1).mean(dim=0).sum()
            grads = torch.autograd.grad(loss, deltas)
        with torch.no_grad():
            for t, g in zip(targets, grads, strict=True):
                t.delta = (t.delta - alpha * g.sign()).clamp(-eps, eps)
                t.delta = (t.frame + t.delta).clamp(0, 1) - t.frame
        return float(loss.detach()) / len(targets)


def h264_roundtrip(image: np.ndarray, crf: int = DEFAULT_CRF) -> np.ndarray:
    """One RGB uint8 image (even sides) through a one-frame x264 encode and decode."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="h264") as out:
        stream = out.add_stream("libx264", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    buf.seek(0)
    with av.open(buf, format="h264") as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def _as_frame(crop: np.ndarray, side: int) -> tuple[np.ndarray, FaceBox]:
    """A crop resized to a ``side`` x ``side`` "frame", and the face box whose crop is all of it."""
    shrink = side < crop.shape[0]
    frame = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    w = round(side / (1 + CROP_MARGIN))
    return frame, FaceBox((side - w) // 2, (side - w) // 2, w, w)


def codec_robust_crops(
    model: nn.Module,
    crops: Sequence[np.ndarray],
    *,
    offset: float,
    eps_values: Sequence[float],
    sides: tuple[int, int],
    steps: int,
    crf: int = DEFAULT_CRF,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(clean, attacked) RGB uint8 crops as the request path would see them after an encode.

    Each crop becomes a square "frame" of a random even side in ``sides`` (the face sizes of
    real video), gets a ``FrameAttack`` perturbation at an ε drawn from ``eps_values``, goes
    through a real x264 encode at ``crf`` and is cropped back. The clean copy takes the same
    path without the perturbation, so the two differ only by the attack.
    """
    from server.vision.faces import crop_face

    rng = np.random.default_rng(seed)
    h, w = crops[0].shape[:2]
    attack = FrameAttack(model, (h, w), offset, seed=seed)
    targets, eps_of = [], []
    for i, crop in enumerate(crops):
        side = int(rng.integers(sides[0] // 2, sides[1] // 2 + 1)) * 2
        frame, box = _as_frame(crop, side)
        targets.append(FaceTarget.of(i, frame, [box]))
        eps_of.append(float(rng.choice(eps_values)))
    for eps in sorted(set(eps_of)):
        group = [t for t, e in zip(targets, eps_of, strict=True) if e == eps]
        for start in range(0, len(group), ATTACK_BATCH):
            attack.run(group[start : start + ATTACK_BATCH], eps, steps)
    clean, attacked = [], []
    for t in targets:
        box = t.boxes[0]
        frame = np.ascontiguousarray((t.frame * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())
        for out, image in ((clean, frame), (attacked, t.perturbed())):
            out.append(crop_face(h264_roundtrip(image, crf), box, margin=CROP_MARGIN, size=(h, w)))
    return np.stack(clean), np.stack(attacked)
