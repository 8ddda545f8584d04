"""Structured JSON logs on stderr (one object per line)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from server.log_context import RequestIdFilter


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON line with time, level, logger, message and extras."""

    EXTRA_FIELDS = ("request_id", "check_id", "task_id")

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in self.EXTRA_FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(level: str = "INFO", *, json_lines: bool = True) -> None:
    """Configure the root logger once, at the process edge."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter("%(levelname)s %(message)s"))
    # Every record carries the request id of the request (or task) it belongs to; tokens and
    # image data are redacted before anything is written.
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
