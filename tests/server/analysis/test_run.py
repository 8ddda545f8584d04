"""analyze_video: the shared batcher changes how frames are batched, never what they score."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from server.analysis.run import analyze_video
from server.analysis.runtime import Runtime
from server.media.decode import DecodeLimits


def _scores(runtime: Runtime, video: Path) -> tuple[list[float | None], list[float | None]]:
    results = analyze_video(video, runtime, rate=4.0, limits=DecodeLimits(), sandbox=False).results
    return [r.score for r in results], [r.tamper for r in results]


def test_batched_frames_score_as_unbatched_with_the_tamper_check(
    flagging_checkpoint: Path, media_dir: Path
) -> None:
    runtime = Runtime.load(flagging_checkpoint, device="cpu")
    assert runtime.tamper is not None
    direct = _scores(runtime, media_dir / "face.mp4")
    runtime.enable_batching()
    try:
        batched = _scores(runtime, media_dir / "face.mp4")
        # One queued request per face frame: the crops with the tamper check's two copies.
        faces = sum(s is not None for s in direct[0])
        assert faces > 0 and runtime.batcher is not None
        assert (runtime.batcher.batches, runtime.batcher.crops) == (faces, 3 * faces)
    finally:
        runtime.close()
    assert [s is None for s in batched[0]] == [s is None for s in direct[0]]
    for a, b in zip(direct, batched, strict=True):
        np.testing.assert_allclose(
            [x for x in a if x is not None], [x for x in b if x is not None], rtol=1e-4, atol=1e-5
        )
