"""The verdict cache on real SQLite and PostgreSQL: every key type, near-duplicates, lifecycle."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy import inspect

from server.db import cache, migrate, repo
from server.db.engine import create_engine, session_factory
from server.db.urls import canonical_url
from server.media.decode import open_video
from server.media.encode import write_video
from server.vision.phash import phash64
from tests.helpers.mirror import wait_ready
from tests.helpers.videos import face_frames, scene_frames

REF = "test-model@1#abcdef012345"
TTL = timedelta(days=1)


def _hashes(path: Path) -> list[tuple[int, float, int]]:
    with open_video(path) as reader:
        return [(s.index, s.t, phash64(s.image)) for s in reader.samples(2.0)]


def _crop(frame: np.ndarray, fraction: float) -> np.ndarray:
    h, w = frame.shape[:2]
    dy, dx = int(h * fraction), int(w * fraction)
    return cv2.resize(frame[dy : h - dy, dx : w - dx], (w, h), interpolation=cv2.INTER_AREA)


def _noise_frames(seed: int, seconds: float = 4.0, fps: int = 25, size: tuple[int, int] = (320, 240)):
    rng = np.random.default_rng(seed)
    w, h = size
    field = cv2.GaussianBlur((rng.random((h * 2, w * 2, 3)) * 255).astype(np.uint8), (0, 0), 12)
    for i in range(int(seconds * fps)):
        yield np.ascontiguousarray(field[i % h : i % h + h, (2 * i) % w : (2 * i) % w + w])


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The original, its near-duplicates, 10 stored distractors and 20 unrelated videos.

    Near-duplicates: re-encoded at another CRF and resolution, the first 2 s cut, re-containered
    as MKV and as WebM (VP9), and cropped 3 % per edge.
    """
    d = tmp_path_factory.mktemp("cachevids")
    original = list(face_frames(seconds=6.0, size=(384, 288)))
    out = {
        "original": write_video(original, d / "original.mp4"),
        "reencoded": write_video([cv2.resize(f, (256, 192)) for f in original], d / "reencoded.mp4", crf=36),
        "trimmed": write_video(original[50:], d / "trimmed.mp4"),  # first 2 s cut
        "mkv": write_video(original, d / "recontainered.mkv", crf=28),
        "webm": write_video(original, d / "recontainered.webm", codec="libvpx-vp9"),
        "cropped": write_video([_crop(f, 0.03) for f in original], d / "cropped.mp4"),
    }
    for i in range(10):
        out[f"distractor{i}"] = write_video(_noise_frames(i), d / f"distractor{i}.mp4")
    scenes = ["coffee", "chelsea", "camera", "rocket", "cat", "coins", "moon", "page", "horse", "text"]
    for scene in scenes:
        for motion in ("pan", "zoom"):
            out[f"unrelated-{scene}-{motion}"] = write_video(
                scene_frames(scene, motion=motion), d / f"{scene}-{motion}.mp4"
            )
    return out


@pytest.fixture(params=["database", "memory"])
async def sessions(request: pytest.FixtureRequest, migrated_url: str):
    """Each test runs with near-duplicate look-ups in the database, and from the in-memory index."""
    engine = create_engine(migrated_url)
    factory = session_factory(engine)
    if request.param == "memory":
        await wait_ready(await cache.start_mirror(factory, REF, max_rows=100_000))
    yield factory
    await cache.stop_mirrors(factory)
    await engine.dispose()


async def _cached_check(
    sessions, check_id: str, label: str, hashes, keys=(), ref: str = REF, ttl=TTL
) -> None:
    await repo.create_check(sessions, id=check_id, source="upload", model_id="m", model_version="1")
    await repo.finish_check(
        sessions, check_id, {"label": label, "score": 0.5, "model": {"id": "m", "version": "1"}}
    )
    await cache.store(sessions, check_id, ref, keys, hashes, ttl)


