"""Short test videos in every layout the decoder accepts, written once per session; the fake media
site (each module brings its own ``site_media``) with a canary, for the URL tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from aiohttp.test_utils import TestServer

from server.media.encode import write_video
from server.media.fetch import Fetcher, FetchPolicy
from tests.helpers.streams import Canary, StreamSite, canary_server, site_app

FPS = 25
SECONDS = 3
WIDTH, HEIGHT = 320, 240
N_FRAMES = FPS * SECONDS

# The bar that marks frame i starts at column BAR_X0 + BAR_STEP * i, so a decoded image says
# which frame it is (see frame_number).
BAR_X0, BAR_STEP, BAR_W = 8, 4, 6


def make_frames(n: int = N_FRAMES, width: int = WIDTH, height: int = HEIGHT) -> Iterator[np.ndarray]:
    """RGB frames: scrolling texture (so B-frames appear) plus a white bar at a per-frame column."""
    rng = np.random.default_rng(7)
    tex = rng.integers(0, 160, (height // 4, (width + 2 * n) // 4 + 1, 3)).astype(np.uint8)
    tex = np.repeat(np.repeat(tex, 4, 0), 4, 1)
    for i in range(n):
        frame = np.ascontiguousarray(tex[:height, 2 * i : 2 * i + width])
        x = BAR_X0 + BAR_STEP * i
        frame[:, x : x + BAR_W] = 255
        yield frame


def frame_number(image: np.ndarray) -> int:
    """Which make_frames() frame an image shows, from the column of its white bar."""
    columns = image.astype(np.int32).sum(axis=(0, 2))
    x = int(np.argmax(np.convolve(columns, np.ones(BAR_W), mode="valid")))
    return round((x - BAR_X0) / BAR_STEP)


# name -> (file name, write_video keyword arguments)
LAYOUTS: dict[str, tuple[str, dict[str, object]]] = {
    "faststart": ("faststart.mp4", {"layout": "faststart", "gop": 25}),
    "fragmented": ("fragmented.mp4", {"layout": "fragmented", "gop": 25}),
    "moov_at_end": ("moov_at_end.mp4", {"layout": "moov_at_end", "gop": 25}),
    "mkv": ("h264.mkv", {"container_format": "matroska", "gop": 25}),
    "mpegts": ("h264.ts", {"container_format": "mpegts", "gop": 25}),
    "webm": ("vp9.webm", {"container_format": "webm", "codec": "libvpx-vp9", "crf": 40, "gop": 25}),
}

STREAMABLE = ("faststart", "fragmented", "mpegts", "mkv")


@pytest.fixture(scope="session")
def decode_samples_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for all the session's test videos."""
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def video_files(decode_samples_dir: Path) -> dict[str, Path]:
    """Every layout in LAYOUTS, encoded once (webm only when PyAV has a VP9 encoder)."""
    out: dict[str, Path] = {}
    for name, (filename, kwargs) in LAYOUTS.items():
        if kwargs.get("codec") == "libvpx-vp9" and "libvpx-vp9" not in av.codecs_available:
            continue
        out[name] = write_video(make_frames(), decode_samples_dir / filename, fps=FPS, **kwargs)  # type: ignore[arg-type]
    return out


@pytest.fixture(params=list(LAYOUTS))
def layout_video(request: pytest.FixtureRequest, video_files: dict[str, Path]) -> tuple[str, Path]:
    """(layout name, path) for each layout; webm skips without a VP9 encoder."""
    if request.param not in video_files:
        pytest.skip("PyAV has no libvpx-vp9 encoder for the webm sample")
    return request.param, video_files[request.param]


@pytest.fixture(scope="session")
def sample_mp4(video_files: dict[str, Path]) -> Path:
    """The faststart MP4, the base for corruption tests."""
    return video_files["faststart"]


@pytest.fixture
async def canary() -> AsyncIterator[Canary]:
    async with canary_server() as c:
        yield c


@pytest.fixture
async def site(site_media: StreamSite, canary: Canary) -> AsyncIterator[tuple[str, StreamSite, Fetcher]]:
    """(base URL, site, a Fetcher allowed to reach exactly the site's address and port)."""
    site_media.canary_port = canary.port
    site_media.requests.clear()
    site_media.bytes_served = 0
    server = TestServer(site_app(site_media), host="127.0.0.1")
    await server.start_server()
    policy = FetchPolicy(allow_hosts=frozenset({("127.0.0.1", server.port)}))
    async with Fetcher(policy) as fetcher:
        yield f"http://127.0.0.1:{server.port}", site_media, fetcher
    await server.close()
