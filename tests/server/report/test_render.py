"""The report page's perturbed-frames line says how much of the video the tamper check saw."""

from __future__ import annotations

from server.report.render import _perturbed


def test_every_face_frame_checked_needs_no_note() -> None:
    tamper = {"checked_frames": 6, "suspicious_frames": 3, "purified_frames": 3, "threshold": 0.7}
    assert _perturbed(tamper, {"frames_with_faces": 6}) == "3 found, 3 purified"


def test_captured_frames_without_patches_say_how_many_were_checked() -> None:
    tamper = {"checked_frames": 2, "suspicious_frames": 0, "purified_frames": 0, "threshold": 0.7}
    assert _perturbed(tamper, {"frames_with_faces": 9}) == "0 found, 0 purified (checked 2 of 9 face frames)"


def test_no_calibration_means_no_check_and_says_so() -> None:
    tamper = {"suspicious_frames": 0, "purified_frames": 0, "threshold": None}
    assert "no tamper check" in _perturbed(tamper, {"frames_with_faces": 4})


def test_verdicts_from_before_the_count_existed_read_as_before() -> None:
    tamper = {"suspicious_frames": 1, "purified_frames": 1, "threshold": 0.7}
    assert _perturbed(tamper, {"frames_with_faces": 4}) == "1 found, 1 purified"
