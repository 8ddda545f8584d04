"""The shared inference batcher: concurrent callers get their own rows from shared batches."""

from __future__ import annotations

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
