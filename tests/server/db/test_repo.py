"""The service's queries against real SQLite and PostgreSQL."""

from __future__ import annotations

from server.db import repo
from server.db.engine import create_engine, session_factory
from server.db.models import CheckStatus


async def test_check_lifecycle_frames_and_verdict(migrated_url: str) -> None:
    engine = create_engine(migrated_url)
    sessions = session_factory(engine)
    try:
        await repo.create_check(
            sessions, id="a" * 32, source="upload", model_id="m", model_version="1", owner="me"
        )
        written = await repo.add_frames(
            sessions,
            "a" * 32,
            [{"index": i, "t": i / 2, "score": 0.1 * i, "boxes": [[1, 2, 3, 4]]} for i in range(3)],
        )
        assert written == 3
        await repo.finish_check(
            sessions, "a" * 32, {"label": "authentic", "score": 0.1, "model": {"id": "m", "version": "1"}}
        )
        check = await repo.get_check(sessions, "a" * 32, with_frames=True)
        assert check is not None
        assert check.status == CheckStatus.DONE
        assert check.frames_analyzed == 3
        assert [f.index for f in check.frames] == [0, 1, 2]
        assert check.frames[2].boxes == [[1, 2, 3, 4]]
        assert check.verdict is not None and check.verdict.payload["label"] == "authentic"
        assert [f.index for f in await repo.frames_after(sessions, "a" * 32, 0)] == [1, 2]
    finally:
        await engine.dispose()


async def test_fail_orphaned_touches_only_this_instances_active_checks(migrated_url: str) -> None:
    engine = create_engine(migrated_url)
    sessions = session_factory(engine)
    try:
        for cid, owner, status in [
            ("1" * 32, "me", "running"),
            ("2" * 32, "other", "running"),
            ("3" * 32, "me", "done"),
        ]:
            await repo.create_check(
                sessions, id=cid, source="upload", model_id="m", model_version="1", owner=owner, status=status
            )
        assert await repo.fail_orphaned(sessions, "me", "restarted") == 1
        failed = await repo.get_check(sessions, "1" * 32)
        assert failed is not None and failed.status == "failed" and failed.error_code == "interrupted"
        other = await repo.get_check(sessions, "2" * 32)
        assert other is not None and other.status == "running"
    finally:
        await engine.dispose()
