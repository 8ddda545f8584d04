"""Post-hoc calibration of P(fake): temperature scaling and isotonic regression (numpy only)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor | list[Any]

# Temperature search range: beyond these the model is either constant or a hard step.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0
_SEARCH_STEPS = 80  # golden-section steps: the bracket shrinks by 0.618**80, far below float noise


def _np(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


def _logits2(logits: ArrayLike) -> np.ndarray:
    arr = _np(logits).astype(np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"logits must have shape (N, 2), got {arr.shape}")
    return arr


def _labels(labels: ArrayLike, n: int) -> np.ndarray:
    y = _np(labels).astype(np.float64).reshape(-1)
    if y.shape[0] != n or n == 0:
        raise ValueError(f"need the same non-zero number of labels and scores, got {y.shape[0]} and {n}")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    return y


def _sigmoid(d: np.ndarray) -> np.ndarray:
    """Stable sigmoid: no overflow warning for large |d|."""
    return np.exp(-np.logaddexp(0.0, -d))


def _nll(margin: np.ndarray, y: np.ndarray, beta: float) -> float:
    """Mean binary NLL of sigmoid(beta * margin); convex in beta."""
    z = beta * margin
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(logits: ArrayLike, labels: ArrayLike) -> float:
    """The temperature T minimising the NLL of softmax(logits / T) (golden-section search on 1/T)."""
    arr = _logits2(logits)
    y = _labels(labels, arr.shape[0])
    margin = arr[:, 1] - arr[:, 0]
    lo, hi = np.log(1.0 / MAX_TEMPERATURE), np.log(1.0 / MIN_TEMPERATURE)
    g = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = _nll(margin, y, np.exp(a)), _nll(margin, y, np.exp(b))
    for _ in range(_SEARCH_STEPS):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = _nll(margin, y, np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = _nll(margin, y, np.exp(b))
    return float(1.0 / np.exp((lo + hi) / 2.0))


def fit_isotonic(probs: ArrayLike, labels: ArrayLike) -> dict[str, Any]:
    """Isotonic (non-decreasing) map from raw P(fake) to calibrated P(fake), by pool-adjacent-violators."""
    p = _np(probs).astype(np.float64).reshape(-1)
    y = _labels(labels, p.shape[0])
    order = np.argsort(p, kind="stable")
    p, y = p[order], y[order]
    # Blocks of [sum_y, count, x_min, x_max]; merge while a block's mean is below its predecessor's.
    blocks: list[list[float]] = []
    for pi, yi in zip(p, y, strict=True):
        blocks.append([yi, 1.0, pi, pi])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
            s, c, _, x1 = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
            blocks[-1][3] = x1
    xs: list[float] = []
    ys: list[float] = []
    for s, c, x0, x1 in blocks:
        for x in (x0, x1) if x1 > x0 else (x0,):
            xs.append(float(x))
            ys.append(float(s / c))
    return {"type": "isotonic", "x": xs, "y": ys}


def apply_calibration(logits: ArrayLike, calibration: dict[str, Any]) -> np.ndarray:
    """Calibrated P(fake), float32 shape (N,), from raw logits (N, 2) and a model card's calibration."""
    arr = _logits2(logits)
    margin = arr[:, 1] - arr[:, 0]  # softmax(...)[:, 1] == sigmoid(l1 - l0)
    kind = calibration.get("type")
    if kind == "none":
        out = _sigmoid(margin)
    elif kind == "temperature":
        out = _sigmoid(margin / float(calibration["temperature"]))
    elif kind == "isotonic":
        out = np.interp(_sigmoid(margin), calibration["x"], calibration["y"])
    else:
        raise ValueError(f"unknown calibration type {kind!r}")
    return out.astype(np.float32)
