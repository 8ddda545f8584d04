"""The shared inference batcher: concurrent callers get their own rows from shared batches."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from server.vision.batcher import InferenceBatcher
from server.vision.card import default_card
from server.vision.detector import Detector
from server.vision.registry import create_model


def _detector() -> Detector:
    torch.manual_seed(0)
    return Detector(create_model("unmask_tiny"), default_card("unmask_tiny"), "cpu")


def test_concurrent_callers_share_batches_and_get_their_own_rows() -> None:
    detector = _detector()
    rng = np.random.default_rng(0)
    requests = [
        [rng.integers(0, 255, (128, 128, 3), dtype=np.uint8) for _ in range(1 + i % 3)] for i in range(24)
    ]
    expected = [detector.logits(r) for r in requests]
    batcher = InferenceBatcher(detector, max_wait_ms=50)
    try:
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(batcher.logits, requests))
    finally:
        batcher.close()
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)
    assert batcher.crops == sum(len(r) for r in requests)
    assert batcher.batches < len(requests)  # requests were merged


def test_pixel_requests_merge_with_crop_requests() -> None:
    """A frame's crops with the tamper check's copies ([0, 1] pixels) share batches with other
    checks' crops, and each caller gets the rows of its own request."""
    detector = _detector()
    rng = np.random.default_rng(1)
    crops = [[rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)] for _ in range(8)]
    pixels = [
        torch.rand(3 * (1 + i % 2), 3, 128, 128, generator=torch.Generator().manual_seed(i)) for i in range(8)
    ]
    with torch.no_grad():
        expected = [detector.pixel_model()(p).numpy() for p in pixels]
    batcher = InferenceBatcher(detector, max_wait_ms=50)
    try:
        with ThreadPoolExecutor(16) as pool:
            got_pixels = pool.map(batcher.pixel_logits, pixels)
            got_crops = pool.map(batcher.logits, crops)
            got_pixels, got_crops = list(got_pixels), list(got_crops)
    finally:
        batcher.close()
    for e, g in zip(expected, got_pixels, strict=True):
        np.testing.assert_allclose(g.numpy(), e, rtol=1e-4, atol=1e-4)
    for c, g in zip(crops, got_crops, strict=True):
        np.testing.assert_allclose(g, detector.logits(c), rtol=1e-4, atol=1e-4)
    assert batcher.crops == sum(len(p) for p in pixels) + len(crops)
    assert batcher.batches < len(pixels) + len(crops)
    assert batcher.pixel_logits(torch.empty(0, 3, 128, 128)).shape == (0, 2)


def test_registered_callers_flush_as_soon_as_each_has_a_request_waiting() -> None:
    """With a minute-long window, registered callers are answered at once: alone, or as soon as
    every registered caller has its request in (one batch), never after the window."""
    detector = _detector()
    crop = [np.full((128, 128, 3), 90, np.uint8)]
    batcher = InferenceBatcher(detector, max_wait_ms=60_000)

    def one_check(_: int) -> np.ndarray:
        with batcher.caller():
            return batcher.logits(crop)

    try:
        with ThreadPoolExecutor(1) as pool:
            pool.submit(one_check, 0).result(timeout=10)
        assert batcher.batches == 1
        barrier = threading.Barrier(3)

        def together(i: int) -> np.ndarray:
            with batcher.caller():
                barrier.wait(timeout=10)  # all three registered before anyone submits
                return batcher.logits(crop)

        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(together, i) for i in range(3)]
            rows = [f.result(timeout=10) for f in futures]
        assert batcher.batches == 2 and batcher.crops == 4
        for r in rows:
            np.testing.assert_allclose(r, detector.logits(crop), rtol=1e-4, atol=1e-4)
    finally:
        batcher.close()


def test_empty_request_and_errors_reach_the_caller() -> None:
    batcher = InferenceBatcher(_detector())
    try:
        assert batcher.logits([]).shape == (0, 2)
        bad = [np.zeros((10, 10), np.uint8)]  # not HxWx3
        try:
            batcher.logits(bad)
        except ValueError:
            pass
        else:
            raise AssertionError("a bad crop must raise in the caller")
    finally:
        batcher.close()
