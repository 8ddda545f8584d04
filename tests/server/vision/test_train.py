"""Tests for detector training: a tiny CPU run, options, determinism and resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from server.errors import ConfigError
from server.samples.faces import load_photos
from server.vision.checkpoint import load_checkpoint
from server.vision.datasets import write_rgb
from server.vision.train import TrainConfig, train

ARCH_KW = {"width": 0.25}  # a ~20k-parameter unmask_tiny keeps each step in milliseconds


@pytest.fixture(scope="module")
def crops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 tiny face crops: 8 real (jittered astronaut/Hopper faces) and 8 fake (colour-shifted faces)."""
    root = tmp_path_factory.mktemp("crops")
    rng = np.random.default_rng(0)
    for cls in ("real", "fake"):
        (root / cls).mkdir()
    for i in range(16):
        photo = load_photos()[i % 2]
        x, y, w, h = photo.face_box
        d = int(rng.integers(-5, 6))
        face = photo.image[y + d : y + h + d, x + d : x + w + d].astype(np.int16)
        cls = "real" if i < 8 else "fake"
        if cls == "fake":
            face[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4, 0] += 40
        write_rgb(root / cls / f"v{i}__f0.png", np.clip(face, 0, 255).astype(np.uint8))
    return root


def config(crops: Path, out: Path, **kw: object) -> TrainConfig:
    base = dict(data=crops, out=out, arch_kwargs=ARCH_KW, epochs=2, batch_size=8, threads=1, progress=False,
                val_fraction=0.25, device="cpu")  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def test_tiny_training_run_writes_a_checkpoint(crops: Path, tmp_path: Path) -> None:
    run = train(config(crops, tmp_path / "run", sbi_ratio=0.5, model_id="tiny-test", demo=True))
    for name in ("card.json", "model.safetensors", "metrics.json", "train.log", "last.pt"):
        assert (run / name).is_file(), name
    model, card = load_checkpoint(run)
    assert card.id == "tiny-test" and card.demo and card.calibration["type"] == "temperature"
    assert card.input_size == (128, 128) and 0.0 <= card.threshold <= 1.0
    metrics = json.loads((run / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert metrics["val"]["n"] == card.metrics["val"]["n"] > 0
    assert model(torch.zeros(1, 3, 128, 128)).shape == (1, 2)


def test_training_is_deterministic(crops: Path, tmp_path: Path) -> None:
    a = train(config(crops, tmp_path / "a", max_steps=3))
    b = train(config(crops, tmp_path / "b", max_steps=3))
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_equals_uninterrupted(crops: Path, tmp_path: Path) -> None:
    full = train(config(crops, tmp_path / "full", epochs=2))
    part = tmp_path / "part"
    train(config(crops, part, epochs=2, max_steps=2))  # interrupted after epoch 1 (2 steps of 8)
    resumed = train(config(crops, part, epochs=2, resume=True))
    wf, wr = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert all(torch.equal(wf[k], wr[k]) for k in wf)
    assert [h["epoch"] for h in json.loads((part / "metrics.json").read_text())["history"]] == [1, 2]


def test_fine_tuning_starts_from_the_init_checkpoint(crops: Path, tmp_path: Path) -> None:
    base = train(config(crops, tmp_path / "base", max_steps=3))
    # A learning rate too small to move a weight: what comes out is what went in (batch-norm
    # statistics still follow the data, so only parameters are compared).
    still = dict(lr=1e-12, weight_decay=0.0, max_steps=1)
    tuned = train(config(crops, tmp_path / "tuned", init=base, **still))
    fresh = train(config(crops, tmp_path / "fresh", **still))
    wb, wt, wf = (load_file(str(r / "model.safetensors")) for r in (base, tuned, fresh))
    params = [k for k in wb if "running_" not in k and "num_batches" not in k]
    assert all(torch.allclose(wb[k], wt[k], atol=1e-6) for k in params)
    assert not all(torch.allclose(wb[k], wf[k], atol=1e-6) for k in params)
    assert json.loads((tuned / "metrics.json").read_text())["config"]["init"] == str(base)


def test_fine_tuning_refuses_another_architecture(crops: Path, tmp_path: Path) -> None:
    base = train(config(crops, tmp_path / "base", max_steps=1))
    with pytest.raises(ConfigError, match="init"):
        train(config(crops, tmp_path / "tuned", init=base, arch_kwargs={"width": 0.5}))


def test_refuses_non_empty_run_dir(crops: Path, tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        train(config(crops, tmp_path / "run"))


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"lipschitz_lambda": 0.01, "lipschitz_batch": 4}, id="lipschitz"),
        pytest.param({"adv_train": "pgd", "adv_steps": 1}, id="pgd"),
        pytest.param({"real_only": True, "augment": False}, id="real-only-sbi"),
    ],
)
def test_training_options_run(crops: Path, tmp_path: Path, options: dict[str, object]) -> None:
    run = train(config(crops, tmp_path / "run", max_steps=2, **options))
    assert (run / "model.safetensors").is_file()
    assert (
        json.loads((run / "metrics.json").read_text())["config"] | options
        == json.loads((run / "metrics.json").read_text())["config"]
    )


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="adv_train"):
        TrainConfig(data=".", adv_train="fgsm")
    with pytest.raises(ConfigError):
        TrainConfig(data=".", epochs=0)