async def test_near_duplicates_hit_and_unrelated_videos_do_not(sessions, videos: dict[str, Path]) -> None:
    await _cached_check(sessions, "o" * 32, "manipulated", _hashes(videos["original"]))
    for i in range(10):
        await _cached_check(sessions, f"{i:032d}", "authentic", _hashes(videos[f"distractor{i}"]))
    for name in ("original", "reencoded", "trimmed", "mkv", "webm", "cropped"):
        query = [h for _, _, h in _hashes(videos[name])]
        hit = await cache.lookup_frames(sessions, query, REF)
        assert hit is not None, f"{name} should hit the original"
        assert hit.check_id == "o" * 32, name
        assert hit.verdict["label"] == "manipulated"
        assert hit.as_verdict()["cached"] is True
    unrelated = [k for k in videos if k.startswith("unrelated-")]
    assert len(unrelated) == 20
    for name in unrelated:
        query = [h for _, _, h in _hashes(videos[name])]
        assert await cache.lookup_frames(sessions, query, REF) is None, f"{name} must not hit"


async def test_model_change_misses(sessions, videos: dict[str, Path]) -> None:
    hashes = _hashes(videos["original"])
    await _cached_check(sessions, "o" * 32, "manipulated", hashes, keys=[("sha256", "a" * 64)])
    other = "test-model@2#abcdef012345"
    assert await cache.lookup_frames(sessions, [h for _, _, h in hashes], other) is None
    assert await cache.lookup_key(sessions, "sha256", "a" * 64, other) is None
    assert await cache.lookup_key(sessions, "sha256", "a" * 64, REF) is not None


async def test_exact_keys_hit(sessions) -> None:
    url = canonical_url("https://Example.com/v.mp4?utm_source=feed")
    keys = [("sha256", "b" * 64), ("url", url), ("video_id", "youtube:dQw4w9WgXcQ")]
    await _cached_check(sessions, "k" * 32, "authentic", [], keys=keys)
    for kind, value in keys:
        hit = await cache.lookup_key(sessions, kind, value, REF)
        assert hit is not None and hit.check_id == "k" * 32 and hit.kind == kind
    assert (
        await cache.lookup_key(sessions, "url", canonical_url("https://example.com/v.mp4"), REF) is not None
    )
    assert await cache.lookup_key(sessions, "sha256", "c" * 64, REF) is None


async def test_expired_entries_miss_and_are_purged(sessions, videos: dict[str, Path]) -> None:
    hashes = _hashes(videos["original"])
    await _cached_check(
        sessions, "e" * 32, "authentic", hashes, keys=[("sha256", "d" * 64)], ttl=timedelta(seconds=-1)
    )
    assert await cache.lookup_key(sessions, "sha256", "d" * 64, REF) is None
    assert await cache.lookup_frames(sessions, [h for _, _, h in hashes], REF) is None
    assert await cache.purge_expired(sessions) == 1 + len(hashes)


async def test_invalidation_forgets_a_verdict(sessions, videos: dict[str, Path]) -> None:
    hashes = _hashes(videos["original"])
    await _cached_check(sessions, "i" * 32, "authentic", hashes, keys=[("sha256", "f" * 64)])
    assert await cache.invalidate(sessions, check_id="i" * 32) == 1 + len(hashes)
    assert await cache.lookup_key(sessions, "sha256", "f" * 64, REF) is None
    assert await cache.lookup_frames(sessions, [h for _, _, h in hashes], REF) is None


async def test_a_key_moves_to_the_newest_verdict(sessions) -> None:
    await _cached_check(sessions, "1" * 32, "authentic", [], keys=[("sha256", "9" * 64)])
    await _cached_check(sessions, "2" * 32, "manipulated", [], keys=[("sha256", "9" * 64)])
    hit = await cache.lookup_key(sessions, "sha256", "9" * 64, REF)
    assert hit is not None and hit.check_id == "2" * 32


