"""``unmask eval-robustness --samples DIR --doc FILE``: inputs made once, the report put into a doc."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import server.robust.calibrate as calibrate
import server.robust.evaluate as evaluate
import server.robust.prepare as prepare_mod
from server.cli import build_parser
from server.cli_robust import register
from server.robust.prepare import prepare
from server.robust.report import DOC_BEGIN, DOC_END, embed
from server.robust.tamper import TAMPER_FILENAME, TamperScorer
from server.vision.checkpoint import load_card
from tests.server.robust.test_evaluate import TINY_RUN as QUICK

# Tiny sample sets (seconds to make) and a shrunk tamper fit: plumbing, not accuracy.
TRAIN = {"n_real": 2, "n_fake": 2, "seconds": 1.0, "size": 160, "seed": 21}
TEST = {"n_real": 2, "n_fake": 2, "seconds": 1.0, "size": 160, "seed": 22}
FIT = {"CALIBRATION_PGD_STEPS": 2, "FIT_EPS": (0.02,), "CODEC_MAX_CROPS": 2, "CODEC_STEPS": 2}


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prepare_mod, "TRAIN_SET", TRAIN)
    monkeypatch.setattr(prepare_mod, "TEST_SET", TEST)
    for name, value in FIT.items():
        monkeypatch.setattr(calibrate, name, value)


@pytest.fixture
def model_dir(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "model"))


def test_prepare_makes_everything_once_and_refits_a_stale_calibration(
    small: None, model_dir: Path, tmp_path: Path
) -> None:
    logged: list[str] = []
    first = prepare(tmp_path / "work", model_dir, log=logged.append)
    assert first.tamper == "fitted" and len(logged) == 4  # two sets, crops, tamper fit
    assert json.loads((first.train_crops / "counts.json").read_text())["fake"] > 0
    stats = TamperScorer.load(model_dir / TAMPER_FILENAME).stats
    assert stats["weights_sha256"] == load_card(model_dir).weights_sha256
    manifest = (first.test_videos / "manifest.json").stat().st_mtime_ns

    logged.clear()
    again = prepare(tmp_path / "work", model_dir, log=logged.append)
    assert again.tamper == "kept" and logged == [] and again.test_videos == first.test_videos
    assert (first.test_videos / "manifest.json").stat().st_mtime_ns == manifest

    data = json.loads((model_dir / TAMPER_FILENAME).read_text())
    data["stats"]["weights_sha256"] = "0" * 64  # as if the detector had been retrained since
    (model_dir / TAMPER_FILENAME).write_text(json.dumps(data))
    assert prepare(tmp_path / "work", model_dir, log=logged.append).tamper == "fitted"
    assert TamperScorer.load(model_dir / TAMPER_FILENAME).stats["weights_sha256"] != "0" * 64


def test_embed_replaces_only_the_generated_part(tmp_path: Path) -> None:
    doc = tmp_path / "docs" / "ROBUSTNESS.md"
    files = {"plot": str(tmp_path / "runs" / "r.png"), "json": str(tmp_path / "runs" / "r.json")}
    embed(doc, "# Title\n\n## Part\n\nold numbers\n\nFiles: x.\n", files)
    text = doc.read_text()
    assert text.startswith(DOC_BEGIN) and "## Title" in text and "### Part" in text
    assert "](../runs/r.png)" in text and "Files: x." not in text
    doc.write_text("# Doc\n\nintro\n\n" + text + "\nafter\n")
    embed(doc, "# Title\n\nnew numbers\n\nFiles: x.\n", files)
    text = doc.read_text()
    assert text.startswith("# Doc\n\nintro\n\n") and text.rstrip().endswith("after")
    assert "new numbers" in text and "old numbers" not in text and text.count(DOC_END) == 1


def test_cli_samples_and_doc(
    small: None, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    base = evaluate.RobustnessConfig.quick_config
    monkeypatch.setattr(
        evaluate.RobustnessConfig,
        "quick_config",
        classmethod(lambda cls, *a, **kw: base(*a, **{**QUICK, **kw})),
    )
    doc = tmp_path / "ROBUSTNESS.md"
    argv = ["eval-robustness", "--quick", "--model-dir", str(model_dir), "--samples", str(tmp_path / "w")]
    argv += ["--out", str(tmp_path / "out"), "--doc", str(doc)]
    monkeypatch.setattr("sys.argv", ["unmask", *argv])
    args = build_parser([register]).parse_args(argv)
    assert args.func(args) == 0
    assert "# Robustness evaluation" in capsys.readouterr().out
    result = json.loads((tmp_path / "out" / "eval_robustness.json").read_text())
    assert result["data"]["path"] == str(tmp_path / "w" / "test_videos")
    assert result["config"]["train_data"] == str(tmp_path / "w" / "train_crops")
    # trained beside the samples (keyed by the training crops), not in --out
    assert [p.name for p in (tmp_path / "w" / "models").glob("*/substitute")] == ["substitute"]
    assert not (tmp_path / "out" / "models").exists()
    assert "tamper" in result and "skipped" not in result["tamper"]
    text = doc.read_text()
    assert f"Command: `unmask {' '.join(argv)}`" in text and "## Robustness evaluation" in text


def test_cli_without_data_or_samples_is_a_config_error(model_dir: Path) -> None:
    from server.errors import ConfigError

    args = build_parser([register]).parse_args(["eval-robustness", "--model-dir", str(model_dir)])
    with pytest.raises(ConfigError):
        args.func(args)


def test_eval_robustness_flag_of_unmask_eval_runs_eval_robustness(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import server.cli_robust as cli_robust
    from server.cli_ml import register as register_ml

    seen: list = []
    monkeypatch.setattr(cli_robust, "cmd_eval_robustness", lambda args: seen.append(args) or 0)
    argv = ["eval", str(model_dir), str(tmp_path), "--robustness", "--out", str(tmp_path / "o")]
    args = build_parser([register_ml]).parse_args(argv)
    assert args.func(args) == 0
    assert seen[0].model_dir == model_dir and seen[0].data == tmp_path and seen[0].out == tmp_path / "o"
    assert seen[0].purifier is None and not seen[0].quick  # eval-robustness's own defaults
