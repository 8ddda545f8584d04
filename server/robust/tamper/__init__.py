"""Cheap per-frame checks for adversarial perturbations, combined into one tamper score."""

from server.robust.tamper.checks import FEATURE_SIGNS, CheckConfig, tamper_features
from server.robust.tamper.score import (
    DEFAULT_TARGET_FPR,
    TAMPER_FILENAME,
    TamperScorer,
    calibration_attacks,
)
from server.robust.tamper.squeeze import bit_depth, jpeg, median_filter

__all__ = [
    "DEFAULT_TARGET_FPR",
    "FEATURE_SIGNS",
    "TAMPER_FILENAME",
    "CheckConfig",
    "TamperScorer",
    "bit_depth",
    "calibration_attacks",
    "jpeg",
    "median_filter",
    "tamper_features",
]
