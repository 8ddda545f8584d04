"""``unmask samples | train | eval | model import``: the detector's offline commands."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ML subcommands (filled in as the detector library lands)."""
