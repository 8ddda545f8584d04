"""Fixtures shared by the whole suite: databases, a small checkpoint, settings, the API client.

Database tests run twice: on a SQLite file and on the real PostgreSQL at 127.0.0.1:5432
(a fresh database per test session, dropped at the end).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from pathlib import Path

import cv2
import pytest
import torch
from skimage import data

from server.db.migrate import upgrade
from server.robust.calibrate import to_tensor
from server.robust.tamper import TAMPER_FILENAME, TamperScorer
from server.settings import Settings
from server.vision.card import default_card
from server.vision.checkpoint import save_checkpoint
from server.vision.detector import Detector
from server.vision.registry import create_model
from tests.helpers.videos import write_blank_video, write_face_video

# Two cores are shared by the test process, a worker and sometimes a browser: one torch
# thread each avoids the oversubscription collapse measured in machine.md.
torch.set_num_threads(1)

PG_ADMIN_DSN = os.environ.get("UNMASK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No UNMASK_* variable of the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("UNMASK_") and key != "UNMASK_TEST_PG":
            monkeypatch.delenv(key)


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each supported kind (not migrated): a SQLite file or a new PG database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'unmask.sqlite3'}"
    name = f"unmask_test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except OSError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_DSN}: {exc} (.ci/run starts it)")
    request.addfinalizer(lambda: asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')))
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


@pytest.fixture
def migrated_url(database_url: str) -> str:
    """A database at the newest migration."""
    upgrade(database_url)
    return database_url


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained unmask_tiny checkpoint: tests with it assert plumbing, not accuracy."""
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("ckpt")
    card = default_card("unmask_tiny", id="test-tiny", version="0.0.1", training_data="untrained (tests)")
    save_checkpoint(create_model("unmask_tiny"), card, directory)
    return directory


@pytest.fixture(scope="session")
def flagging_checkpoint(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint with a tamper calibration that flags every face frame (threshold 0).

    Fitted with TamperScorer's own API on astronaut crops (z-score method), then its threshold set
    to 0: tamper scores are probabilities in (0, 1], so every scored frame is above it.
    """
    directory = Path(shutil.copytree(tiny_checkpoint, tmp_path_factory.mktemp("flagging") / "model"))
    detector = Detector.load(directory, device="cpu")
    img = data.astronaut()
    crops = [cv2.resize(img[30 + d : 230 + d, 150 + d : 350 + d], (128, 128)) for d in (-8, -4, 0, 4, 8)]
    scorer = TamperScorer().fit_frames(
        detector.pixel_model(), to_tensor(crops, tuple(detector.card.input_size))
    )
    scorer.threshold = 0.0
    scorer.stats["weights_sha256"] = detector.card.weights_sha256
    scorer.save(directory / TAMPER_FILENAME)
    return directory


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sample videos written once per session."""
    d = tmp_path_factory.mktemp("media")
    write_face_video(d / "face.mp4", seconds=3.0)
    write_face_video(d / "face_moov_at_end.mp4", seconds=3.0, layout="moov_at_end")
    write_face_video(d / "face_fragmented.mp4", seconds=3.0, layout="fragmented")
    write_blank_video(d / "blank.mp4", seconds=2.0)
    return d


@pytest.fixture
def settings(migrated_url: str, tiny_checkpoint: Path, tmp_path: Path) -> Settings:
    """Settings for one test: its own data dir and database, the tiny checkpoint, one thread."""
    return Settings(
        data_dir=tmp_path / "data",
        database_url=migrated_url,
        model_dir=tiny_checkpoint,
        device="cpu",
        op_threads=1,
        max_running_checks=2,
        instance_id="test-instance",
    )


@pytest.fixture
async def api(aiohttp_client, settings: Settings):
    """A test client on ``create_app(settings)``."""
    from server.app import create_app

    return await aiohttp_client(create_app(settings))
