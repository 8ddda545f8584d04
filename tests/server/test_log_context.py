"""Request ids reach log records of work started by the request; secrets never do."""

from __future__ import annotations

import asyncio
import json
import logging

from server.log_context import RequestIdFilter, redact, request_id_var
from server.logs import JsonFormatter


def _record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("unmask.test", logging.INFO, __file__, 1, msg, args, None)


async def test_a_task_started_by_a_request_logs_with_its_id() -> None:
    flt, fmt = RequestIdFilter(), JsonFormatter()

    async def job() -> str:
        await asyncio.sleep(0)
        record = _record("frame %d scored", 3)
        flt.filter(record)
        return fmt.format(record)

    token = request_id_var.set("req-123")
    try:
        task = asyncio.create_task(job())  # copies the context, as a check's job does
    finally:
        request_id_var.reset(token)
    line = json.loads(await task)
    assert line["request_id"] == "req-123" and line["msg"] == "frame 3 scored"
    record = _record("no request here")
    flt.filter(record)
    assert "request_id" not in json.loads(fmt.format(record))


def test_tokens_and_image_data_are_redacted() -> None:
    record = _record("auth %s from %s", "Bearer unm_s3cr3t.token", "/v1/checks/x/events?access_token=abc&x=1")
    RequestIdFilter().filter(record)
    text = record.getMessage()
    assert "s3cr3t" not in text and "abc" not in text
    assert "Bearer [redacted]" in text and "access_token=[redacted]&x=1" in text
    assert redact("img data:image/jpeg;base64,/9j/4AAQSkZJRg== end") == "img data:image/[redacted] end"
