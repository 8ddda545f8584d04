"""Mixed load on loopback: cache look-ups at a fixed rate while fresh checks run concurrently.

Fills a database (SQLite, or a fresh one on the local PostgreSQL) with N cached verdicts
(bench/cache.py's filler), creates API tokens, starts the server in its own process, then for
``--seconds``:

* look-ups (``GET /v1/verdicts?url=``, a random cached URL each) offered at ``--rate``/s by
  ``h2load`` (nghttp2-client, C): ``--clients`` HTTP/1.1 connections each sending
  ``rate/clients`` requests per second, so the generator costs little of the server's CPU;
  per-request latencies come from its log (latency counts from when h2load sent the request, so
  a client that fell behind its schedule shows as a lower achieved rate, not as latency). The
  look-up token has the highest rate limit a token can have (10^6/min, burst = one second).
* ``--checks`` clients uploading fresh (distinct) videos back to back under ``--check-tokens``
  other tokens with the server's default limits (120 requests/min, burst 30, 8 running checks
  per token; the rest is answered 429 + Retry-After), each following its check's SSE stream to
  the verdict.

Reports offered vs achieved look-ups/s, p50/p99, statuses (429s included) per kind, checks
finished, the CPU seconds used by the server and by the generator, and the peak resident memory
of the server's process tree (server, decoder zygote and decoders), sampled from /proc. With
``--capacity-seconds`` it first measures the server's closed-loop look-up capacity (h2load
without a rate, no checks running).

    python bench/load.py [--rate 1000] [--checks 20] [--check-tokens 1] [--seconds 60]
        [--capacity-seconds 10] [--database sqlite|postgres] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

from bench.cache import fill
from server.auth import create_token
from server.db.cache import model_ref
from server.db.engine import create_engine, session_factory
from server.db.migrate import upgrade
from server.media.encode import write_video
from server.settings import Settings
from server.vision.checkpoint import load_card
from tests.helpers.videos import face_frames


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A free port of its own: other benchmarks on the same machine must not answer its requests.
PORT = _free_port()
BASE = f"http://127.0.0.1:{PORT}"

# /proc is sampled this often for the peak memory of the server's process tree.
MEMORY_SAMPLE_S = 0.2
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# --database postgres: a fresh database on the local PostgreSQL, dropped at the end.
PG_ADMIN_DSN = os.environ.get("UNMASK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_DATABASE = f"unmask_load_{os.getpid()}"


def _proc_table() -> dict[int, tuple[int, int, float]]:
    """pid → (parent, resident bytes, CPU seconds) for every process now."""
    out: dict[int, tuple[int, int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
        out[int(entry)] = (int(fields[1]), int(fields[21]) * PAGE, cpu)
    return out


def _tree(root: int) -> tuple[int, float]:
    """Resident bytes and CPU seconds of ``root`` and all its live descendants, now."""
    table = _proc_table()
    children: dict[int, list[int]] = collections.defaultdict(list)
    for pid, (parent, _, _) in table.items():
        children[parent].append(pid)
    rss, cpu, todo = 0, 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            rss += table[pid][1]
            cpu += table[pid][2]
        todo.extend(children.get(pid, []))
    return rss, cpu


async def _watch_memory(pid: int, stop: asyncio.Event, peak: list[int]) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], _tree(pid)[0])
        await asyncio.sleep(MEMORY_SAMPLE_S)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def _h2load(
    token: str, urls: Path, *, clients: int, rate: int | None, seconds: float, log: Path
) -> dict:
    """Run h2load against the look-up endpoint; its per-request log → rate, latency, statuses."""
    cmd = ["h2load", "--h1", "-t", "1", "-c", str(clients), "-D", str(int(seconds))]
    cmd += ["-H", f"Authorization: Bearer {token}", "-i", str(urls), "--log-file", str(log)]
    if rate is not None:
        cmd += ["--rps", f"{rate / clients:g}"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    stdout, _ = await proc.communicate()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"h2load failed ({proc.returncode}): {stdout.decode()[-2000:]}")
    statuses: collections.Counter[str] = collections.Counter()
    latencies: list[float] = []
    starts: list[int] = []
    for line in log.read_text().splitlines():
        start_us, status, took_us = line.split("\t")[:3]
        statuses[status] += 1
        starts.append(int(start_us))
        latencies.append(int(took_us) / 1000)
    errored = [ln for ln in stdout.decode().splitlines() if ln.startswith("requests:")]
    span = (max(starts) - min(starts)) / 1e6 if len(starts) > 1 else seconds
    return {
        "offered_per_s": rate,
        "clients": clients,
        "achieved_per_s": round(len(starts) / max(span, 1e-9), 1),
        "requests": len(starts),
        "p50_ms": round(statistics.median(latencies), 2) if latencies else None,
        "p99_ms": round(_percentile(latencies, 0.99), 2) if latencies else None,
        "max_ms": round(max(latencies), 2) if latencies else None,
        "statuses": dict(statuses),
        "h2load": errored[0].strip() if errored else None,
        "generator_cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2),
    }


async def _fresh_checks(http, tokens: list[str], video: bytes, clients: int, until: float, out: dict) -> None:
    """``clients`` loops (client k uses token k mod len(tokens)): upload a distinct video, follow
    its events to the end, again."""
    statuses: collections.Counter[str] = collections.Counter()
    latencies: list[float] = []
    retry_after: list[float] = []

    async def client(k: int) -> None:
        headers = {"Authorization": f"Bearer {tokens[k % len(tokens)]}"}
        i = 0
        while time.monotonic() < until:
            i += 1
            # A trailing "free" box keeps the MP4 valid and makes every upload a cache miss.
            data = video + (16).to_bytes(4, "big") + b"free" + k.to_bytes(4, "big") + i.to_bytes(4, "big")
            form = aiohttp.FormData()
            form.add_field("video", data, filename="v.mp4", content_type="video/mp4")
            t0 = time.perf_counter()
            try:
                async with http.post(f"{BASE}/v1/checks", data=form, headers=headers) as r:
                    body = await r.json()
                    statuses[str(r.status)] += 1
                    wait = float(r.headers.get("Retry-After", "1"))
                if r.status == 429:
                    retry_after.append(wait)
                    await asyncio.sleep(wait)
                    continue
                if r.status != 202:
                    continue
                end = "none"
                async with http.get(f"{BASE}/v1/checks/{body['id']}/events", headers=headers) as r:
                    async for line in r.content:
                        if line.startswith(b"event: verdict"):
                            end = "done"
                        elif line.startswith(b"event: error"):
                            end = "failed"
                        if end != "none":
                            break
                statuses[end] += 1
                if end == "none":
                    print(f"stream of {body['id']} ended without a verdict or error", file=sys.stderr)
                if end == "done":
                    latencies.append(time.perf_counter() - t0)
            except aiohttp.ClientError as exc:
                statuses[type(exc).__name__] += 1

    await asyncio.gather(*(client(k) for k in range(clients)))
    out["checks"] = {
        "clients": clients,
        "tokens": len(tokens),
        "statuses": dict(statuses),
        "finished": len(latencies),
        "retry_after_s": sorted(set(retry_after)),
        "p50_s": round(statistics.median(latencies), 2) if latencies else None,
        "max_s": round(max(latencies), 2) if latencies else None,
    }


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _db_cpu(args) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend serving the bench database ({} on SQLite)."""
    if args.database != "postgres":
        return {}
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", PG_DATABASE)
    finally:
        await conn.close()
    table = _proc_table()
    return {r["pid"]: table[r["pid"]][2] for r in rows if r["pid"] in table}


