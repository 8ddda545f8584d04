"""Schemathesis against a live server: generated requests, every response checked against /openapi.json.

Bounded (a fixed number of examples per operation, a fixed seed) so CI stays fast; uploads are
left out (their bodies are videos and frames, which generated data cannot make meaningful).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

ST = Path(sys.executable).with_name("st")
MAX_EXAMPLES = 20
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
    )
)
UPLOAD_OPERATIONS = ("createCheck", "postFrames")
RUN_TIMEOUT_S = 90


@pytest.mark.slow
async def test_schemathesis_finds_no_failure(aiohttp_server, settings, request, tmp_path: Path) -> None:
    if request.node.callspec.params.get("database_url") == "postgres":
        pytest.skip("one database is enough for the fuzzing pass")
    if not ST.exists():
        pytest.skip("schemathesis is not installed (dev extra)")
    from server.app import create_app
    from server.keys import sessions_key
    from tests.helpers.verdicts import make_check

    server = await aiohttp_server(create_app(settings))
    # A real finished check, so operations on a check id reach past the 404.
    check_id = await make_check(server.app[sessions_key], "tampered", thumbs=False)
    config = tmp_path / "schemathesis.toml"
    config.write_text(f'[parameters]\n"path.id" = "{check_id}"\n"path.check_id" = "{check_id}"\n')
    args = [
        "--config-file",
        str(config),
        "run",
        str(server.make_url("/openapi.json")),
        "--checks",
        CHECKS,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        "1",
        "--workers",
        "1",
        "--phases",
        "examples,coverage,fuzzing",
        "--request-timeout",
        "10",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
        "--no-color",
    ]
    for op in UPLOAD_OPERATIONS:
        args += ["--exclude-operation-id", op]
    env = {**os.environ, "SCHEMATHESIS_TELEMETRY": "false", "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}
    proc = await asyncio.create_subprocess_exec(
        str(ST), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]
    assert "passed" in text.lower(), text[-2000:]
