"""Cache look-up latency with 100k cached verdicts, through the HTTP API on loopback.

Fills a database (SQLite by default, or --database-url postgresql+asyncpg://…) with N cached
verdicts, each with a URL key and 12 frame hashes (random, so near-duplicate candidates come
only from real band collisions), starts the server in its own process, then for each phase
sends requests from a third process at a fixed open-loop rate and prints the achieved rate,
p50/p99 latency and the server process's CPU time per request:

    url                  GET /v1/verdicts?url= of a cached video (uniform over all N)
    near-duplicate       POST /v1/verdicts/lookup with a cached video's 12 hashes, 3 bits flipped each
    url-hot              as url, but 90 % of look-ups go to 1,000 videos (the in-process hot-key cache)
    url-miss, near-duplicate-miss   look-ups that find nothing (404)

Request i is due at start + i/rate and its latency is measured from that due time, so a server
that falls behind shows its queueing (no coordinated omission). Targets (issue 6): p99 ≤ 10 ms
(URL) and ≤ 25 ms (near-duplicate) at ≥ 500 requests/s.

    python bench/cache.py [--verdicts 100000] [--rate 500] [--seconds 10] [--database-url URL]
                          [--phases url,near-duplicate] [--data-dir DIR (keep and reuse the fill)]
                          [--sequential N (N look-ups of each kind one by one in-process first)]
                          [--index memory|database|both (where near-duplicates are looked up)]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert, make_url, text

from server.db import cache
from server.db.cache import model_ref
from server.db.engine import create_engine, session_factory
from server.db.migrate import upgrade
from server.db.models import CacheKey, Check, FrameHash, Verdict
from server.settings import Settings
from server.vision.checkpoint import load_card
from server.vision.phash import bands, to_hex, to_signed

PORT = 8932
FRAMES = 12
# Keep-alive connections the load generator sends on; a request due while all are busy waits
# (and that wait is part of its latency).
CONNECTIONS = 32
# The hot set of the url-hot phase.
HOT = 1000
# Requests slower than this are counted per second of their phase (a burst at the start, a stall
# in the middle and a steady overload look different).
SLOW_MS = 25
PHASES = ("url", "near-duplicate", "url-hot", "url-miss", "near-duplicate-miss")


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


def requests_for(kind: str, count: int, n: int, samples, rng: random.Random) -> list[bytes]:
    """Raw HTTP/1.1 keep-alive requests, built before the clock starts (the generator stays cheap)."""
    out = []
    for _ in range(count):
        if kind.startswith("url"):
            # url: uniform over all cached videos; url-hot: 90 % of look-ups go to 1,000 videos
            # (a viral few), the rest uniform; url-miss: never cached.
            i = rng.randrange(HOT if kind == "url-hot" and rng.random() < 0.9 else n)
            name = f"{i:032x}" if kind != "url-miss" else f"missing-{rng.getrandbits(64):016x}"
            url = quote(f"https://v.example/{name}.mp4?utm_source=x", safe="")
            out.append(f"GET /v1/verdicts?url={url} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        else:
            # near-duplicate: a cached video's hashes, 3 bits flipped in each; near-duplicate-miss:
            # hashes of no cached video.
            if kind == "near-duplicate":
                hashes = [flip(h, 3, rng) for h in rng.choice(samples)]
            else:
                hashes = [rng.getrandbits(64) for _ in range(FRAMES)]
            body = json.dumps({"frame_hashes": [to_hex(h) for h in hashes]})
            out.append(
                (
                    "POST /v1/verdicts/lookup HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}"
                ).encode()
            )
    return out


async def _response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        int(v) for k, _, v in (h.partition(":") for h in lines[1:]) if k.lower() == "content-length"
    )
    await reader.readexactly(length)
    return int(lines[0].split()[1])


async def open_loop(
    port: int, rate: int, requests: list[bytes]
) -> tuple[list[float], Counter, float, dict[int, int]]:
    """Send ``requests`` at a fixed rate whatever the server does (open loop).

    Request i is due at start + i/rate; its latency runs from that due time to the end of its
    response, so time spent waiting for a free connection or behind a slow server is counted
    (no coordinated omission). The connections are opened before the clock starts.
    """
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
    lat: list[float] = []
    slow: Counter[int] = Counter()
    statuses: Counter[int] = Counter()

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (item := await queue.get()) is not None:
            due, raw = item
            writer.write(raw)
            statuses[await _response(reader)] += 1
            lat.append((time.perf_counter() - due) * 1000)
            if lat[-1] > SLOW_MS:
                slow[int(due - start)] += 1
        writer.close()

    # The keep-alive connections are open before the clock starts: a client such as the
    # extension connects once, and 32 connects at the first due time queued ~90 requests of a
    # phase's first second behind them (p99 30 ms where the rest of the phase stayed under 25).
    opened = [await asyncio.open_connection("127.0.0.1", port) for _ in range(CONNECTIONS)]
    workers = [asyncio.create_task(connection(r, w)) for r, w in opened]
    start = time.perf_counter() + 0.05
    for i, raw in enumerate(requests):
        due = start + i / rate
        if (delay := due - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((due, raw))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return lat, statuses, time.perf_counter() - start, dict(sorted(slow.items()))


def measure(kind: str, port: int, rate: int, requests: list[bytes]) -> dict:
    """One open-loop run in a process of its own (not the server's, not the filler's)."""
    cpu = time.process_time()
    lat, statuses, wall, slow = asyncio.run(open_loop(port, rate, requests))
    cpu = time.process_time() - cpu
    q = statistics.quantiles(lat, n=100)
    return {
        "kind": kind,
        "requests": len(lat),
        "offered": rate,
        "achieved": len(lat) / wall,
        "p50": statistics.median(lat),
        "p99": q[98],
        "max": max(lat),
        "statuses": dict(statuses),
        "generator_cpu_ms": cpu * 1000 / max(1, len(lat)),
        "load": os.getloadavg(),
        "slow": slow,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backend_cpu(database: str | None) -> dict[int, float]:
    """CPU time of each PostgreSQL backend serving ``database`` (their titles name it)."""
    out: dict[int, float] = {}
    if not database:
        return out
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and f" {database} " in (proc / "cmdline").read_text():
                out[int(proc.name)] = cpu_seconds(int(proc.name))
        except OSError:  # the process ended meanwhile
            continue
    return out


def run_phase(
    kind: str, server: int, database: str | None, rate: int, seconds: float, n: int, samples, rng
) -> dict:
    requests = requests_for(kind, int(rate * seconds), n, samples, rng)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(os.getpid).result()  # the generator process is up before the clock starts
        cpu, pg = cpu_seconds(server), backend_cpu(database)
        r = pool.submit(measure, kind, PORT, rate, requests).result()
        r["server_cpu_ms"] = (cpu_seconds(server) - cpu) * 1000 / max(1, r["requests"])
        after = backend_cpu(database)
        # Backends alive at the end (those opened during the phase count in full; one that closed
        # during it is missed, so new_connections says how many there were).
        busy = sum(after[pid] - pg.get(pid, 0.0) for pid in after)
        r["postgres_cpu_ms"] = busy * 1000 / max(1, r["requests"])
        r["new_connections"] = len(after.keys() - pg.keys())
    print(
        f"  {kind:>14}: {r['requests']} requests, offered {r['offered']}/s, achieved {r['achieved']:.0f}/s — "
        f"p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, max {r['max']:.0f} ms; "
        f"CPU ms/request: server {r['server_cpu_ms']:.2f}, generator {r['generator_cpu_ms']:.2f}"
        + (
            f", PostgreSQL backends {r['postgres_cpu_ms']:.2f} ({r['new_connections']} new connections)"
            if database
            else ""
        )
        + "; "
        f"statuses {r['statuses']}; "
        f"over {SLOW_MS} ms by second of the phase {r['slow'] or '{}'}; "
        f"load {r['load'][0]:.1f}",
        flush=True,
    )
    return r


def filled(data_dir: Path, url: str, ref: str, n: int) -> list[list[int]] | None:
    marker = data_dir / "filled.json"
    if not marker.exists():
        return None
    info = json.loads(marker.read_text())
    if info["url"] != url or info["ref"] != ref or info["verdicts"] != n:
        # Filling again would collide with the earlier fill's check ids.
        raise SystemExit(
            f"{data_dir} holds {info['verdicts']} verdicts of {info['ref']} in {info['url']}, not {n} of "
            f"{ref} in {url}: pass an empty --data-dir (and a fresh database)"
        )
    return info["samples"]


async def analyze(url: str) -> None:
    # Planner statistics after the bulk load (autovacuum would gather them soon after; PostgreSQL
    # also needs the visibility map for index-only scans).
    engine = create_engine(url)
    if engine.dialect.name == "postgresql":
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM ANALYZE"))
    await engine.dispose()


async def prepare(args) -> tuple[Path, str, list[list[int]]]:
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="unmask-cache-bench-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        data_dir=data_dir,
        model_dir=args.model_dir,
        port=PORT,
        device="cpu",
        database_url=args.database_url or "",
    )
    url = settings.resolved_database_url
    card = load_card(args.model_dir)
    ref = model_ref(card)
    upgrade(url)
    samples = filled(data_dir, url, ref, args.verdicts)
    if samples is None:
        t0 = time.perf_counter()
        samples = await fill(url, ref, card, args.verdicts, random.Random(0))
        await analyze(url)
        (data_dir / "filled.json").write_text(
            json.dumps({"url": url, "ref": ref, "verdicts": args.verdicts, "samples": samples})
        )
        print(
            f"filled {args.verdicts} verdicts ({args.verdicts * FRAMES} frame hashes) "
            f"in {time.perf_counter() - t0:.0f} s"
        )
    else:
        print(f"reusing {args.verdicts} cached verdicts in {data_dir}")
    return data_dir, url, samples


async def sequential(url: str, ref: str, n: int, count: int, samples, rng: random.Random, index: str) -> None:
    """Look-ups one after another in this process, through the cache module (no HTTP, no queueing).

    CPU per look-up here is the cache code's own cost (SQLAlchemy, the driver, the confirmation);
    wall time adds the database's. Unlike the open-loop phases it hardly depends on what else runs
    on the machine, so it compares code changes on a loaded machine.
    """
    engine = create_engine(url)
    sessions = session_factory(engine)
    if index == "memory":
        t0 = time.perf_counter()
        mirror = await cache.start_mirror(sessions, ref, Settings().cache_index_max_rows)
        while not mirror.ready:
            await asyncio.sleep(0.05)
        print(
            f"  in-memory index of {mirror.status()['rows']} frame hashes loaded in {time.perf_counter() - t0:.1f} s"
        )
    parsed = make_url(url)
    database = parsed.database if parsed.get_backend_name() == "postgresql" else None
    cases = {
        "url": [("url", f"https://v.example/{rng.randrange(n):032x}.mp4") for _ in range(count)],
        "near-duplicate": [[flip(h, 3, rng) for h in rng.choice(samples)] for _ in range(count)],
        "near-duplicate-miss": [[rng.getrandbits(64) for _ in range(FRAMES)] for _ in range(count)],
    }

    async def one(kind: str, case) -> bool:
        if kind == "url":
            return await cache.lookup_key(sessions, case[0], case[1], ref) is not None
        return await cache.lookup_frames(sessions, case, ref) is not None

    for kind, items in cases.items():
        for case in items[:50]:  # warm-up: connections, prepared statements
            await one(kind, case)
        pg = backend_cpu(database)
        cpu, wall = time.process_time(), time.perf_counter()
        hits = [await one(kind, case) for case in items]
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        after = backend_cpu(database)
        pg_ms = sum(after[pid] - pg.get(pid, 0.0) for pid in after) * 1000 / count
        print(
            f"  {kind:>14}: {count} sequential look-ups in-process, {sum(hits)} hits — "
            f"CPU {cpu * 1000 / count:.3f} ms"
            + (f" (+ PostgreSQL backend {pg_ms:.3f} ms)" if database else "")
            + f", wall {wall * 1000 / count:.3f} ms per look-up; load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    await cache.stop_mirrors(sessions)
    await engine.dispose()


def wait_ready(index: str) -> None:
    """Until the server answers /readyz and, with the in-memory index, has loaded it."""
    t0 = time.perf_counter()
    for _ in range(3000):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/readyz", timeout=1) as r:
                mirrors = json.loads(r.read()).get("frame_index", {})
            if index == "database" or any(m["ready"] for m in mirrors.values()):
                rows = sum(m["rows"] for m in mirrors.values())
                print(
                    f"server ready in {time.perf_counter() - t0:.1f} s"
                    + (f", {rows} frame hashes in memory" if rows else "")
                )
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not become ready")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def serve_and_measure(args, data_dir: Path, url: str, samples, index: str) -> None:
    """Start the server with near-duplicate look-ups on ``index`` and run the phases against it."""
    # The server runs in its own process (as in production) and the load generator in another,
    # so neither shares the server's event loop.
    env = {
        **os.environ,
        "UNMASK_DATA_DIR": str(data_dir),
        "UNMASK_MODEL_DIR": str(args.model_dir),
        "UNMASK_PORT": str(PORT),
        "UNMASK_DATABASE_URL": url,
        "UNMASK_LOG_LEVEL": "WARNING",
        "OMP_NUM_THREADS": "1",
        **({"UNMASK_CACHE_INDEX_MAX_ROWS": "0"} if index == "database" else {}),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--no-worker", "--no-migrate"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        print(f"near-duplicate look-ups: {index} index")
        wait_ready(index)
        print(f"server RSS {rss_mb(server.pid):.0f} MB")
        rng = random.Random(1)
        parsed = make_url(url)
        database = parsed.database if parsed.get_backend_name() == "postgresql" else None
        phases = [k for k in args.phases.split(",") if k]
        # Warm-up, not part of the results: each pooled connection's first statements are
        # prepared and planned afresh (PostgreSQL plans a prepared statement five times before it
        # settles on a generic plan), which queued ~220 near-duplicate look-ups in a first second.
        print("warm-up:")
        for kind in ("url", "near-duplicate") if any(k.startswith("near") for k in phases) else ("url",):
            run_phase(kind, server.pid, database, args.rate, 2, args.verdicts, samples, rng)
        print("measured:")
        for kind in phases:
            run_phase(kind, server.pid, database, args.rate, args.seconds, args.verdicts, samples, rng)
    finally:
        server.terminate()
        server.wait(30)


def main_run(args) -> None:
    data_dir, url, samples = asyncio.run(prepare(args))
    if args.sequential:
        ref = json.loads((data_dir / "filled.json").read_text())["ref"]
        for index in ("database", "memory") if args.index == "both" else (args.index,):
            print(f"near-duplicate look-ups: {index} index")
            asyncio.run(
                sequential(url, ref, args.verdicts, args.sequential, samples, random.Random(2), index)
            )
        if not args.phases:
            return
    for index in ("database", "memory") if args.index == "both" else (args.index,):
        serve_and_measure(args, data_dir, url, samples, index)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--verdicts", type=int, default=100_000)
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--database-url", default="")
    ap.add_argument("--model-dir", type=Path, default=Path("models/default"))
    ap.add_argument("--phases", default=",".join(PHASES), help="comma-separated, from " + ", ".join(PHASES))
    ap.add_argument(
        "--sequential",
        type=int,
        default=0,
        metavar="N",
        help="first time N look-ups of each kind one after another in-process (CPU and wall per look-up); "
        "with --phases '' only these",
    )
    ap.add_argument(
        "--index",
        choices=("memory", "database", "both"),
        default="memory",
        help="near-duplicate look-ups from the server's in-memory index (the default) or the database "
        "(UNMASK_CACHE_INDEX_MAX_ROWS=0); both: one server after the other, database first",
    )
    ap.add_argument(
        "--data-dir", type=Path, help="keep the filled database here and reuse it on the next run"
    )
    args = ap.parse_args()
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load {load}, "
        f"database {args.database_url or 'SQLite'}, {CONNECTIONS} connections"
    )
    main_run(args)


if __name__ == "__main__":
    main()
