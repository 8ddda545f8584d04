"""``unmask eval-robustness --quick`` end to end on tiny sample videos and an untrained detector."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from server.cli import build_parser
from server.cli_robust import register
from server.robust.calibrate import fit_tamper, load_crops
from server.robust.evaluate import RobustnessConfig, evaluate_robustness
from server.robust.report import PAPER, markdown
from server.samples import generate_samples

# Two clips per class, 1 s at 160 px: enough faces for every part, seconds to make.
TINY = {"n_real": 2, "n_fake": 2, "seconds": 1.0, "size": 160, "seed": 11}
# The quick preset shrunk further: a plumbing test, not a measurement.
TINY_RUN = {
    "every": 8,
    "per_class": 4,
    "cw_n": 2,
    "purify_n": 2,
    "cost_frames": 2,
    "train_steps": 2,
    "cw": {"confidence": 5.0, "max_steps": 5, "search_steps": 1},
    "eot": {"n": 2, "steps": 2, "samples": 2},
    "adaptive": {"n": 2, "steps": 2, "lam": 1.0},
    "tamper_eps": (0.02,),
    "pgd_steps": 2,
    "purifier_iterations": 200,  # the tiny preset for 200 fixed iterations: two points of the curve
}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("samples")
    generate_samples(out, **TINY)
    return out


@pytest.fixture(scope="module")
def model_dir(tiny_checkpoint: Path, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint with a tamper.json fitted on the tiny data."""
    directory = Path(shutil.copytree(tiny_checkpoint, tmp_path_factory.mktemp("m") / "model"))
    real, fake = load_crops(tiny_data, (128, 128), every=6)
    fit_tamper(directory, real, fake, eps_values=(0.02,), pgd_steps=2)
    return directory


@pytest.fixture(scope="module")
def result(tiny_data: Path, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("eval")
    cfg = RobustnessConfig.quick_config(tiny_data, model_dir, out, train_data=tiny_data, **TINY_RUN)
    return evaluate_robustness(cfg, log=lambda msg: None)


def test_every_part_of_the_table_is_there(result: dict) -> None:
    assert set(result["detectors"]) == {"default", "lipschitz"}
    rows = result["detectors"]["default"]
    assert set(rows) == {"clean", "fgsm_whitebox", "cw_l2_whitebox", "fgsm_blackbox", "cw_l2_blackbox"}
    for name, row in rows.items():
        value = row["accuracy"] if name == "clean" else row["fake_recall"]
        assert 0.0 <= value <= 1.0
    assert rows["fgsm_whitebox"]["linf_mean"] <= 0.02 + 1 / 255
    assert result["models"]["substitute"]["arch_kwargs"] == {"width": 0.75}
    assert "lipschitz" in result["models"]["lipschitz"]["notes"]


def test_tamper_rows_cover_every_attack_including_the_adaptive_ones(result: dict) -> None:
    attacks = result["tamper"]["attacks"]
    assert {
        "fgsm_0.02",
        "pgd_0.02",
        "cw_l2_whitebox",
        "fgsm_blackbox",
        "eot_pgd",
        "adaptive_eot_squeezers",
        "adaptive_tamper_pgd",
    } <= set(attacks)
    for row in attacks.values():
        assert 0.0 <= row["tpr"] <= 1.0 and 0.0 <= row["evaded"] <= row["fooled"] <= 1.0
    assert 0.0 <= result["tamper"]["clean"]["fpr"] <= 1.0
    assert result["cost"]["ratio"] > 0


def test_purification_and_the_written_report(result: dict) -> None:
    p = result["purification"]
    assert p["preset"] == "tiny" and p["n_other"] >= 1 and p["iterations"] == 200
    assert [c["iteration"] for c in p["curve"]] == [100, 200]
    assert p["curve"][-1]["restore_rate"] == p["restore_rate"]  # the last point is the result
    assert p["curve"][-1]["retain_rate"] == p["retain_rate"]
    assert len(p["picks"]) == p["n_fooled"]
    assert p["n_turned"] == sum(x["turned_by_attack"] for x in p["picks"])
    assert p["restored_turned"] == sum(
        x["purified_p_fake"] >= p["threshold"] for x in p["picks"] if x["turned_by_attack"]
    )
    files = {k: Path(v) for k, v in result["files"].items()}
    assert all(f.is_file() for f in files.values())
    assert files["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(files["json"].read_text())
    assert saved["detectors"]["default"]["clean"] == result["detectors"]["default"]["clean"]
    md = files["markdown"].read_text()
    assert "| FGSM white-box |" in md and f"{PAPER['resnet18']['fgsm_blackbox']:.1f}" in md
    assert "## Tamper check" in md and "## DIP purification" in md and "load average" in md
    assert "| iteration | 100 | 200 |" in md


def test_markdown_without_tamper_or_lipschitz_says_so(result: dict) -> None:
    trimmed = {**result, "detectors": {"default": result["detectors"]["default"]}, "models": {}}
    trimmed["tamper"] = {"skipped": "no tamper.json"}
    trimmed.pop("cost")
    trimmed.pop("purification")
    md = markdown(trimmed)
    assert "not run" in md and "Not run: no tamper.json." in md


def test_cli_runs_the_quick_evaluation(
    tiny_data: Path, model_dir: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    import server.robust.evaluate as evaluate

    base = evaluate.RobustnessConfig.quick_config
    monkeypatch.setattr(
        evaluate.RobustnessConfig,
        "quick_config",
        classmethod(lambda cls, *a, **kw: base(*a, **{**TINY_RUN, **kw})),
    )
    args = build_parser([register]).parse_args(
        [
            "eval-robustness",
            "--quick",
            "--model-dir",
            str(model_dir),
            "--data",
            str(tiny_data),
            "--out",
            str(tmp_path),
            "--substitute",
            str(model_dir),
            "--purifier",
            "tiny",
        ]
    )
    assert args.func(args) == 0
    assert "# Robustness evaluation" in capsys.readouterr().out
    assert (tmp_path / "eval_robustness.json").is_file()


@pytest.mark.parametrize("device", ["tpu", "cuda:0"])
def test_a_purifier_device_this_machine_cannot_use_is_refused_first(
    tiny_data: Path, model_dir: Path, tmp_path: Path, device: str
) -> None:
    import torch

    from server.errors import ConfigError
    from server.robust.evaluate import check_config

    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    cfg = RobustnessConfig(data=tiny_data, model_dir=model_dir, out=tmp_path, purifier_device=device)
    with pytest.raises(ConfigError, match=device):
        check_config(cfg)
