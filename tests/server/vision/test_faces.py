"""Tests for face detection and face crops."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from server.errors import ConfigError
from server.vision import faces
from server.vision.faces import FaceBox, create_face_detector, crop_face, list_face_detectors

ASTRONAUT_FACE = (177, 66, 95, 95)


def iou(box: FaceBox, ref: tuple[int, int, int, int]) -> float:
    ax0, ay0, ax1, ay1 = box.x, box.y, box.x + box.w, box.y + box.h
    bx0, by0, bx1, by1 = ref[0], ref[1], ref[0] + ref[2], ref[1] + ref[3]
    inter = max(0, min(ax1, bx1) - max(ax0, bx0)) * max(0, min(ay1, by1) - max(ay0, by0))
    return inter / (box.w * box.h + ref[2] * ref[3] - inter)


@pytest.fixture(scope="module")
def haar() -> faces.HaarFaceDetector:
    return create_face_detector("haar")  # type: ignore[return-value]


def test_finds_the_astronaut(haar: faces.HaarFaceDetector) -> None:
    found = haar.detect(data.astronaut())
    assert len(found) == 1
    assert iou(found[0], ASTRONAUT_FACE) > 0.7
    assert found[0].score >= 5  # neighbour count


def test_blank_image_has_no_faces(haar: faces.HaarFaceDetector) -> None:
    assert haar.detect(np.zeros((480, 640, 3), np.uint8)) == []
    assert haar.detect(np.full((720, 1280, 3), 200, np.uint8)) == []


def test_720p_frame_boxes_in_frame_pixels(haar: faces.HaarFaceDetector) -> None:
    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[100:612, 300:812] = data.astronaut()
    haar.detect(frame)
    start = time.perf_counter()
    found = haar.detect(frame)
    elapsed = time.perf_counter() - start
    assert len(found) == 1
    assert iou(found[0], (477, 166, 95, 95)) > 0.6
    assert elapsed < 2.0  # ~65 ms on a quiet core; generous for a loaded CI machine


def test_largest_first_and_max_faces() -> None:
    img = data.astronaut()
    canvas = np.zeros((768, 1024, 3), np.uint8)
    canvas[:512, :512] = img
    canvas[:256, 640:896] = cv2.resize(img, (256, 256), interpolation=cv2.INTER_AREA)
    found = create_face_detector("haar", max_side=1024).detect(canvas)
    assert len(found) == 2
    assert found[0].w > found[1].w and found[1].x > 600
    assert len(create_face_detector("haar", max_side=1024, max_faces=1).detect(canvas)) == 1


def test_facebox_as_list() -> None:
    assert FaceBox(1, 2, 3, 4, 0.5).as_list() == [1, 2, 3, 4]


def test_registry() -> None:
    assert {"haar", "yunet"} <= set(list_face_detectors())
    with pytest.raises(ValueError, match=r"unknown face detector 'nope'.*haar"):
        create_face_detector("nope")


def test_yunet_without_model_explains(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no YuNet model ships"):
        create_face_detector("yunet", model_path=tmp_path / "missing.onnx")
    with pytest.raises(ConfigError):
        create_face_detector("yunet")


def test_missing_cascade_is_config_error() -> None:
    with pytest.raises(ConfigError, match="not found"):
        create_face_detector("haar", cascade="no_such_cascade.xml")


def test_an_opencv_without_cascades_is_a_config_error_naming_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import cv2

    cascade = Path(cv2.data.haarcascades) / "haarcascade_frontalface_alt2.xml"
    monkeypatch.delattr(cv2, "CascadeClassifier")
    # Even with the cascade file at hand (carried), OpenCV 5 cannot read it.
    with pytest.raises(ConfigError, match="opencv-python-headless<5"):
        create_face_detector("haar", cascade=str(cascade))


def test_bad_image(haar: faces.HaarFaceDetector) -> None:
    with pytest.raises(ValueError, match="uint8 RGB"):
        haar.detect(np.zeros((10, 10), np.uint8))


def test_crop_inside_image() -> None:
    img = data.astronaut()
    crop = crop_face(img, FaceBox(*ASTRONAUT_FACE), margin=0.3)
    side = round(95 * 1.3)
    assert crop.shape == (side, side, 3)
    x0 = round(177 + 95 / 2 - side / 2)
    y0 = round(66 + 95 / 2 - side / 2)
    np.testing.assert_array_equal(crop, img[y0 : y0 + side, x0 : x0 + side])


def test_crop_pads_by_edge_replication() -> None:
    img = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    crop = crop_face(img, FaceBox(0, 0, 10, 10), margin=1.0)
    assert crop.shape == (20, 20, 3)
    np.testing.assert_array_equal(crop[:5, :5], np.broadcast_to(img[0, 0], (5, 5, 3)))
    np.testing.assert_array_equal(crop[5:, 5:], img[:15, :15])


def test_crop_resizes_and_rejects_outside_boxes() -> None:
    img = data.astronaut()
    assert crop_face(img, FaceBox(*ASTRONAUT_FACE), size=(128, 96)).shape == (128, 96, 3)
    assert crop_face(img, FaceBox(*ASTRONAUT_FACE), size=(300, 300)).shape == (300, 300, 3)
    with pytest.raises(ValueError, match="outside"):
        crop_face(img, FaceBox(600, 600, 10, 10))


def test_a_sized_scan_finds_only_faces_in_its_size_range(haar: faces.HaarFaceDetector) -> None:
    image = data.astronaut()
    side = ASTRONAUT_FACE[2]
    [face] = haar.detect_sized(image, int(side * 0.5), side * 2)
    assert face == haar.detect(image)[0]
    assert haar.detect_sized(image, side * 2, side * 4) == []  # larger than the face
    assert haar.detect_sized(image, 24, side // 2) == []  # smaller