def _db_cpu_used(before: dict[int, float], after: dict[int, float]) -> float | None:
    if not after:
        return None
    return round(sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items()), 2)


async def _prepare(args, data_dir: Path) -> tuple[str, dict[str, Any], bytes]:
    settings = Settings(data_dir=data_dir, model_dir=args.model_dir, port=PORT, device="cpu")
    url = settings.resolved_database_url
    if args.database == "postgres":
        await _pg_admin(f'CREATE DATABASE "{PG_DATABASE}"')
        url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{PG_DATABASE}"
    await asyncio.to_thread(upgrade, url)
    card = load_card(args.model_dir)
    await fill(url, model_ref(card), card, args.verdicts, random.Random(0))
    engine = create_engine(url)
    sessions = session_factory(engine)
    tokens = {
        # Look-ups are not what the limits are measured on here: the highest rate a token can have.
        "lookups": (await create_token(sessions, "bench-lookups", rate_per_minute=1_000_000))[0],
        # The server's default limits (rate, running checks) apply to each of these.
        "checks": [(await create_token(sessions, f"bench-checks-{i}"))[0] for i in range(args.check_tokens)],
    }
    await engine.dispose()
    video = write_video(face_frames(2.0, size=(320, 240)), data_dir / "face.mp4").read_bytes()
    return url, tokens, video


def _errors(log: Path) -> dict:
    """The server's error lines: how many, and the distinct last lines of their tracebacks."""
    reasons: collections.Counter[str] = collections.Counter()
    for line in log.read_text().splitlines():
        if '"level": "error"' in line:
            entry = json.loads(line)
            tail = [ln for ln in entry.get("exc", "").splitlines() if ln and not ln.startswith(("[", "("))]
            reasons[(tail[-1] if tail else entry["msg"])[:200]] += 1
    return {"count": sum(reasons.values()), "reasons": dict(reasons)}


