"""Sampled decoding: timing, streaming from a growing upload, hostile input and limits."""

from __future__ import annotations

import io
import os
import random
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from server.errors import MediaLimitExceeded, UndecodableMedia, UnmaskError, UnsupportedMedia
from server.media.decode import DecodeLimits, SampledFrame, open_video
from server.media.encode import write_video
from server.media.sniff import sniff_container
from server.media.source import GrowingFile
from tests.server.media.conftest import FPS, HEIGHT, N_FRAMES, STREAMABLE, WIDTH, frame_number, make_frames

FRAME_S = 1 / FPS


def sample_all(source: object, rate: float = 2.0, **kwargs: object) -> list[SampledFrame]:
    """Every sample of ``source`` at ``rate``."""
    with open_video(source, **kwargs) as reader:  # type: ignore[arg-type]
        return list(reader.samples(rate))


def test_two_per_second_from_every_layout(layout_video: tuple[str, Path]) -> None:
    _, path = layout_video
    samples = sample_all(path, 2.0)
    assert [s.index for s in samples] == list(range(6))
    for k, s in enumerate(samples):
        assert k * 0.5 <= s.t < k * 0.5 + FRAME_S + 1e-6
        assert s.image.shape == (HEIGHT, WIDTH, 3) and s.image.dtype.name == "uint8"
        assert s.image.flags.c_contiguous
        assert frame_number(s.image) == round(s.t * FPS)


def test_media_info(layout_video: tuple[str, Path]) -> None:
    name, path = layout_video
    with open_video(path) as reader:
        info = reader.info
    containers = {"mpegts": "mpegts", "mkv": "matroska", "webm": "matroska"}
    assert info.container == containers.get(name, "mp4")
    assert info.codec == ("vp9" if name == "webm" else "h264")
    assert (info.width, info.height) == (WIDTH, HEIGHT)
    assert info.fps == pytest.approx(FPS)
    if info.duration_s is not None:
        assert info.duration_s == pytest.approx(N_FRAMES / FPS, abs=0.1)


def test_rate_above_fps_emits_each_frame_once(sample_mp4: Path) -> None:
    samples = sample_all(sample_mp4, 60.0)
    assert len(samples) == N_FRAMES
    assert [frame_number(s.image) for s in samples] == list(range(N_FRAMES))
    assert [s.index for s in samples] == list(range(N_FRAMES))


def test_low_rate_skips_decoding_whole_gops(sample_mp4: Path) -> None:
    with open_video(sample_mp4) as reader:
        samples = list(reader.samples(0.5))
        decoded = reader.decoded_frames
    assert [round(s.t, 2) for s in samples] == [0.0, 2.0]
    assert decoded < N_FRAMES / 2


def test_matches_a_full_decode(video_files: dict[str, Path]) -> None:
    """Skipping GOPs and non-reference frames never changes which frames come out."""
    path = video_files["mpegts"]
    for rate in (0.7, 2.0, 3.3, 12.5):
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            start = stream.start_time or 0
            times = [float((f.pts - start) * stream.time_base) for f in c.decode(stream)]
        expected, next_slot = [], 0
        for t in sorted(times):
            if int(t * rate + 1e-6) >= next_slot:
                expected.append(t)
                next_slot = int(t * rate + 1e-6) + 1
        assert [s.t for s in sample_all(path, rate)] == pytest.approx(expected)


def test_samples_is_single_use(sample_mp4: Path) -> None:
    with open_video(sample_mp4) as reader:
        list(reader.samples(2.0))
        with pytest.raises(RuntimeError):
            reader.samples(2.0)


def test_file_like_source(sample_mp4: Path) -> None:
    samples = sample_all(io.BytesIO(sample_mp4.read_bytes()), 2.0, container="mp4")
    assert len(samples) == 6


def feed_slowly(gf: GrowingFile, data: bytes, chunk: int = 4096, delay: float = 0.01) -> threading.Thread:
    """Append ``data`` to ``gf`` from a thread in small chunks with sleeps, then finish()."""

    def run() -> None:
        for i in range(0, len(data), chunk):
            gf.write(data[i : i + chunk])
            time.sleep(delay)
        gf.finish()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("layout", STREAMABLE)
def test_decodes_while_the_upload_arrives(video_files: dict[str, Path], tmp_path: Path, layout: str) -> None:
    data = video_files[layout].read_bytes()
    with GrowingFile(tmp_path) as gf:
        producer = feed_slowly(gf, data)
        container = sniff_container(gf.wait_head(timeout=10))
        finished_at_first: bool | None = None
        with open_video(gf.reader(), container=container) as reader:
            samples = []
            for s in reader.samples(2.0):
                if finished_at_first is None:
                    finished_at_first = gf.finished
                samples.append(s)
        producer.join()
    assert finished_at_first is False, "the first frame should come before the upload ends"
    assert len(samples) == 6


