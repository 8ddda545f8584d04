"""``unmask purify fit`` on tiny sample videos with the tiny purifier and an untrained detector."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from server.cli import build_parser
from server.cli_robust import register
from server.robust.purification import purifier_config
from server.robust.purify_calibration import PURIFY_FILENAME, PurifiedThreshold
from server.samples import generate_samples
from server.vision.checkpoint import load_card


def test_cli_fits_a_threshold_that_the_workers_then_load(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "samples"
    generate_samples(data, n_real=1, n_fake=1, seconds=1.0, size=160, seed=11)
    model_dir = Path(shutil.copytree(tiny_checkpoint, tmp_path / "model"))
    argv = ["purify", "fit", "--model-dir", str(model_dir), "--data", str(data), "--purifier", "tiny"]
    args = build_parser([register]).parse_args([*argv, "--per-group", "3", "--every", "3"])
    assert args.func(args) == 0
    assert f"wrote {model_dir / PURIFY_FILENAME}: purified-crop threshold" in capsys.readouterr().out
    card, version = load_card(model_dir), purifier_config("tiny").version()
    cal = PurifiedThreshold.load_for(model_dir, card.weights_sha256, version)
    assert cal is not None and 0 < cal.threshold < 1
    s = cal.stats
    assert (s["n_real"], s["n_fake"], s["n_attacked"], s["preset"], s["iterations"]) == (3, 3, 3, "tiny", 20)
    # The in-sample rates are those of the stored cut (fakes: clean and attacked, pooled).
    fakes_right = (s["fake_right"] + s["attacked_right"]) / 2
    assert s["balanced_accuracy"] == pytest.approx((s["real_right"] + fakes_right) / 2)
