"""The ``unmask`` command: check prints a table or the verdict JSON; migrate reports revisions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.cli import main
from server.db import migrate


def test_check_json_prints_the_verdict_object(media_dir: Path, tiny_checkpoint: Path, capsys) -> None:
    code = main(
        [
            "check",
            str(media_dir / "face.mp4"),
            "--model-dir",
            str(tiny_checkpoint),
            "--device",
            "cpu",
            "--json",
        ]
    )
    assert code == 0
    verdict = json.loads(capsys.readouterr().out)
    for key in (
        "label",
        "score",
        "confidence",
        "reason",
        "frames_analyzed",
        "faces",
        "tamper",
        "timeline",
        "model",
        "cached",
        "keys",
        "timings",
        "created_at",
    ):
        assert key in verdict
    assert verdict["frames_analyzed"] == 6
    assert verdict["model"]["id"] == "test-tiny"


def test_check_table_is_readable(media_dir: Path, tiny_checkpoint: Path, capsys) -> None:
    assert main(["check", str(media_dir / "face.mp4"), "--model-dir", str(tiny_checkpoint)]) == 0
    out = capsys.readouterr().out
    for label in ("label", "score", "frames analysed", "faces found", "timeline", "model", "DEMO MODEL"):
        assert label in out


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        pytest.param(b"not a video at all", "not", id="text"),
        pytest.param(b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "PNG", id="png"),
    ],
)
def test_check_of_a_bad_file_exits_2_with_a_message(
    tmp_path: Path, tiny_checkpoint: Path, capsys, content: bytes, fragment: str
) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    assert main(["check", str(bad), "--model-dir", str(tiny_checkpoint)]) == 2
    assert fragment.lower() in capsys.readouterr().err.lower()


def test_check_of_a_missing_file(tmp_path: Path, tiny_checkpoint: Path, capsys) -> None:
    assert main(["check", str(tmp_path / "nope.mp4"), "--model-dir", str(tiny_checkpoint)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_check_with_a_broken_checkpoint_says_so(media_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["check", str(media_dir / "face.mp4"), "--model-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err


def test_migrate_up_and_down(tmp_path: Path, capsys) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}"
    assert main(["migrate", "up", "--database-url", url]) == 0
    assert migrate.head_revision() in capsys.readouterr().out
    assert main(["migrate", "down", "--database-url", url]) == 0
    assert "(empty)" in capsys.readouterr().out


def test_early_verdict_stops_reading_and_full_reads_everything(
    tmp_path: Path, tiny_checkpoint: Path, capsys
) -> None:
    from server.media.encode import write_video
    from tests.helpers.videos import face_frames

    video = write_video(face_frames(seconds=10.0, fps=10), tmp_path / "long.mp4", fps=10)
    assert main(["check", str(video), "--model-dir", str(tiny_checkpoint), "--json"]) == 0
    early = json.loads(capsys.readouterr().out)
    assert main(["check", str(video), "--model-dir", str(tiny_checkpoint), "--json", "--full"]) == 0
    full = json.loads(capsys.readouterr().out)
    assert full["frames_analyzed"] == 20 and full["early_stop"] is None
    # The untrained test model scores the same face alike frame after frame, so the SPRT decides.
    assert early["early_stop"] is not None
    assert early["frames_analyzed"] == early["early_stop"]["face_frames"] < 20
    assert early["label"] == early["early_stop"]["decision"]