async def test_served_keys_are_forgotten_by_invalidation_and_by_a_newer_verdict(sessions) -> None:
    # An exact-key hit is kept in this process for a few seconds; invalidating it, or storing a
    # newer verdict under the same key, must take effect at once.
    await _cached_check(sessions, "h" * 32, "authentic", [], keys=[("sha256", "7" * 64), ("url", "u")])
    assert (await cache.lookup_key(sessions, "sha256", "7" * 64, REF)).check_id == "h" * 32
    assert (await cache.lookup_key(sessions, "url", "u", REF)).check_id == "h" * 32
    await _cached_check(sessions, "n" * 32, "manipulated", [], keys=[("sha256", "7" * 64)])
    hit = await cache.lookup_key(sessions, "sha256", "7" * 64, REF)
    assert hit is not None and hit.check_id == "n" * 32 and hit.verdict["label"] == "manipulated"
    assert await cache.lookup_key(sessions, "sha256", "7" * 64, "test-model@2#abcdef012345") is None
    await cache.invalidate(sessions, check_id="n" * 32)
    assert await cache.lookup_key(sessions, "sha256", "7" * 64, REF) is None
    await cache.invalidate(sessions, kind="url", value="u")
    assert await cache.lookup_key(sessions, "url", "u", REF) is None


async def test_band_indexes_cover_the_candidate_query(database_url: str) -> None:
    # Migration 0006 widens the band indexes and its downgrade restores the two-column ones.
    async def band_columns() -> dict[str, list[str]]:
        engine = create_engine(database_url)
        async with engine.connect() as conn:
            indexes = await conn.run_sync(lambda c: inspect(c).get_indexes("frame_hashes"))
        await engine.dispose()
        return {i["name"]: i["column_names"] for i in indexes if i["name"].startswith("ix_frame_hashes_b")}

    migrate.upgrade(database_url)
    assert (await band_columns())["ix_frame_hashes_b2"] == ["model_ref", "b2", "expires_at", "check_id"]
    migrate.downgrade(database_url, "0005")
    assert (await band_columns()) == {f"ix_frame_hashes_b{i}": ["model_ref", f"b{i}"] for i in range(4)}
    migrate.upgrade(database_url)
    assert len((await band_columns())["ix_frame_hashes_b0"]) == 4


def _moved(h: int, bits: int) -> int:
    # Flip the lowest ``bits`` bits: all in the first two 16-bit bands, so the last two still
    # seek the stored frame and only the Hamming confirmation decides.
    return h ^ ((1 << bits) - 1)


async def test_frames_confirm_at_the_hamming_limit_and_alignment(sessions) -> None:
    # Crafted hashes: each query frame is exactly k bits from a stored one. PostgreSQL counts the
    # bits in its statement, SQLite in numpy; both must draw the line at FRAME_MATCH_BITS.
    rng = np.random.default_rng(5)
    stored = [int(h) for h in rng.integers(0, 2**63, size=12)]
    await _cached_check(sessions, "s" * 32, "authentic", [(i, i / 2, h) for i, h in enumerate(stored)])
    limit = cache.FRAME_MATCH_BITS
    hit = await cache.lookup_frames(sessions, [_moved(h, limit) for h in stored], REF)
    assert hit is not None and hit.check_id == "s" * 32 and hit.matched_frames == 12
    assert await cache.lookup_frames(sessions, [_moved(h, limit + 1) for h in stored], REF) is None
    # A copy starting 4 frames in, with every third frame one sample late, still aligns.
    trimmed = [stored[i + 1] if i % 3 == 0 and i + 1 < 12 else stored[i] for i in range(4, 12)]
    hit = await cache.lookup_frames(sessions, [_moved(h, 2) for h in trimmed], REF)
    assert hit is not None and hit.matched_frames == 8 and hit.query_frames == 8
    # Two matching frames among ten unrelated ones are too few.
    rest = [int(h) for h in rng.integers(0, 2**63, size=10)]
    assert await cache.lookup_frames(sessions, stored[:2] + rest, REF) is None


async def test_the_closest_of_several_cached_copies_wins(sessions) -> None:
    rng = np.random.default_rng(6)
    base = [int(h) for h in rng.integers(0, 2**63, size=10)]
    far = [_moved(h, 6) if i < 7 else int(rng.integers(0, 2**63)) for i, h in enumerate(base)]
    await _cached_check(sessions, "f" * 32, "authentic", [(i, i / 2, h) for i, h in enumerate(far)])
    await _cached_check(sessions, "c" * 32, "manipulated", [(i, i / 2, h) for i, h in enumerate(base)])
    hit = await cache.lookup_frames(sessions, base, REF)
    assert hit is not None and hit.check_id == "c" * 32 and hit.matched_frames == 10
    assert hit.verdict["label"] == "manipulated"
