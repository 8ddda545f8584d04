"""GrowingFile: a disk spool written by one producer and read, blocking, by decoder threads."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from pathlib import Path

import pytest

from server import limits
from server.errors import BadRequest, PayloadTooLarge, UndecodableMedia
from server.media.source import GrowingFile


def produce(gf: GrowingFile, data: bytes, chunk: int, delay: float) -> threading.Thread:
    """Write ``data`` to ``gf`` from a thread, ``chunk`` bytes at a time, then finish()."""

    def run() -> None:
        for i in range(0, len(data), chunk):
            gf.write(data[i : i + chunk])
            time.sleep(delay)
        gf.finish()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_reader_follows_a_slow_producer(tmp_path: Path) -> None:
    data = os.urandom(50_000)
    with GrowingFile(tmp_path) as gf:
        producer = produce(gf, data, 1000, 0.001)
        with gf.reader() as r:
            got = r.read()  # readall waits for finish
        producer.join()
        assert got == data
        assert gf.finished and gf.bytes_written == len(data)
        assert gf.sha256 == hashlib.sha256(data).hexdigest()


def test_several_readers_in_threads(tmp_path: Path) -> None:
    data = os.urandom(30_000)
    results: list[bytes] = []
    with GrowingFile(tmp_path) as gf:

        def consume() -> None:
            with gf.reader() as r:
                parts = []
                while chunk := r.read(777):
                    parts.append(chunk)
                results.append(b"".join(parts))

        readers = [threading.Thread(target=consume) for _ in range(3)]
        for t in readers:
            t.start()
        produce(gf, data, 512, 0.0005).join()
        for t in readers:
            t.join(timeout=10)
    assert results == [data] * 3


def test_read_returns_what_is_there_without_waiting_for_more(tmp_path: Path) -> None:
    with GrowingFile(tmp_path) as gf:
        gf.write(b"abc")
        r = gf.reader()
        assert r.read(100) == b"abc"
        buf = bytearray(4)
        gf.write(b"de")
        assert r.readinto(buf) == 2 and buf[:2] == b"de"
        gf.finish()
        assert r.read(10) == b""
        r.close()


def test_seek_and_tell(tmp_path: Path) -> None:
    with GrowingFile(tmp_path) as gf:
        gf.write(b"0123456789")
        r = gf.reader()
        assert r.seekable() and r.readable()
        assert r.seek(4) == 4 and r.read(2) == b"45" and r.tell() == 6
        assert r.seek(-3, io.SEEK_CUR) == 3 and r.read(1) == b"3"
        gf.finish()
        assert r.seek(-2, io.SEEK_END) == 8 and r.read() == b"89"
        with pytest.raises(ValueError):
            r.seek(-1)
        r.close()


def test_seek_end_waits_for_finish(tmp_path: Path) -> None:
    with GrowingFile(tmp_path) as gf:
        produce(gf, b"x" * 5000, 500, 0.01)
        r = gf.reader()
        assert r.seek(0, io.SEEK_END) == 5000
        assert gf.finished
        r.close()


def test_seek_end_uses_expected_size_without_waiting(tmp_path: Path) -> None:
    with GrowingFile(tmp_path, expected_size=100) as gf:
        gf.write(b"y" * 10)
        r = gf.reader()
        assert r.seek(0, io.SEEK_END) == 100
        assert not gf.finished
        r.close()


def test_read_past_written_bytes_waits(tmp_path: Path) -> None:
    with GrowingFile(tmp_path) as gf:
        r = gf.reader()
        r.seek(10)
        threading.Timer(0.05, lambda: gf.write(b"z" * 20)).start()
        start = time.monotonic()
        assert r.read(5) == b"zzzzz"
        assert time.monotonic() - start >= 0.04
        r.close()


def test_fail_propagates_to_waiting_reader(tmp_path: Path) -> None:
    with GrowingFile(tmp_path) as gf:
        gf.write(b"abc")
        r = gf.reader()
        r.read(3)
        threading.Timer(0.05, lambda: gf.fail(ConnectionResetError("client went away"))).start()
        with pytest.raises(UndecodableMedia, match="client went away") as info:
            r.read(1)
        assert isinstance(info.value.__cause__, ConnectionResetError)
        r.close()


def test_fail_keeps_unmask_errors_as_they_are(tmp_path: Path) -> None:
    with GrowingFile(tmp_path) as gf:
        err = BadRequest("nope")
        gf.fail(err)
        r = gf.reader()
        with pytest.raises(BadRequest):
            r.read(1)
        with pytest.raises(BadRequest):
            gf.write(b"more")
        r.close()


def test_too_large_raises_and_fails_readers(tmp_path: Path) -> None:
    with GrowingFile(tmp_path, max_bytes=1000) as gf:
        gf.write(b"a" * 600)
        with pytest.raises(PayloadTooLarge, match="1000 bytes") as info:
            gf.write(b"a" * 600)
        assert info.value.status == 413
        with gf.reader() as r, pytest.raises(PayloadTooLarge):
            r.read(1)


def test_announced_size_over_limit_is_refused_at_once(tmp_path: Path) -> None:
    with pytest.raises(PayloadTooLarge):
        GrowingFile(tmp_path, expected_size=2000, max_bytes=1000)
    assert list(tmp_path.iterdir()) == []


def test_short_upload_against_announced_size_fails(tmp_path: Path) -> None:
    with GrowingFile(tmp_path, expected_size=10) as gf:
        gf.write(b"12345")
        gf.finish()
        assert not gf.finished
        with gf.reader() as r, pytest.raises(UndecodableMedia, match="5 of 10"):
            r.read(100)


def test_stall_timeout(tmp_path: Path) -> None:
    with GrowingFile(tmp_path, stall_timeout=0.05) as gf:
        gf.write(b"abc")
        r = gf.reader()
        r.read(3)
        start = time.monotonic()
        with pytest.raises(UndecodableMedia, match="stalled"):
            r.read(1)
        assert time.monotonic() - start < 1
        r.close()


def test_head_and_wait_head(tmp_path: Path) -> None:
    data = os.urandom(limits.SNIFF_BYTES + 5000)
    with GrowingFile(tmp_path) as gf:
        gf.write(data[:100])
        assert gf.head == data[:100]
        producer = produce(gf, data[100:], 4096, 0.001)
        assert gf.wait_head(timeout=10) == data[: limits.SNIFF_BYTES]
        producer.join()


def test_wait_head_returns_short_file_once_finished(tmp_path: Path) -> None:
    with GrowingFile(tmp_path) as gf:
        gf.write(b"tiny")
        gf.finish()
        assert gf.wait_head(timeout=1) == b"tiny"


def test_wait_head_times_out(tmp_path: Path) -> None:
    with GrowingFile(tmp_path) as gf, pytest.raises(UndecodableMedia, match="stalled"):
        gf.wait_head(timeout=0.02)


def test_sha256_only_after_finish(tmp_path: Path) -> None:
    with GrowingFile(tmp_path) as gf:
        gf.write(b"hello")
        assert gf.sha256 is None
        gf.finish()
        assert gf.sha256 == hashlib.sha256(b"hello").hexdigest()


def test_close_removes_the_file_and_unblocks_readers(tmp_path: Path) -> None:
    gf = GrowingFile(tmp_path)
    gf.write(b"abc")
    r = gf.reader()
    r.read(3)
    path = gf.path
    threading.Timer(0.05, gf.close).start()
    with pytest.raises(UndecodableMedia, match="closed"):
        r.read(1)
    r.close()
    assert not path.exists()
    gf.close()  # idempotent


def test_bytes_go_to_disk_not_memory(tmp_path: Path) -> None:
    with GrowingFile(tmp_path) as gf:
        for _ in range(64):
            gf.write(b"\0" * 65536)
        assert gf.path.stat().st_size == 64 * 65536
        assert len(gf.head) == limits.SNIFF_BYTES
