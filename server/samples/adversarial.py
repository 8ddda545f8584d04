"""Adversarial sample videos: a manipulated clip whose faces are perturbed so the detector calls
every frame authentic, robust to the H.264 encode that writes the file.

Each face frame gets an L∞-bounded delta on its pixels, optimised by
``server.robust.codec_attack.FrameAttack`` (EOT over stand-ins for the encode and for face-box
jitter). After each round the video is written at high quality (x264 CRF 14), decoded and scored
twice as the service would: every frame with a full Haar pass, and the sampled frames through
``analyze_video`` with its face tracker. Frames that still score manipulated are optimised again,
with the face boxes found on the decoded frames added to their targets; the budget ε grows (by
half, up to 16/255) only when a round does not reduce the number of failing frames.

``unmask samples OUT --adversarial`` runs it on the first face-swapped clip it wrote
(``adversarial_sample``): ``OUT/adversarial/<clip>.mp4`` and its report ``<clip>.json``.

Example:
    >>> report = make_adversarial_video("fake/012.mp4", "adv.mp4", "models/default")
    >>> report["fooled_all"], report["eps"]
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from server.analysis.frames import score_frame
from server.analysis.run import analyze_video
from server.analysis.runtime import Runtime
from server.errors import ConfigError
from server.media.decode import DecodeLimits
from server.media.encode import write_video
from server.robust.codec_attack import DEFAULT_CRF, FaceTarget, FrameAttack, decision_offset
from server.vision.detector import Detector
from server.vision.faces import FaceBox, create_face_detector

ATTACKS = ("eot_pgd", "pgd")
# Start below the paper's ε = 0.02 and grow by half up to Hussain et al.'s 16/255.
DEFAULT_EPS = 4 / 255
MAX_EPS = 16 / 255
EPS_GROWTH = 1.5
# PGD steps per round, and rounds of optimise → encode → decode → score.
STEPS_PER_ROUND = 30
MAX_ROUNDS = 10
# Frames scoring above this fraction of the threshold are optimised again in the next round.
RISK_FRACTION = 0.6
# The service's default sampling rate (frames per second), verified besides every frame.
SERVICE_RATE = 2.0
# ``unmask samples --adversarial`` keeps every n-th frame (25 → 5 fps): a fifth of the cost,
# and the service still samples 2 frames/s from it.
SAMPLE_EVERY = 5


def decode_frames(path: str | Path) -> tuple[list[np.ndarray], Fraction]:
    """Every frame (RGB uint8) of a local video, and its frame rate."""
    with av.open(str(path), options={"protocol_whitelist": "file"}) as container:
        stream = container.streams.video[0]
        rate = Fraction(stream.average_rate or 25)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    return frames, rate


def verify(path: Path, det: Detector, rate: float = SERVICE_RATE) -> dict[int, tuple[float, list[FaceBox]]]:
    """Frame index → (score, boxes) of the decoded file: every frame (full Haar pass) and, where
    the service would sample, the service's own path (tracker); the higher score wins."""
    frames, fps = decode_frames(path)
    faces = create_face_detector("haar")
    out: dict[int, tuple[float, list[FaceBox]]] = {}
    for i, frame in enumerate(frames):
        r = score_frame(i, i / float(fps), frame, faces, det)
        if r.score is not None:
            out[i] = (r.score, [FaceBox(*b) for b in r.boxes[:1]])
    runtime = Runtime(detector=det)
    for r in analyze_video(path, runtime, rate=rate, limits=DecodeLimits()).results:
        i = min(len(frames) - 1, round(r.t * float(fps)))
        if r.score is not None:
            score, boxes = out.get(i, (0.0, []))
            out[i] = (max(score, r.score), [*boxes, *(FaceBox(*b) for b in r.boxes[:1])])
    return out


def _write(
    frames: Sequence[np.ndarray], targets: dict[int, FaceTarget], path: Path, fps: Fraction, crf: int
) -> None:
    out = [targets[i].perturbed() if i in targets else f for i, f in enumerate(frames)]
    write_video(out, path, fps=fps, crf=crf, layout="faststart")  # type: ignore[arg-type]


