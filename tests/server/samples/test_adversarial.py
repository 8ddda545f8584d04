"""make_adversarial_video on a tiny clip: shapes, budget, the encode → decode round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from server.samples.adversarial import decode_frames, make_adversarial_video, verify
from server.vision.detector import Detector
from tests.helpers.videos import write_face_video


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1 s of the astronaut's face, 384x288 at 25 fps."""
    return write_face_video(tmp_path_factory.mktemp("adv") / "face.mp4", seconds=1.0)


def test_the_written_video_keeps_size_and_frames_and_stays_within_eps(
    clip: Path, tiny_checkpoint: Path, tmp_path
):
    out = tmp_path / "adv.mp4"
    eps = 2 / 255
    report = make_adversarial_video(
        clip, out, tiny_checkpoint, eps=eps, max_eps=eps, every=5, steps=2, max_rounds=1
    )
    src, _ = decode_frames(clip)
    adv, fps = decode_frames(out)
    assert len(adv) == report["frames"] == 5 and fps == 5
    assert adv[0].shape == src[0].shape
    assert report["linf"] <= eps + 1e-6 and report["rounds"] == 1
    assert report["face_frames"] == 5 and len(report["scores"]) == 5
    assert report["eps"] == pytest.approx(eps, abs=1e-5)
    # The perturbation only touches the face crops, and it survives the encode in part.
    diff = [abs(a.astype(int) - s.astype(int)).mean() for a, s in zip(adv, src[::5], strict=True)]
    assert all(d < 6 for d in diff)
    assert report["fooled_all"] == (report["max_score"] < report["threshold"])


def test_verify_scores_every_frame_like_the_service(clip: Path, tiny_checkpoint: Path) -> None:
    det = Detector.load(tiny_checkpoint, device="cpu")
    scored = verify(clip, det)
    assert len(scored) == 25  # a face in every frame
    assert all(0.0 <= s <= 1.0 and boxes for s, boxes in scored.values())


def test_unknown_attack_is_a_config_error(clip: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    from server.errors import ConfigError

    with pytest.raises(ConfigError):
        make_adversarial_video(clip, tmp_path / "x.mp4", tiny_checkpoint, attack="cw")


def test_unmask_samples_adversarial_writes_the_video_and_its_report(
    tiny_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    import json

    from server.cli import main

    out = tmp_path / "samples"
    argv = ["samples", str(out), "--real", "0", "--fake", "1", "--seconds", "1", "--seed", "3"]
    code = main([*argv, "--adversarial", "--model-dir", str(tiny_checkpoint), "--rounds", "1"])
    manifest = json.loads((out / "manifest.json").read_text())
    [video] = (out / "adversarial").glob("*.mp4")
    report = json.loads(video.with_suffix(".json").read_text())
    assert video.name == manifest["videos"][0]["file"].split("/")[-1]
    assert report["src"] == str(out / manifest["videos"][0]["file"]) and report["out"] == str(video)
    assert report["frames"] == 5 and report["fps"] == 5.0 and report["rounds"] == 1  # every 5th frame
    assert len(decode_frames(video)[0]) == 5
    assert code == (0 if report["fooled_all"] else 1)
    assert str(video) in capsys.readouterr().out


def test_unmask_samples_adversarial_needs_a_manipulated_clip(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from server.cli import main

    argv = ["samples", str(tmp_path), "--real", "1", "--fake", "0", "--seconds", "1"]
    assert main([*argv, "--adversarial", "--model-dir", str(tiny_checkpoint)]) != 0
    assert not (tmp_path / "adversarial").exists() or not any((tmp_path / "adversarial").iterdir())
