"""The request id of the work in progress, for every log line, without passing it around.

``error_middleware`` sets ``request_id_var``; asyncio tasks started while handling the request
(a check's job) inherit it, and ``RequestIdFilter`` puts it on each record the JSON formatter
writes. ``redact`` keeps tokens and inline image data out of messages.
"""

from __future__ import annotations

import logging
import re
from contextvars import ContextVar

request_id_var: ContextVar[str | None] = ContextVar("unmask_request_id", default=None)

# Bearer tokens, ?access_token= values and base64 image data never reach a log line.
_SECRETS = (
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1[redacted]"),
    (re.compile(r"(?i)(access_token=)[^&\s\"']+"), r"\1[redacted]"),
    (re.compile(r"data:image/[a-z]+;base64,[A-Za-z0-9+/=]+"), "data:image/[redacted]"),
)


def redact(text: str) -> str:
    """``text`` with tokens and inline image data replaced."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class RequestIdFilter(logging.Filter):
    """Add the current request id to records that carry none; redact their message."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Never drops a record, only completes it."""
        if getattr(record, "request_id", None) is None:
            request_id = request_id_var.get()
            if request_id is not None:
                record.request_id = request_id
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
