"""purify_and_score on a real SQLite store with the tiny detector and the tiny DIP preset."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from server.robust.dip import DIPConfig, Purifier
from server.robust.purification import (
    PRESETS,
    fail_unfinished,
    load_calibration,
    purifier_config,
    purify_and_score,
    purify_versions,
    scoring_version,
)
from server.robust.purify_calibration import PURIFY_FILENAME, PurifiedThreshold
from server.robust.purify_store import PurifyStore, decode_png, detector_ref, result_key
from server.settings import Settings
from server.vision.detector import Detector


@pytest.fixture(scope="module")
def detector(tiny_checkpoint: Path) -> Detector:
    return Detector.load(tiny_checkpoint, "cpu")


@pytest.fixture(scope="module")
def purifier() -> Purifier:
    return Purifier(purifier_config("tiny"), "cpu")


@pytest.fixture
def store(tmp_path: Path):
    from server.db.migrate import upgrade

    url = f"sqlite+aiosqlite:///{tmp_path / 'p.sqlite3'}"
    upgrade(url)
    s = PurifyStore(url)
    yield s
    s.close()


def _crops(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (30 + 3 * i, 28, 3), dtype=np.uint8) for i in range(n)]


def _versions(detector: Detector, purifier: Purifier) -> dict[str, str]:
    return {"purifier_version": purifier.config.version(), "detector_version": detector_ref(detector.card)}


def _run(store: PurifyStore, shas: list[str], detector: Detector, purifier: Purifier, **kw):
    kw = {**_versions(detector, purifier), **kw}
    return purify_and_score(shas, store=store, detector=detector, purifier=purifier, **kw)


def test_presets_and_iteration_override() -> None:
    assert purifier_config("auto", device="cpu") == DIPConfig.cpu()
    assert purifier_config("auto", device="cuda") == DIPConfig.fast()
    assert len({purifier_config(p).version() for p in PRESETS if p != "auto"}) == 4
    capped = purifier_config("fast", iterations=50)
    assert capped.max_iters == 50 and capped.min_iters <= 50
    fixed = purifier_config("tiny", iterations=7)
    assert (fixed.fixed_iter, fixed.max_iters) == (7, 7)
    assert fixed.version() != purifier_config("tiny").version()
    with pytest.raises(ValueError):
        purifier_config("huge")


def test_server_and_worker_agree_on_versions(detector: Detector) -> None:
    s = Settings(purifier_preset="tiny", device="cpu")
    assert purify_versions(s, detector.card) == (purifier_config("tiny").version(), "test-tiny@0.0.1")


def test_purifies_scores_stores_then_skips(store, detector, purifier) -> None:
    shas = store.put_crops(_crops(2))
    report = _run(store, [*shas, shas[0]], detector, purifier)
    assert (len(report.keys), len(report.done), report.skipped, report.failed) == (2, 2, [], [])
    rows = store.get_results(report.keys)
    for key in report.keys:
        row = rows[key]
        assert row.status == "done" and 0.0 <= row.purified_score <= 1.0
        assert (row.iterations, row.stopped_by, row.attempts) == (20, "fixed", 1)
        assert decode_png(row.purified_png).shape == (*detector.card.input_size, 3)

    again = _run(store, shas, detector, purifier)
    assert (sorted(again.skipped), again.done) == (sorted(report.keys), [])
    assert store.get_results(report.keys)[report.keys[0]].finished_at == rows[report.keys[0]].finished_at


def test_missing_crop_and_version_mismatch_fail_with_a_reason(store, detector, purifier) -> None:
    [sha] = store.put_crops(_crops(1))
    report = _run(store, [sha, "0" * 64], detector, purifier)
    assert len(report.done) == 1 and len(report.failed) == 1
    assert "not in the crop store" in store.get_results(report.failed)[report.failed[0]].error

    wrong = _run(store, [sha], detector, purifier, purifier_version="other")
    [key] = wrong.failed
    assert "not the requested version" in store.get_results([key])[key].error


def test_a_crop_that_kept_killing_its_worker_is_given_up(store, detector, purifier) -> None:
    [sha] = store.put_crops(_crops(1))
    key = result_key(sha, purifier.config.version(), detector_ref(detector.card))
    for _ in range(3):  # three deliveries whose worker died before saving
        store.begin_attempts({key: sha})
    report = _run(store, [sha], detector, purifier, max_attempts=3)
    assert report.failed == [key]
    assert "started 3 times" in store.get_results([key])[key].error


def test_fail_unfinished_keeps_finished_results(store, detector, purifier) -> None:
    shas = store.put_crops(_crops(2))
    first = _run(store, shas[:1], detector, purifier)
    versions = _versions(detector, purifier)
    assert fail_unfinished(store, shas, reason="time limit", **versions) == 1
    rows = store.get_results([*first.keys, result_key(shas[1], *versions.values())])
    assert sorted(r.status for r in rows.values()) == ["done", "failed"]


def test_purified_scores_are_put_on_the_card_scale_by_the_purified_threshold(
    store, detector, purifier
) -> None:
    [sha] = store.put_crops(_crops(1))
    plain = _run(store, [sha], detector, purifier)
    raw = store.get_results(plain.keys)[plain.keys[0]].purified_score
    card = detector.card.threshold
    # A cut just below this crop's purified score calls it fake; one just above calls it real.
    for cut, fake in ((raw * 0.999, True), (min(raw * 1.001, 0.999999), False)):
        cal = PurifiedThreshold(cut, detector.card.weights_sha256, purifier.config.version())
        version = scoring_version(purifier.config, cal)
        assert version == f"{purifier.config.version()}+{cal.tag()}"
        report = _run(store, [sha], detector, purifier, calibration=cal, purifier_version=version)
        [key] = report.done  # a new key: the plain result is not reused under a calibration
        score = store.get_results([key])[key].purified_score
        assert score == pytest.approx(float(cal.to_card_scale([raw], card)[0]), abs=1e-6)
        assert (score >= card) is fake


def test_a_worker_without_the_servers_calibration_answers_with_failed_results(
    store, detector, purifier, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    model_dir = Path(shutil.copytree(tiny_checkpoint, tmp_path / "model"))
    s = Settings(purifier_preset="tiny", device="cpu", model_dir=model_dir)
    cal = PurifiedThreshold(0.6, detector.card.weights_sha256, purifier_config("tiny").version())
    cal.save(model_dir / PURIFY_FILENAME)
    assert load_calibration(model_dir, detector.card, purifier.config) == cal
    version, ref = purify_versions(s, detector.card)
    assert version == scoring_version(purifier.config, cal) != purifier.config.version()
    [sha] = store.put_crops(_crops(1))
    report = _run(store, [sha], detector, purifier, purifier_version=version, detector_version=ref)
    [key] = report.failed
    assert "not the requested version" in store.get_results([key])[key].error
    # A calibration of another purifier config is not used, by server and worker alike.
    PurifiedThreshold(0.6, detector.card.weights_sha256, "other").save(model_dir / PURIFY_FILENAME)
    assert purify_versions(s, detector.card) == (purifier.config.version(), ref)
    assert load_calibration(model_dir, detector.card, purifier.config) is None