def test_moov_at_end_through_a_growing_file(video_files: dict[str, Path], tmp_path: Path) -> None:
    data = video_files["moov_at_end"].read_bytes()
    with GrowingFile(tmp_path) as gf:
        producer = feed_slowly(gf, data, chunk=16384, delay=0.002)
        samples = sample_all(gf.reader(), 2.0, container="mp4")
        producer.join()
    assert [s.index for s in samples] == list(range(6))


def test_client_going_away_fails_the_decode(sample_mp4: Path, tmp_path: Path) -> None:
    data = sample_mp4.read_bytes()
    with GrowingFile(tmp_path) as gf:
        gf.write(data[: len(data) // 2])
        threading.Timer(0.1, lambda: gf.fail(ConnectionResetError("gone"))).start()
        with pytest.raises(UndecodableMedia, match="gone"):
            sample_all(gf.reader(), 2.0, container="mp4")


def write(tmp_path: Path, data: bytes, name: str = "input.mp4") -> Path:
    """``data`` as a file in ``tmp_path``."""
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("data", "error"),
    [
        pytest.param(b"", UnsupportedMedia, id="empty"),
        pytest.param(random.Random(1).randbytes(5000), UnsupportedMedia, id="random"),
        pytest.param(b"\x89PNG\r\n\x1a\n" + b"\0" * 100, UnsupportedMedia, id="png"),
        pytest.param(b"<!doctype html><html></html>", UnsupportedMedia, id="html"),
        pytest.param(b"#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n", UnsupportedMedia, id="m3u8"),
        pytest.param(b"\0\0\0\x18ftypisom" + b"\0" * 200, UndecodableMedia, id="ftyp-only"),
        pytest.param(b"\x1a\x45\xdf\xa3" + bytes(3000), UndecodableMedia, id="ebml-junk"),
    ],
)
def test_bad_input(tmp_path: Path, data: bytes, error: type[UnmaskError]) -> None:
    with pytest.raises(error) as info:
        sample_all(write(tmp_path, data), 2.0)
    assert 400 <= info.value.status < 500


def test_truncated_file_gives_partial_frames_or_a_clear_error(sample_mp4: Path, tmp_path: Path) -> None:
    """A faststart MP4 cut at 30 %: its index is whole, so the frames before the cut come out
    (the same ones the full file gives) and the reader says it was truncated."""
    full = [s.t for s in sample_all(sample_mp4, 2.0)]
    data = sample_mp4.read_bytes()
    path = write(tmp_path, data[: int(len(data) * 0.3)])
    with open_video(path) as reader:
        samples = [s.t for s in reader.samples(2.0)]
        assert reader.truncated
    assert samples, "the frames before the cut must come out"
    assert len(samples) < len(full), "a file cut at 30 % cannot give every sample"
    assert samples == full[: len(samples)]


def test_cut_transport_stream_gives_the_frames_before_the_cut(
    video_files: dict[str, Path], tmp_path: Path
) -> None:
    """MPEG-TS has no index or declared length, so a cut stream reads as a shorter one: the
    reader cannot flag it truncated, but every frame it gives is the full stream's."""
    data = video_files["mpegts"].read_bytes()
    path = write(tmp_path, data[: int(len(data) * 0.6)], "cut.ts")
    full = [s.t for s in sample_all(video_files["mpegts"], 2.0)]
    with open_video(path) as reader:
        samples = [s.t for s in reader.samples(2.0)]
    assert samples, "the frames before the cut must come out"
    assert len(samples) < len(full), "a stream cut at 60 % cannot give every sample"
    assert samples == full[: len(samples)]


def test_header_bit_flips_raise_only_client_errors(sample_mp4: Path, tmp_path: Path) -> None:
    data = bytearray(sample_mp4.read_bytes())
    rng = random.Random(3)
    for i in range(10):
        bad = bytearray(data)
        for _ in range(8):
            bad[rng.randrange(200)] ^= 1 << rng.randrange(8)
        try:
            sample_all(write(tmp_path, bytes(bad), f"flip{i}.mp4"), 2.0)
        except UnmaskError as err:
            assert 400 <= err.status < 500


def test_only_unmask_errors_for_random_mutations(video_files: dict[str, Path], tmp_path: Path) -> None:
    """Property: whatever the bytes, decoding ends normally or with a 4xx UnmaskError."""
    rng = random.Random(4)
    names = sorted(video_files)
    for i in range(30):
        name = names[i % len(names)]
        data = bytearray(video_files[name].read_bytes())
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        for _ in range(rng.choice([1, 5, 50])):
            if data:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        path = write(tmp_path, bytes(data), f"m{i}{video_files[name].suffix}")
        try:
            with open_video(path) as reader:
                for _ in reader.samples(4.0):
                    pass
        except UnmaskError as err:
            assert 400 <= err.status < 500, (name, err)


@pytest.mark.parametrize(
    ("limits", "limit"),
    [
        pytest.param(DecodeLimits(max_frame_pixels=1000), "max_frame_pixels", id="pixels"),
        pytest.param(DecodeLimits(max_duration_s=1), "max_duration_s", id="duration"),
        pytest.param(DecodeLimits(max_fps=10), "max_fps", id="fps"),
        pytest.param(DecodeLimits(max_decoded_frames=10), "max_decoded_frames", id="decoded"),
    ],
)
def test_limits(sample_mp4: Path, limits: DecodeLimits, limit: str) -> None:
    with pytest.raises(MediaLimitExceeded, match=limit) as info:
        sample_all(sample_mp4, 2.0, limits=limits)
    assert info.value.details["limit"] == limit


def test_duration_limit_without_a_declared_duration(video_files: dict[str, Path]) -> None:
    """A stream that declares no duration is stopped by its timestamps."""
    path = video_files["fragmented"]
    with pytest.raises(MediaLimitExceeded, match="max_duration_s"):
        sample_all(io.BytesIO(path.read_bytes()), 2.0, container="mp4", limits=DecodeLimits(max_duration_s=1))


def test_sampled_frame_cap_stops_quietly(sample_mp4: Path) -> None:
    samples = sample_all(sample_mp4, 2.0, limits=DecodeLimits(max_sampled_frames=3))
    assert len(samples) == 3


def test_unsupported_codec(tmp_path: Path) -> None:
    path = tmp_path / "mpeg2.mkv"
    write_video(make_frames(10), path, codec="mpeg2video", container_format="matroska")
    with pytest.raises(UnsupportedMedia, match="mpeg2video"):
        open_video(path)


def test_no_video_stream(tmp_path: Path) -> None:
    path = tmp_path / "audio.mkv"
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame(format="s16", layout="mono", samples=800)
        frame.sample_rate = 8000
        for p in stream.encode(frame):
            out.mux(p)
    with pytest.raises(UndecodableMedia, match="no video stream"):
        open_video(path)


def test_playlist_named_like_video(video_files: dict[str, Path], tmp_path: Path) -> None:
    """An HLS playlist can't be smuggled in: the sniffer rejects it, and a forced demuxer won't follow it."""
    ts = video_files["mpegts"]
    playlist = f"#EXTM3U\n#EXT-X-TARGETDURATION:3\n#EXTINF:3,\nfile://{ts}\n#EXT-X-ENDLIST\n".encode()
    path = write(tmp_path, playlist, "evil.mp4")
    with pytest.raises(UnsupportedMedia, match="playlist"):
        open_video(path)
    for container in ("mp4", "matroska", "mpegts"):
        with pytest.raises(UndecodableMedia):
            sample_all(path, 2.0, container=container)


def test_rotated_phone_video_comes_out_upright(tmp_path: Path) -> None:
    path = tmp_path / "portrait.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.set_display_rotation(90)  # stored landscape, shown turned 90° counter-clockwise
        image = np.zeros((32, 64, 3), np.uint8)
        image[:8, :8] = 255  # top-left corner marker
        for _ in range(3):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    (sample,) = sample_all(path, 1.0)
    assert sample.image.shape == (64, 32, 3) and sample.image.flags.c_contiguous
    assert sample.image[-4, 4].mean() > 200  # the marker turned to the bottom-left corner


def test_non_seekable_pipe(video_files: dict[str, Path]) -> None:
    data = video_files["fragmented"].read_bytes()
    read_fd, write_fd = os.pipe()

    def pump() -> None:
        with os.fdopen(write_fd, "wb") as w:
            w.write(data)

    threading.Thread(target=pump, daemon=True).start()
    with os.fdopen(read_fd, "rb") as r:
        assert len(sample_all(r, 2.0, container="mp4")) == 6


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UndecodableMedia):
        open_video(tmp_path / "nope.mp4")


def test_protocol_names_are_file_names(
    sample_mp4: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A path that looks like a URL or concat: list opens the local file of that name, nothing else."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UndecodableMedia):
        open_video("http://127.0.0.1:9/x.mp4", container="mp4")
    with pytest.raises(UndecodableMedia):
        open_video(f"concat:{sample_mp4}|{sample_mp4}", container="mp4")
