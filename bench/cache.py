"""Cache look-up latency with 100k cached verdicts, through the HTTP API on loopback.

Fills a database (SQLite by default, or --database-url postgresql+asyncpg://…) with N cached
verdicts, each with a URL key and 12 frame hashes (random, so near-duplicate candidates come
only from real band collisions), starts the app, then sends URL look-ups
(GET /v1/verdicts?url=) and near-duplicate look-ups (POST /v1/verdicts/lookup with 12 hashes
of a cached video, 3 bits flipped per hash) at a fixed open-loop rate and prints p50/p99.
Targets: p99 ≤ 10 ms (URL) and ≤ 25 ms (near-duplicate) at ≥ 500 requests/s.

    python bench/cache.py [--verdicts 100000] [--rate 500] [--seconds 10] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
from sqlalchemy import insert

from server.db.cache import model_ref
from server.db.engine import create_engine
from server.db.migrate import upgrade
from server.db.models import CacheKey, Check, FrameHash, Verdict
from server.settings import Settings
from server.vision.checkpoint import load_card
from server.vision.phash import bands, to_hex, to_signed

PORT = 8932
FRAMES = 12


async def fill(url: str, ref: str, card, n: int, rng: random.Random) -> list[list[int]]:
    engine = create_engine(url)
    now = datetime.now(UTC)
    later = now + timedelta(days=30)
    samples: list[list[int]] = []
    async with engine.begin() as conn:
        for start in range(0, n, 5000):
            ids = [f"{i:032x}" for i in range(start, min(n, start + 5000))]
            await conn.execute(
                insert(Check),
                [
                    dict(
                        id=c,
                        status="done",
                        source="url",
                        source_url=f"https://v.example/{c}.mp4",
                        model_id=card.id,
                        model_version=card.version,
                        frames_analyzed=FRAMES,
                        created_at=now,
                    )
                    for c in ids
                ],
            )
            await conn.execute(
                insert(Verdict),
                [
                    dict(
                        check_id=c,
                        label="authentic",
                        score=0.1,
                        confidence=1.0,
                        model_id=card.id,
                        model_version=card.version,
                        payload={"label": "authentic", "score": 0.1},
                        created_at=now,
                    )
                    for c in ids
                ],
            )
            await conn.execute(
                insert(CacheKey),
                [
                    dict(
                        kind="url",
                        value=f"https://v.example/{c}.mp4",
                        model_ref=ref,
                        check_id=c,
                        created_at=now,
                        expires_at=later,
                    )
                    for c in ids
                ],
            )
            rows = []
            for c in ids:
                hashes = [rng.getrandbits(64) for _ in range(FRAMES)]
                if len(samples) < 200:
                    samples.append(hashes)
                for seq, h in enumerate(hashes):
                    b = bands(h)
                    rows.append(
                        dict(
                            check_id=c,
                            model_ref=ref,
                            seq=seq,
                            t=seq / 2,
                            phash=to_signed(h),
                            b0=b[0],
                            b1=b[1],
                            b2=b[2],
                            b3=b[3],
                            expires_at=later,
                        )
                    )
            await conn.execute(insert(FrameHash), rows)
    await engine.dispose()
    return samples


def flip(h: int, bits: int, rng: random.Random) -> int:
    for b in rng.sample(range(64), bits):
        h ^= 1 << b
    return h


async def load(kind: str, rate: int, seconds: float, n: int, samples, rng) -> list[float]:
    lat: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:

        async def one() -> None:
            t0 = time.perf_counter()
            if kind == "url":
                url = f"https://v.example/{rng.randrange(n):032x}.mp4?utm_source=x"
                async with http.get(f"http://127.0.0.1:{PORT}/v1/verdicts", params={"url": url}) as r:
                    await r.read()
                    assert r.status == 200, r.status
            else:
                hashes = [to_hex(flip(h, 3, rng)) for h in rng.choice(samples)]
                async with http.post(
                    f"http://127.0.0.1:{PORT}/v1/verdicts/lookup", json={"frame_hashes": hashes}
                ) as r:
                    await r.read()
                    assert r.status == 200, r.status
            lat.append((time.perf_counter() - t0) * 1000)

        tasks = []
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one()))
        await asyncio.gather(*tasks)
        achieved = len(tasks) / (time.perf_counter() - start)
    print(
        f"  {kind:>14}: {len(lat)} requests at {achieved:.0f}/s offered {rate}/s — "
        f"p50 {statistics.median(lat):.1f} ms, p99 {statistics.quantiles(lat, n=100)[98]:.1f} ms"
    )
    return lat


async def main_async(args) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="unmask-cache-bench-"))
    settings = Settings(
        data_dir=data_dir,
        model_dir=args.model_dir,
        port=PORT,
        device="cpu",
        database_url=args.database_url or "",
    )
    url = settings.resolved_database_url
    upgrade(url)
    card = load_card(args.model_dir)
    rng = random.Random(0)
    t0 = time.perf_counter()
    samples = await fill(url, model_ref(card), card, args.verdicts, rng)
    print(
        f"filled {args.verdicts} verdicts ({args.verdicts * FRAMES} frame hashes) in {time.perf_counter() - t0:.0f} s"
    )
    # The server runs in its own process (as in production), so the load generator's CPU does
    # not share the server's event loop.
    env = {
        **os.environ,
        "UNMASK_DATA_DIR": str(data_dir),
        "UNMASK_MODEL_DIR": str(args.model_dir),
        "UNMASK_PORT": str(PORT),
        "UNMASK_DATABASE_URL": url,
        "UNMASK_LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--no-worker", "--no-migrate"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            try:
                async with http.get(f"http://127.0.0.1:{PORT}/readyz") as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    try:
        await load("url", args.rate, 2, args.verdicts, samples, rng)  # warm-up
        await load("url", args.rate, args.seconds, args.verdicts, samples, rng)
        await load("near-duplicate", args.rate, args.seconds, args.verdicts, samples, rng)
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--verdicts", type=int, default=100_000)
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--database-url", default="")
    ap.add_argument("--model-dir", type=Path, default=Path("models/default"))
    args = ap.parse_args()
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
        f"database {args.database_url or 'SQLite'}"
    )
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
