"""Mixed load on loopback: cache look-ups at a fixed rate while fresh checks run concurrently.

Fills a database with N cached verdicts (bench/cache.py's filler), starts the server in its own
process, then for ``--seconds``: URL look-ups (GET /v1/verdicts?url=) offered open-loop at
``--rate``/s, and ``--checks`` clients each uploading a fresh video (a distinct file each time)
and polling it to its end, back to back. Reports look-up p50/p99, status counts (429s
included) per kind, checks finished, and the peak memory of the server's process tree (server,
decoder zygote and decoders), sampled from /proc.

    python bench/load.py [--rate 1000] [--checks 20] [--seconds 60] [--verdicts 10000] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

from bench.cache import fill
from server.db.cache import model_ref
from server.db.migrate import upgrade
from server.media.encode import write_video
from server.settings import Settings
from server.vision.checkpoint import load_card
from tests.helpers.videos import face_frames

PORT = 8933

# /proc is sampled this often for the peak memory of the server's process tree.
MEMORY_SAMPLE_S = 0.2


def _tree_rss_bytes(root: int) -> int:
    """Resident memory of ``root`` and all its descendants, now."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children[int(fields[1])].append(int(entry))
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


async def _watch_memory(pid: int, stop: asyncio.Event, peak: list[int]) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], _tree_rss_bytes(pid))
        await asyncio.sleep(MEMORY_SAMPLE_S)


async def _lookups(http, rate: int, seconds: float, n: int, rng: random.Random, out: dict) -> None:
    lat: list[float] = []
    statuses: collections.Counter[int] = collections.Counter()

    async def one() -> None:
        url = f"https://v.example/{rng.randrange(n):032x}.mp4"
        t0 = time.perf_counter()
        try:
            async with http.get(f"http://127.0.0.1:{PORT}/v1/verdicts", params={"url": url}) as r:
                await r.read()
                statuses[r.status] += 1
        except aiohttp.ClientError as exc:
            statuses[type(exc).__name__] += 1  # type: ignore[index]
            return
        lat.append((time.perf_counter() - t0) * 1000)

    tasks = []
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one()))
    await asyncio.gather(*tasks)
    out["lookups"] = {
        "offered_per_s": rate,
        "achieved_per_s": round(len(tasks) / (time.perf_counter() - start), 1),
        "p50_ms": round(statistics.median(lat), 2) if lat else None,
        "p99_ms": round(statistics.quantiles(lat, n=100)[98], 2) if len(lat) > 1 else None,
        "statuses": dict(statuses),
    }


async def _fresh_checks(http, video: bytes, clients: int, until: float, out: dict) -> None:
    statuses: collections.Counter[str] = collections.Counter()
    latencies: list[float] = []

    async def client(k: int) -> None:
        i = 0
        while time.monotonic() < until:
            i += 1
            # A trailing "free" box keeps the MP4 valid and makes every upload a cache miss.
            data = video + (16).to_bytes(4, "big") + b"free" + k.to_bytes(4, "big") + i.to_bytes(4, "big")
            form = aiohttp.FormData()
            form.add_field("video", data, filename="v.mp4", content_type="video/mp4")
            t0 = time.perf_counter()
            try:
                async with http.post(f"http://127.0.0.1:{PORT}/v1/checks", data=form) as r:
                    body = await r.json()
                    statuses[str(r.status)] += 1
                if r.status == 429:
                    await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                    continue
                if r.status != 202:
                    continue
                while True:
                    async with http.get(f"http://127.0.0.1:{PORT}/v1/checks/{body['id']}") as r:
                        state = await r.json()
                    if state["status"] in ("done", "failed"):
                        statuses[state["status"]] += 1
                        latencies.append(time.perf_counter() - t0)
                        break
                    await asyncio.sleep(0.2)
            except aiohttp.ClientError as exc:
                statuses[type(exc).__name__] += 1

    await asyncio.gather(*(client(k) for k in range(clients)))
    out["checks"] = {
        "clients": clients,
        "statuses": dict(statuses),
        "finished": len(latencies),
        "p50_s": round(statistics.median(latencies), 2) if latencies else None,
        "max_s": round(max(latencies), 2) if latencies else None,
    }


async def main_async(args) -> dict:
    data_dir = Path(tempfile.mkdtemp(prefix="unmask-load-bench-"))
    settings = Settings(data_dir=data_dir, model_dir=args.model_dir, port=PORT, device="cpu")
    url = settings.resolved_database_url
    upgrade(url)
    card = load_card(args.model_dir)
    rng = random.Random(0)
    await fill(url, model_ref(card), card, args.verdicts, rng)
    video = write_video(face_frames(2.0, size=(320, 240)), data_dir / "face.mp4").read_bytes()
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
    out: dict = {}
    try:
        connector = aiohttp.TCPConnector(limit=256)
        async with aiohttp.ClientSession(connector=connector) as http:
            for _ in range(300):
                try:
                    async with http.get(f"http://127.0.0.1:{PORT}/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
            idle = _tree_rss_bytes(server.pid)
            stop, peak = asyncio.Event(), [idle]
            watcher = asyncio.ensure_future(_watch_memory(server.pid, stop, peak))
            until = time.monotonic() + args.seconds
            await asyncio.gather(
                _lookups(http, args.rate, args.seconds, args.verdicts, rng, out),
                _fresh_checks(http, video, args.checks, until, out),
            )
            stop.set()
            await watcher
            out["memory"] = {"idle_mb": round(idle / 2**20), "peak_mb": round(peak[0] / 2**20)}
    finally:
        server.terminate()
        server.wait(30)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--checks", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--verdicts", type=int, default=10_000)
    ap.add_argument("--model-dir", type=Path, default=Path("models/default"))
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    header = {
        "when": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "cores": os.cpu_count(),
        "load_average": round(os.getloadavg()[0], 1),
        "seconds": args.seconds,
    }
    out = {**header, **asyncio.run(main_async(args))}
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