async def main_async(args) -> dict:
    if shutil.which("h2load") is None:
        sys.exit("bench/load.py needs h2load: apt-get install -y nghttp2-client")
    data_dir = Path(tempfile.mkdtemp(prefix="unmask-load-bench-"))
    try:
        return await _run(args, data_dir)
    finally:
        if args.keep:
            print(f"kept {data_dir}", file=sys.stderr)
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
        if args.database == "postgres":
            await _pg_admin(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')


async def _run(args, data_dir: Path) -> dict:
    url, tokens, video = await _prepare(args, data_dir)
    rng = random.Random(1)
    urls = data_dir / "urls.txt"
    urls.write_text(
        "".join(
            f"{BASE}/v1/verdicts?url=https%3A%2F%2Fv.example%2F{rng.randrange(args.verdicts):032x}.mp4\n"
            for _ in range(20_000)
        )
    )
    env = {
        **os.environ,
        "UNMASK_DATA_DIR": str(data_dir),
        "UNMASK_MODEL_DIR": str(args.model_dir),
        "UNMASK_PORT": str(PORT),
        "UNMASK_DATABASE_URL": url,
        "UNMASK_LOG_LEVEL": "WARNING",
        # No worker runs (--no-worker): a check with a frame over the tamper threshold would wait
        # for one. Purification is a worker's CPU, not this server's; flagged frames are counted.
        "UNMASK_PURIFY": "false",
        "UNMASK_RATE_BURST": str(max(30, args.rate)),  # a second of look-ups may arrive at once
    }
    server_log = (data_dir / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--no-worker", "--no-migrate"],
        env=env,
        stdout=server_log,
        stderr=subprocess.STDOUT,
    )
    out: dict = {}
    try:
        connector = aiohttp.TCPConnector(limit=256)
        async with aiohttp.ClientSession(connector=connector) as http:
            for _ in range(300):
                try:
                    async with http.get(f"{BASE}/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
            idle, _ = _tree(server.pid)
            if args.capacity_seconds:
                cpu0, db0 = _tree(server.pid)[1], await _db_cpu(args)
                out["capacity"] = await _h2load(
                    tokens["lookups"],
                    urls,
                    clients=args.capacity_clients,
                    rate=None,
                    seconds=args.capacity_seconds,
                    log=data_dir / "capacity.log",
                )
                out["capacity"]["server_cpu_s"] = round(_tree(server.pid)[1] - cpu0, 2)
                out["capacity"]["database_cpu_s"] = _db_cpu_used(db0, await _db_cpu(args))
            stop, peak = asyncio.Event(), [idle]
            watcher = asyncio.ensure_future(_watch_memory(server.pid, stop, peak))
            cpu0, db0 = _tree(server.pid)[1], await _db_cpu(args)
            until = time.monotonic() + args.seconds
            lookups, _ = await asyncio.gather(
                _h2load(
                    tokens["lookups"],
                    urls,
                    clients=args.clients,
                    rate=args.rate,
                    seconds=args.seconds,
                    log=data_dir / "lookups.log",
                ),
                _fresh_checks(http, tokens["checks"], video, args.checks, until, out),
            )
            out["lookups"] = lookups
            out["server_cpu_s"] = round(_tree(server.pid)[1] - cpu0, 2)
            out["database_cpu_s"] = _db_cpu_used(db0, await _db_cpu(args))
            stop.set()
            await watcher
            out["memory"] = {"idle_mb": round(idle / 2**20), "peak_mb": round(peak[0] / 2**20)}
    finally:
        server.terminate()
        server.wait(30)
        server_log.close()
        out["server_errors"] = _errors(data_dir / "server.log")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=1000, help="look-ups offered per second")
    ap.add_argument("--clients", type=int, default=50, help="h2load connections sharing the rate")
    ap.add_argument("--checks", type=int, default=20, help="concurrent fresh-check clients")
    ap.add_argument("--check-tokens", type=int, default=1, help="tokens the check clients share")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--capacity-seconds", type=float, default=0, help="first: closed-loop look-ups alone")
    ap.add_argument("--capacity-clients", type=int, default=16)
    ap.add_argument("--verdicts", type=int, default=10_000)
    ap.add_argument("--model-dir", type=Path, default=Path("models/default"))
    ap.add_argument(
        "--database", choices=("sqlite", "postgres"), default="sqlite", help="postgres: 127.0.0.1:5432"
    )
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the data folder (database, server log)")
    args = ap.parse_args()
    header = {
        "when": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "cores": os.cpu_count(),
        "load_average_before": [round(x, 1) for x in os.getloadavg()],
        "seconds": args.seconds,
        "database": args.database,
    }
    out = {**header, **asyncio.run(main_async(args))}
    out["load_average_after"] = [round(x, 1) for x in os.getloadavg()]
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
