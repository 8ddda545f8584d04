"""Tests for converting upstream checkpoints: key mapping and identical logits, no downloads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from server.errors import CheckpointError
from server.vision.checkpoint import load_checkpoint
from server.vision.detector import Detector
from server.vision.importers import IMPORT_KINDS, import_checkpoint, load_upstream_state_dict
from server.vision.registry import create_model

from .upstream_layouts import (
    DfbDetector,
    DfbEfficientNetB4,
    DfbXception,
    SbiDetector,
    randomise_bn,
)

torch.set_num_threads(1)


def upstream(kind: str) -> tuple[nn.Module, object]:
    """A random-init upstream model and the object its project would save for it."""
    torch.manual_seed(0)
    if kind == "deepfakebench-xception":
        model = randomise_bn(DfbDetector(DfbXception()))
        return model, model.state_dict()
    if kind == "deepfakebench-efficientnetb4":
        model = randomise_bn(DfbDetector(DfbEfficientNetB4()))
        return model, {"module." + k: v for k, v in model.state_dict().items()}  # DataParallel-saved
    model = randomise_bn(SbiDetector())
    return model, {"model": model.state_dict(), "epoch": 3}


@pytest.mark.parametrize("kind", sorted(IMPORT_KINDS))
def test_converted_model_gives_upstream_logits(kind: str, tmp_path: Path) -> None:
    model, saved = upstream(kind)
    torch.save(saved, tmp_path / "upstream.pth")
    card = import_checkpoint(kind, tmp_path / "upstream.pth", tmp_path / "ours", version="t1")
    ours, loaded_card = load_checkpoint(tmp_path / "ours")
    assert loaded_card == card and card.version == "t1" and not card.demo
    # The native sizes (256/380) are slow on a CPU; a small input exercises every layer and,
    # with static padding on both sides, the same padding arithmetic.
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        expected, got = model(x), ours(x)
    assert got.shape == (2, 2)
    assert (expected[0] - expected[1]).abs().max() > 0.1  # the logits depend on the input
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_cards_carry_upstream_preprocessing(tmp_path: Path) -> None:
    _, saved = upstream("sbi-efficientnetb4")
    torch.save(saved, tmp_path / "sbi.pth")
    card = import_checkpoint("sbi-efficientnetb4", tmp_path / "sbi.pth", tmp_path / "ours")
    assert (card.input_size, card.mean, card.std) == ((380, 380), (0.0,) * 3, (1.0,) * 3)
    assert card.version.startswith("upstream-") and card.id == "sbi-efficientnetb4"
    assert "SelfBlendedImages" in card.training_data
    dfb = IMPORT_KINDS["deepfakebench-xception"]
    assert (dfb.input_size, dfb.mean, dfb.std) == ((256, 256), (0.5,) * 3, (0.5,) * 3)


def test_detector_on_imported_xception_matches_upstream_probability(tmp_path: Path) -> None:
    model, saved = upstream("deepfakebench-xception")
    torch.save(saved, tmp_path / "x.pth")
    import_checkpoint("deepfakebench-xception", tmp_path / "x.pth", tmp_path / "ours", model_id="dfb-x")
    det = Detector.load(tmp_path / "ours", device="cpu")
    crops = [np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)]
    x = (torch.from_numpy(crops[0]).permute(2, 0, 1)[None].float() / 255 - 0.5) / 0.5
    with torch.inference_mode():
        expected = torch.softmax(model(x), 1)[:, 1].numpy()  # DeepfakeBench's "prob"
    np.testing.assert_allclose(det.predict(crops), expected, atol=1e-4)


def test_xception_with_dropout_head(tmp_path: Path) -> None:
    model = randomise_bn(DfbDetector(DfbXception(dropout=0.5)))
    torch.save(model.state_dict(), tmp_path / "x.pth")
    ours, _ = load_checkpoint(_import(tmp_path, "deepfakebench-xception"))
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(ours(x), model(x), atol=1e-4, rtol=1e-4)


def _import(tmp_path: Path, kind: str) -> Path:
    import_checkpoint(kind, tmp_path / "x.pth", tmp_path / "ours")
    return tmp_path / "ours"


def test_static_padding_equals_dynamic_at_its_size() -> None:
    torch.manual_seed(0)
    dynamic = randomise_bn(create_model("efficientnet_b4", tf_same_padding=True))
    static = create_model("efficientnet_b4", tf_same_padding=True, static_padding_size=96).eval()
    static.load_state_dict(dynamic.state_dict())
    x = torch.randn(1, 3, 96, 96)
    with torch.inference_mode():
        torch.testing.assert_close(static(x), dynamic(x))


def test_wrong_layout_names_the_keys(tmp_path: Path) -> None:
    _, saved = upstream("deepfakebench-xception")
    torch.save(saved, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match=r"do not fit sbi-efficientnetb4: \d+ missing \['blocks"):
        _import(tmp_path, "sbi-efficientnetb4")


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="unknown import kind 'nope'"):
        import_checkpoint("nope", tmp_path / "x.pth", tmp_path / "out")
    with pytest.raises(CheckpointError, match="not found"):
        import_checkpoint("sbi-efficientnetb4", tmp_path / "x.pth", tmp_path / "out")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_upstream_state_dict(tmp_path / "junk.pth")
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="no state dict"):
        load_upstream_state_dict(tmp_path / "empty.pth")
