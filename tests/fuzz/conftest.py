"""Fuzz tests run on SQLite only: they are about the decoder boundary, not the database."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """A SQLite file (overrides the suite's SQLite + PostgreSQL parametrisation)."""
    return f"sqlite+aiosqlite:///{tmp_path / 'unmask.sqlite3'}"
