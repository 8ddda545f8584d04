"""What lossless face patches add to a frames check's upload: PNG patch bytes ÷ JPEG frame bytes.

For every frame sampled at 2/s from a 1280x720 H.264 video (bench/media.py's moving face, or
``--video``), the frame is encoded as the extension sends it (JPEG q 85) and the region around
its face, grown as the extension grows it (``--grow``, PATCH_GROW in extension/src/limits.js), as
PNG. Faces come from the server's own detector on the decoded frame. PIL's encoders stand in for
the browser's (Chrome's PNG is zlib too; its level may differ).

    python bench/patch_bytes.py [--seconds 20] [--grow 2.2] [--video FILE]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.media import bench_video
from server.analysis.lossless import grown_region
from server.media.decode import DecodeLimits, open_video
from server.vision.faces import create_face_detector


def encoded(image: np.ndarray, fmt: str) -> int:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return buf.tell()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--grow", type=float, default=2.2)
    parser.add_argument("--video", type=Path)
    args = parser.parse_args()
    path = args.video or bench_video(args.seconds, size=(1280, 720))
    faces = create_face_detector("haar")
    jpeg, png, sides = [], [], []
    with open_video(path, limits=DecodeLimits()) as reader:
        for frame in reader.samples(2.0):
            boxes = faces.detect(frame.image)
            if not boxes:
                continue
            patch = grown_region(boxes[0].as_list(), frame.image.shape, args.grow)
            jpeg.append(encoded(frame.image, "JPEG"))
            png.append(encoded(patch.of(frame.image), "PNG"))
            sides.append(max(boxes[0].w, boxes[0].h))
    if not jpeg:
        raise SystemExit(f"no face found in {path}")
    med = statistics.median
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {path.name}; {len(jpeg)} face frames at 2/s; "
        f"face side median {med(sides):.0f} px; patch = box grown {args.grow}x"
    )
    print(
        f"JPEG q85 frame: median {med(jpeg) / 1024:.0f} KiB; PNG patch: median {med(png) / 1024:.0f} KiB; "
        f"upload with patches ÷ without = {(sum(jpeg) + sum(png)) / sum(jpeg):.2f}"
    )


if __name__ == "__main__":
    main()
