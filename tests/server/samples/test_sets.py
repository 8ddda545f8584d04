"""The sample-set cache shared by models/build_default.py and eval-robustness."""

from __future__ import annotations

from pathlib import Path

from server.samples.sets import MARKER, ensure_sample_set, fingerprint

SPEC = {"n_real": 1, "n_fake": 1, "seconds": 1.0, "size": 160, "seed": 31}


def test_a_set_is_made_once_and_remade_when_its_spec_changes(tmp_path: Path) -> None:
    out = tmp_path / "set"
    assert ensure_sample_set(out, SPEC) is True
    videos = sorted(p.relative_to(out) for p in out.rglob("*.mp4"))
    assert len(videos) == 2 and (out / MARKER).read_text() == fingerprint(SPEC)
    stamp = (out / videos[0]).stat().st_mtime_ns
    assert ensure_sample_set(out, SPEC) is False
    assert (out / videos[0]).stat().st_mtime_ns == stamp

    other = {**SPEC, "seed": 32}
    assert fingerprint(other) != fingerprint(SPEC)
    assert ensure_sample_set(out, other) is True
    assert (out / MARKER).read_text() == fingerprint(other)


def test_an_interrupted_set_without_its_marker_is_made_again(tmp_path: Path) -> None:
    out = tmp_path / "set"
    ensure_sample_set(out, SPEC)
    (out / MARKER).unlink()
    assert ensure_sample_set(out, SPEC) is True
