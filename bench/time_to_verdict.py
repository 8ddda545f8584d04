"""Time to verdict and to the first per-frame result for a 60 s 1280x720 H.264 upload.

Starts the real app (embedded SQLite, no worker) on a loopback port, streams the file to
POST /v1/checks in chunks, follows GET /v1/checks/{id}/events until the verdict, and prints
client-side times from the first byte sent, beside the server's own timings. Runs once with
early verdicts (the default) and once with full=1.

    python bench/time_to_verdict.py [--model-dir models/default] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
from aiohttp import web

from bench.media import bench_video
from server.app import create_app
from server.db.migrate import upgrade
from server.settings import Settings

PORT = 8931


async def run(path: Path, model_dir: Path, full: bool) -> dict:
    data_dir = Path(tempfile.mkdtemp(prefix="unmask-bench-"))
    # No purification (the measure): suspicious frames are flagged, not purified, so the
    # verdict does not wait for a worker.
    settings = Settings(data_dir=data_dir, model_dir=model_dir, port=PORT, device="cpu", purify=False)
    upgrade(settings.resolved_database_url)
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", PORT).start()
    try:

        async def body():
            with path.open("rb") as f:
                while chunk := f.read(256 * 1024):
                    yield chunk

        form = aiohttp.FormData()
        form.add_field("video", body(), filename=path.name, content_type="video/mp4")
        async with aiohttp.ClientSession() as http:
            t0 = time.perf_counter()
            url = f"http://127.0.0.1:{PORT}/v1/checks" + ("?full=1" if full else "")
            async with http.post(url, data=form) as resp:
                created = await resp.json()
            t_upload = time.perf_counter() - t0
            first_frame_client = None
            verdict = None
            async with http.get(f"http://127.0.0.1:{PORT}/v1/checks/{created['id']}/events") as events:
                async for raw in events.content:
                    line = raw.decode().strip()
                    if line.startswith("event: frame") and first_frame_client is None:
                        first_frame_client = time.perf_counter() - t0
                    if line.startswith("data:") and verdict is None and '"label"' in line:
                        verdict = json.loads(line[5:])
                        break
            t_verdict = time.perf_counter() - t0
    finally:
        await runner.cleanup()
    return {
        "upload_s": t_upload,
        "first_frame_seen_s": first_frame_client,
        "verdict_s": t_verdict,
        "server": verdict["timings"],
        "frames": verdict["frames_analyzed"],
        "label": verdict["label"],
        "early_stop": verdict.get("early_stop"),
        "suspicious": verdict.get("tamper", {}).get("suspicious_frames"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models/default"))
    parser.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args()
    path = bench_video(args.seconds)
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
        f"{path.name} ({path.stat().st_size / 1e6:.1f} MB)"
    )
    for full in (False, True):
        r = asyncio.run(run(path, args.model_dir, full))
        s = r["server"]
        print(
            f"  {'full video ' if full else 'early verdict'}: verdict {r['verdict_s']:.2f} s after the first byte "
            f"(upload took {r['upload_s']:.2f} s); server: first frame {s['first_frame']:.2f} s after the upload "
            f"started, total {s['total']:.2f} s; {r['frames']} frames ({r['suspicious']} suspicious), {r['label']}"
            + (f", stopped at {r['early_stop']['t']} s" if r["early_stop"] else "")
        )


if __name__ == "__main__":
    main()
