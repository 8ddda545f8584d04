"""The decoder sandbox: same frames as in-process, same errors, crashes and hangs become 422."""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from server.errors import MediaLimitExceeded, UndecodableMedia, UnsupportedMedia
from server.media.decode import DecodeLimits, open_video
from server.media.sandbox import SandboxLimits, SandboxPool, default_pool, open_sandboxed_video
from server.media.sniff import sniff_container
from server.media.source import GrowingFile
from tests.server.media.test_decode import feed_slowly


def _frames(reader, rate: float = 2.0) -> list[tuple[int, float, np.ndarray]]:
    return [(s.index, s.t, s.image) for s in reader.samples(rate)]


@pytest.mark.parametrize("layout", ["faststart", "moov_at_end", "mpegts", "mkv"])
def test_same_frames_as_in_process(video_files: dict[str, Path], layout: str) -> None:
    path = video_files[layout]
    with open_video(path) as reader:
        expected = _frames(reader)
        info = reader.info
    with open_sandboxed_video(path) as sandboxed:
        got = _frames(sandboxed)
        assert sandboxed.info == info
        assert sandboxed.decoded_frames == reader.decoded_frames
    assert (
        sandboxed.peak_rss_bytes is not None
        and sandboxed.peak_rss_bytes < SandboxLimits().address_space_bytes
    )
    assert [(i, t) for i, t, _ in got] == [(i, t) for i, t, _ in expected]
    for (_, _, a), (_, _, b) in zip(got, expected, strict=True):
        assert a.flags.writeable and a.flags.c_contiguous
        np.testing.assert_array_equal(a, b)


def test_file_like_source(sample_mp4: Path) -> None:
    with open_sandboxed_video(io.BytesIO(sample_mp4.read_bytes()), container="mp4") as reader:
        assert len(_frames(reader)) == 6


@pytest.mark.parametrize("layout", ["fragmented", "moov_at_end"])
def test_growing_upload(video_files: dict[str, Path], tmp_path: Path, layout: str) -> None:
    data = video_files[layout].read_bytes()
    with GrowingFile(tmp_path) as gf:
        producer = feed_slowly(gf, data, chunk=16384, delay=0.002)
        container = sniff_container(gf.wait_head(timeout=10))
        with open_sandboxed_video(gf.reader(), container=container) as reader:
            assert [i for i, _, _ in _frames(reader)] == list(range(6))
        producer.join()


def test_upload_failure_reaches_the_child(sample_mp4: Path, tmp_path: Path) -> None:
    data = sample_mp4.read_bytes()
    with GrowingFile(tmp_path) as gf:
        gf.write(data[: len(data) // 2])
        threading.Timer(0.2, lambda: gf.fail(ConnectionResetError("gone"))).start()
        with (
            pytest.raises(UndecodableMedia, match="gone"),
            open_sandboxed_video(gf.reader(), container="mp4") as reader,
        ):
            _frames(reader)


def test_child_errors_keep_their_class(tmp_path: Path, sample_mp4: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"<!doctype html><html></html>")
    with pytest.raises(UnsupportedMedia):
        open_sandboxed_video(junk)
    ftyp = tmp_path / "ftyp.mp4"
    ftyp.write_bytes(b"\0\0\0\x18ftypisom" + b"\0" * 200)
    with pytest.raises(UndecodableMedia):
        open_sandboxed_video(ftyp)
    with pytest.raises(MediaLimitExceeded) as info:
        open_sandboxed_video(sample_mp4, limits=DecodeLimits(max_frame_pixels=100))
    assert info.value.details["limit"] == "max_frame_pixels"
    with pytest.raises(UndecodableMedia):
        open_sandboxed_video(tmp_path / "missing.mp4")


def test_crash_becomes_undecodable(sample_mp4: Path) -> None:
    with open_sandboxed_video(sample_mp4) as reader:
        os.kill(reader._child.pid, signal.SIGSEGV)
        with pytest.raises(UndecodableMedia, match=r"crashed \(signal 11, SIGSEGV\)"):
            _frames(reader)


def test_cpu_limit_is_named(sample_mp4: Path) -> None:
    with open_sandboxed_video(sample_mp4) as reader:
        os.kill(reader._child.pid, signal.SIGXCPU)
        with pytest.raises(UndecodableMedia, match="ran out of CPU time"):
            _frames(reader)


def test_hang_is_stopped_by_the_watchdog(sample_mp4: Path) -> None:
    with open_sandboxed_video(sample_mp4, rlimits=SandboxLimits(hang_s=0.5)) as reader:
        os.kill(reader._child.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        with pytest.raises(UndecodableMedia, match=r"hung for 0\.5 s"):
            _frames(reader)
        assert time.monotonic() - t0 < 5


def test_memory_limit_is_a_client_error(tmp_path: Path) -> None:
    """A decoder over its address-space limit fails the check, never the server."""
    from server.media.encode import write_video

    frames = (np.full((1080, 1920, 3), i * 20, np.uint8) for i in range(5))
    big = write_video(frames, tmp_path / "big.mp4", fps=5)
    tight = SandboxLimits(address_space_bytes=240 * 1024**2)  # the idle child alone maps ~200 MiB
    with pytest.raises(UndecodableMedia), open_sandboxed_video(big, rlimits=tight) as reader:
        _frames(reader)


def test_early_close_kills_the_child(video_files: dict[str, Path]) -> None:
    reader = open_sandboxed_video(video_files["faststart"])
    next(iter(reader.samples(2.0)))
    t0 = time.monotonic()
    reader.close()
    assert time.monotonic() - t0 < 0.5
    assert reader._child.status is not None and os.WTERMSIG(reader._child.status) == signal.SIGKILL


def test_children_are_fresh_and_fast(sample_mp4: Path) -> None:
    pool = SandboxPool()
    try:
        pool.take().close()  # starts the zygote
        t0 = time.monotonic()
        a, b = pool.take(), pool.take()
        assert time.monotonic() - t0 < 0.5, "forking a decoder should take milliseconds"
        assert a.pid != b.pid
        a.close()
        b.close()
        assert a.status is not None and os.WIFEXITED(a.status)
    finally:
        pool.close()
    with pytest.raises(RuntimeError):
        pool.take()


def test_dead_zygote_is_replaced(sample_mp4: Path) -> None:
    pool = SandboxPool()
    try:
        pool.take().close()
        first = pool._zygote
        first.proc.kill()
        first.proc.wait()
        with open_sandboxed_video(sample_mp4, pool=pool) as reader:
            assert len(_frames(reader)) == 6
        assert pool._zygote is not first
    finally:
        pool.close()


def test_default_pool_is_shared() -> None:
    assert default_pool() is default_pool()
