"""Atheris harness over the parsers that see raw client bytes first: sniffing, frame forms, stills.

Run: ``python tests/fuzz/atheris_harness.py -runs=2000 -max_total_time=30 SEED_DIR``. The first
byte of an input picks the target. Only UnmaskError (and aiohttp's BadHttpMessage, which the
error middleware answers with 400) is an expected outcome; any other exception is a bug and
stops the fuzzer with a non-zero exit (the OSS-Fuzz aiohttp harness pattern).
"""

from __future__ import annotations

import asyncio
import sys
from unittest import mock

import atheris

# Coverage feedback from our parsers only (importing them pulls in torch via server.jobs).
_TARGETS = ["server.media.sniff", "server.media.images", "server.api.frames", "server.api.uploads"]

with atheris.instrument_imports(include=_TARGETS):
    from aiohttp.http_exceptions import BadHttpMessage
    from aiohttp.streams import StreamReader
    from aiohttp.test_utils import make_mocked_request

    from server.api.frames import _read_parts
    from server.errors import UnmaskError
    from server.media.images import decode_still
    from server.media.sniff import sniff_container

BOUNDARY = "fuzzboundary"

# Small enough that a hostile header cannot make one iteration decode a huge still.
MAX_PIXELS = 512 * 512

_LOOP = asyncio.new_event_loop()


def parse_frames_form(body: bytes) -> object:
    """Run the frames endpoint's multipart parser over ``body``."""
    payload = StreamReader(mock.Mock(_reading_paused=False), 2**16, loop=_LOOP)
    payload.feed_data(body)
    payload.feed_eof()
    request = make_mocked_request(
        "POST",
        "/v1/checks/x/frames",
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        payload=payload,
        loop=_LOOP,
    )
    return _LOOP.run_until_complete(_read_parts(request))


def test_one_input(data: bytes) -> None:
    """One fuzz input: target byte, then the bytes for that target."""
    if not data:
        return
    target, body = data[0] % 3, data[1:]
    try:
        if target == 0:
            sniff_container(body)
        elif target == 1:
            parse_frames_form(body)
        else:
            decode_still(body, max_pixels=MAX_PIXELS)
    except (UnmaskError, BadHttpMessage):
        pass


def main() -> None:
    """libFuzzer entry point."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
