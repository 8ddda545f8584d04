"""``/metrics``: the names operators alert on exist, and they move when work is done."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from server.db.models import CheckStatus
from server.keys import executor_key, jobs_key
from server.metrics import UNMATCHED_ROUTE, AppCollector, Metrics

EXPECTED_NAMES = {
    "unmask_http_request_duration_seconds",
    "unmask_checks",
    "unmask_checks_started",
    "unmask_checks_finished",
    "unmask_frames_scored",
    "unmask_queue_depth",
    "unmask_queue_oldest_age_seconds",
    "unmask_cache_lookups",
    "unmask_purify_seconds",
    "unmask_purify_queue_depth",
    "unmask_purify_workers",
    "unmask_check_workers",
    "unmask_check_workers_busy",
    "unmask_model_info",
    "unmask_build_info",
    "process_cpu_seconds",
    "python_info",
}


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def _scrape(api) -> tuple[set[str], dict]:
    resp = await api.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    return {f.name for f in text_string_to_metric_families(text)}, _samples(text)


async def test_metrics_has_every_name_operators_use(api) -> None:
    names, samples = await _scrape(api)
    assert names >= EXPECTED_NAMES, EXPECTED_NAMES - names
    info = [k for k in samples if k[0] == "unmask_model_info"]
    assert info and dict(info[0][1])["id"] == "test-tiny"
    assert _value(samples, "unmask_check_workers") == 2


async def test_openmetrics_is_served_when_asked(api) -> None:
    resp = await api.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await resp.text()).rstrip().endswith("# EOF")


async def test_request_latency_is_labelled_by_route_template(api) -> None:
    for _ in range(3):
        await api.get("/healthz")
    await api.get("/v1/checks/" + "0" * 32)
    await api.get("/no/such/route/abc123")
    _, samples = await _scrape(api)
    count = "unmask_http_request_duration_seconds_count"
    assert _value(samples, count, method="GET", route="/healthz", status="200") == 3
    assert _value(samples, count, method="GET", route="/v1/checks/{id}", status="404") == 1
    assert _value(samples, count, method="GET", route=UNMATCHED_ROUTE, status="404") == 1
    assert not any("abc123" in str(k) or "0" * 32 in str(k) for k in samples)


def test_two_apps_in_one_process_have_separate_registries() -> None:
    a, b = Metrics(), Metrics()
    a.frames(5)
    assert a.registry.get_sample_value("unmask_frames_scored_total") == 5
    assert b.registry.get_sample_value("unmask_frames_scored_total") == 0


def test_counters_move_with_the_calls_the_job_manager_makes() -> None:
    m = Metrics()
    m.check_started("upload")
    m.check_finished("done", "authentic")
    m.check_finished("failed", "undecodable_media")
    m.frames(6)
    m.cache_lookup("sha256", hit=True)
    m.cache_lookup("frames", hit=False)
    m.cache_lookup("weird-kind", hit=False)
    m.purified(1.5)
    get = m.registry.get_sample_value
    assert get("unmask_checks_started_total", {"source": "upload"}) == 1
    assert get("unmask_checks_finished_total", {"status": "done", "label": "authentic"}) == 1
    assert get("unmask_checks_finished_total", {"status": "failed", "label": "undecodable_media"}) == 1
    assert get("unmask_frames_scored_total") == 6
    assert get("unmask_cache_lookups_total", {"kind": "sha256", "result": "hit"}) == 1
    assert get("unmask_cache_lookups_total", {"kind": "other", "result": "miss"}) == 1
    assert get("unmask_purify_seconds_count", {"outcome": "done"}) == 1
    assert get("unmask_purify_seconds_sum", {"outcome": "done"}) == 1.5


def _job(status: str, age_s: float, done: bool = False) -> SimpleNamespace:
    finished = asyncio.Event()
    if done:
        finished.set()
    return SimpleNamespace(status=status, started=time.perf_counter() - age_s, done=finished)


def test_checks_by_state_and_queue_age_are_read_at_scrape_time() -> None:
    jobs = {
        "a": _job(CheckStatus.QUEUED, 4.0),
        "b": _job(CheckStatus.QUEUED, 1.0),
        "c": _job(CheckStatus.RUNNING, 2.0),
        "d": _job(CheckStatus.DONE, 9.0, done=True),
    }
    app = {jobs_key: SimpleNamespace(jobs=jobs), executor_key: SimpleNamespace(_max_workers=3)}
    m = Metrics()
    m.registry.register(AppCollector(app))  # type: ignore[arg-type]
    get = m.registry.get_sample_value
    assert get("unmask_checks", {"state": "queued"}) == 2
    assert get("unmask_checks", {"state": "running"}) == 1
    assert get("unmask_checks", {"state": "purifying"}) == 0
    assert get("unmask_queue_depth", {"queue": "checks"}) == 2
    assert 4.0 <= get("unmask_queue_oldest_age_seconds", {"queue": "checks"}) < 10
    assert get("unmask_check_workers") == 3
    assert get("unmask_check_workers_busy") == 1
    jobs.clear()
    assert get("unmask_queue_depth", {"queue": "checks"}) == 0
    assert get("unmask_queue_oldest_age_seconds", {"queue": "checks"}) == 0


async def test_a_finished_check_moves_the_check_and_frame_counters(api, media_dir: Path) -> None:
    form = aiohttp.FormData()
    form.add_field("video", (media_dir / "face.mp4").read_bytes(), filename="f.mp4", content_type="video/mp4")
    created = await (await api.post("/v1/checks", data=form)).json()
    for _ in range(600):
        body = await (await api.get(f"/v1/checks/{created['id']}")).json()
        if body["status"] in ("done", "failed"):
            break
        await asyncio.sleep(0.1)
    _, samples = await _scrape(api)
    assert _value(samples, "unmask_frames_scored_total") == 6
    assert _value(samples, "unmask_checks_started_total", source="upload") == 1
    label = body["verdict"]["label"] if body["status"] == "done" else body["error"]["code"]
    assert _value(samples, "unmask_checks_finished_total", status=body["status"], label=label) == 1
    assert _value(samples, "unmask_cache_lookups_total", kind="sha256", result="miss") >= 1