def make_adversarial_video(
    src_video: str | Path,
    out_path: str | Path,
    model_dir: str | Path,
    *,
    eps: float | None = None,
    attack: str = "eot_pgd",
    max_eps: float = MAX_EPS,
    crf: int = DEFAULT_CRF,
    every: int = 1,
    steps: int = STEPS_PER_ROUND,
    max_rounds: int = MAX_ROUNDS,
    seed: int = 0,
) -> dict[str, Any]:
    """Perturb ``src_video``'s faces until ``out_path``, decoded, scores authentic in every frame.

    ``attack``: "eot_pgd" (robust to the encode) or "pgd" (no transforms: the encode may undo
    it). ``every`` keeps every n-th source frame (the frame rate drops by that factor; fewer
    frames to attack, for tests). Returns a report with the ε used, the rounds, the decoded
    output's per-frame scores and ``fooled_all`` (every face frame under the threshold).
    """
    if attack not in ATTACKS:
        raise ConfigError(f"attack must be one of {ATTACKS}, got {attack!r}")
    started = time.perf_counter()
    eps = DEFAULT_EPS if eps is None else float(eps)
    out_path = Path(out_path)
    det = Detector.load(model_dir, device="cpu")
    faces = create_face_detector("haar")
    frames, fps = decode_frames(src_video)
    frames, fps = frames[::every], fps / every
    clean_scores = [score_frame(i, 0.0, f, faces, det).score for i, f in enumerate(frames)]
    targets = {i: FaceTarget.of(i, f, faces.detect(f)[:1]) for i, f in enumerate(frames)}
    targets = {i: t for i, t in targets.items() if t.boxes}
    if not targets:
        raise ConfigError(f"no face found in {src_video}")
    transforms = None if attack == "eot_pgd" else [("identity", lambda x, g: x)]
    offset = decision_offset(det.card.calibration, det.card.threshold)
    optimiser = FrameAttack(
        det.pixel_model(), tuple(det.card.input_size), offset, transforms=transforms, seed=seed
    )
    todo, best, history = list(targets.values()), len(frames) + 1, []
    scored: dict[int, tuple[float, list[FaceBox]]] = {}
    used = eps
    for rounds in range(1, max_rounds + 1):
        used = eps
        loss = optimiser.run(todo, eps, steps)
        _write(frames, targets, out_path, fps, crf)
        scored = verify(out_path, det)
        failing = sorted(i for i, (s, _) in scored.items() if s >= det.card.threshold)
        # Frames close under the threshold flip back when a neighbour's change moves the tracker.
        at_risk = sorted(i for i, (s, _) in scored.items() if s >= RISK_FRACTION * det.card.threshold)
        history.append(
            {"round": rounds, "eps": round(eps, 5), "loss": round(loss, 4), "failing": len(failing)}
        )
        if not failing:
            break
        # Crop where the service found the face on the decoded frames too: the tracker's boxes
        # move with the perturbation of earlier frames, so every frame keeps every box seen.
        for i, (_, boxes) in scored.items():
            target = targets.get(i) or FaceTarget.of(i, frames[i], [])
            target.boxes += [b for b in boxes if b not in target.boxes]
            if target.boxes:
                targets[i] = target
        if 2 * len(failing) > best:  # a round that does not halve the failures needs more budget
            eps = min(max_eps, eps * EPS_GROWTH)
        best = min(best, len(failing))
        todo = [targets[i] for i in at_risk if i in targets]
    scores = [round(scored[i][0], 4) if i in scored else None for i in range(len(frames))]
    face_scores = [s for s in scores if s is not None]
    return {
        "src": str(src_video),
        "out": str(out_path),
        "attack": attack,
        "eps": round(used, 5),
        "eps_255": round(used * 255, 2),
        "linf": round(max(float(t.delta.abs().max()) for t in targets.values()), 5),
        "crf": crf,
        "fps": float(fps),
        "frames": len(frames),
        "face_frames": len(face_scores),
        "rounds": len(history),
        "history": history,
        "threshold": det.card.threshold,
        "clean_scores": [None if s is None else round(s, 4) for s in clean_scores],
        "scores": scores,
        "max_score": max(face_scores) if face_scores else None,
        "fooled_all": bool(face_scores) and max(face_scores) < det.card.threshold,
        "seconds": round(time.perf_counter() - started, 1),
    }


def adversarial_sample(
    out_dir: str | Path, manifest: dict[str, Any], model_dir: str | Path, **options: Any
) -> dict[str, Any]:
    """Attack the first face-swapped clip of a ``generate_samples`` manifest (else its first
    manipulated one) and write ``out_dir/adversarial/<clip>.mp4`` with its report ``<clip>.json``.

    ``options`` go to ``make_adversarial_video`` (``every`` defaults to SAMPLE_EVERY).
    """
    fakes = [v for v in manifest.get("videos", []) if v["label"] == "fake"]
    if not fakes:
        raise ConfigError("an adversarial sample needs a manipulated clip: ask for --fake 1 or more")
    src = next((v for v in fakes if v["method"] == "face_swap"), fakes[0])
    root = Path(out_dir)
    out = root / "adversarial" / Path(src["file"]).name
    out.parent.mkdir(parents=True, exist_ok=True)
    report = make_adversarial_video(root / src["file"], out, model_dir, **{"every": SAMPLE_EVERY, **options})
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    return report
