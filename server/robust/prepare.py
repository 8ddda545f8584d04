"""The inputs of ``unmask eval-robustness --samples DIR``, made once and reused.

The default detector's own sample sets (models/build_default.py: training seed 101, held-out
test seed 202), face crops of the training videos (the substitute and Lipschitz detectors train
on them) and, when the model directory has no tamper calibration for its weights, a fresh
``tamper.json`` fitted on those training crops. The test videos, which the evaluation reads,
are never seen by any fit. Each step is skipped when ``DIR`` already holds its output for the
same spec (a ``fingerprint.txt`` written last, so an interrupted step is redone).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from server.samples.sets import MARKER, TEST_SET, TRAIN_SET, ensure_crops, ensure_sample_set
from server.vision.checkpoint import load_card

# Tamper fit: at most this many training crops per class (``unmask tamper fit``'s default).
TAMPER_PER_CLASS = 300


@dataclass(frozen=True)
class Prepared:
    """Where the evaluation's inputs are, and what was done to get them."""

    test_videos: Path
    train_videos: Path
    train_crops: Path
    models: Path  # substitute / Lipschitz detectors trained on these training crops
    tamper: str  # "kept" (matched the weights) or "fitted"


def ensure_tamper(model_dir: Path, crops: Path, *, refit: bool = False) -> str:
    """Fit ``<model_dir>/tamper.json`` on ``crops`` when it is missing, fitted on other weights, or
    ``refit``; "kept" or "fitted"."""
    from server.robust.calibrate import fit_tamper_on_data
    from server.robust.tamper.score import TamperScorer

    card = load_card(model_dir)
    if not refit and TamperScorer.load_for(model_dir, card.weights_sha256) is not None:
        return "kept"
    fit_tamper_on_data(model_dir, crops, every=1, max_per_class=TAMPER_PER_CLASS)
    return "fitted"


def prepare(
    directory: str | Path, model_dir: str | Path, *, refit_tamper: bool = False, log: Callable[[str], None]
) -> Prepared:
    """Sample sets, training crops and tamper calibration for an evaluation (see the module doc)."""
    directory, model_dir = Path(directory), Path(model_dir)
    directory.mkdir(parents=True, exist_ok=True)
    train, test, crops = directory / "train_videos", directory / "test_videos", directory / "train_crops"
    for name, path, spec in (("training", train, TRAIN_SET), ("held-out test", test, TEST_SET)):
        if ensure_sample_set(path, spec):
            log(f"generated the {name} sample set (seed {spec['seed']}) in {path}")
    size = tuple(load_card(model_dir).input_size)
    if ensure_crops(train, crops, size):  # type: ignore[arg-type]
        log(f"exported training face crops to {crops}")
    tamper = ensure_tamper(model_dir, crops, refit=refit_tamper)
    if tamper == "fitted":
        log(f"fitted {model_dir}/tamper.json on {crops}")
    # Keyed by the crops: new training data trains new substitute / Lipschitz detectors.
    models = directory / "models" / (crops / MARKER).read_text()[:16]
    return Prepared(test_videos=test, train_videos=train, train_crops=crops, models=models, tamper=tamper)
