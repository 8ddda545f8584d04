"""Waiting for the in-memory near-duplicate index (server/db/frame_mirror.py) to load."""

from __future__ import annotations

import asyncio

from server.db.frame_mirror import FrameMirror


async def wait_ready(mirror: FrameMirror, timeout: float = 30.0) -> FrameMirror:
    async with asyncio.timeout(timeout):
        while not mirror.ready:
            assert mirror.disabled is None, mirror.disabled
            await asyncio.sleep(0.01)
    return mirror
