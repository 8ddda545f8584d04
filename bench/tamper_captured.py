"""The tamper check on frames as the extension captures them (JPEG) vs as the server decodes them.

For every face frame sampled at 2/s from the held-out sample videos (``--data``, real/ and fake/
videos, e.g. the ``test_videos`` of ``unmask eval-robustness --samples DIR``): the face crop of
the decoded frame, and of the same frame after a JPEG round trip at the extension's capture
quality (``FRAME_JPEG_QUALITY`` 0.85 in extension/src/limits.js), each scored by the tamper check
with the model's ``tamper.json``. For fake frames, a white-box FGSM ε copy of the decoded crop
is scored as it is and after the same JPEG round trip (a proxy for an adversarial video that the
extension captures). Prints, per arm, the share of clean frames flagged, of attacked crops still
fooling the detector, flagged, and fooled without being flagged.

    python bench/tamper_captured.py --data DIR/test_videos [--model-dir models/default] [--quality 85]
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.analysis.runtime import Runtime
from server.media.decode import DecodeLimits, open_video
from server.robust.attacks.fgsm import FGSM
from server.vision.datasets import CROP_MARGIN
from server.vision.faces import crop_face


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    assert ok
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def tensor(crop: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(crop[None]).permute(0, 3, 1, 2).float() / 255


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, default=Path("models/default"))
    parser.add_argument("--quality", type=int, default=85)
    parser.add_argument("--eps", type=float, default=0.02)
    args = parser.parse_args()
    rt = Runtime.load(args.model_dir, device="cpu")
    det, tamper, net, faces = rt.detector, rt.tamper, rt.pixel_model, rt.faces()
    if tamper is None or net is None:
        raise SystemExit(f"{args.model_dir} has no tamper.json for its weights")
    size = tuple(det.card.input_size)
    arms = ("decoded", f"jpeg q{args.quality}")
    clean: dict[str, list[float]] = {a: [] for a in arms}
    attacked: dict[str, list[float]] = {a: [] for a in arms}
    fooled: dict[str, list[bool]] = {a: [] for a in arms}
    for cls in ("real", "fake"):
        for video in sorted((args.data / cls).glob("*.mp4")):
            with open_video(video, limits=DecodeLimits()) as reader:
                for frame in reader.samples(2.0):
                    boxes = faces.detect(frame.image)[:1]
                    if not boxes:
                        continue
                    for arm, image in zip(arms, (frame.image, jpeg(frame.image, args.quality)), strict=True):
                        crop = crop_face(image, boxes[0], margin=CROP_MARGIN, size=size)
                        clean[arm].append(float(tamper.score(net, tensor(crop))[0]))
                    if cls != "fake":
                        continue
                    crop = crop_face(frame.image, boxes[0], margin=CROP_MARGIN, size=size)
                    adv = FGSM(net, eps=args.eps)(tensor(crop), torch.ones(1, dtype=torch.long))
                    adv8 = (adv[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                    for arm, image in zip(arms, (adv8, jpeg(adv8, args.quality)), strict=True):
                        attacked[arm].append(float(tamper.score(net, tensor(image))[0]))
                        fooled[arm].append(bool(det.predict([image])[0] < det.card.threshold))
    t = tamper.threshold
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {args.data}; tamper threshold {t:.4f}; FGSM ε {args.eps}")
    for arm in arms:
        c, a, f = np.array(clean[arm]), np.array(attacked[arm]), np.array(fooled[arm])
        print(
            f"{arm}: clean face frames {len(c)}, flagged {100 * (c > t).mean():.1f} %; attacked crops {len(a)}: "
            f"fooled {100 * f.mean():.1f} %, flagged {100 * (a > t).mean():.1f} %, "
            f"fooled and not flagged {100 * (f & (a <= t)).mean():.1f} %"
        )


if __name__ == "__main__":
    main()
