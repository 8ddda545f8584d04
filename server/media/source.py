"""A disk-backed upload spool that one producer appends to while decoder threads read it.

The upload handler writes chunks on the event loop; a decoder thread reads through a blocking,
seekable file-like. A read past the bytes written so far waits for them, so libavformat can
decode a faststart/fragmented/TS upload while it arrives and still read a moov-at-end MP4 (its
seek to the end simply waits until the upload has finished). Bytes live in a temp file, so
memory stays flat whatever the upload size.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

from server import limits
from server.errors import BadRequest, PayloadTooLarge, UndecodableMedia, UnmaskError


class GrowingFile:
    """Append-only temp file with blocking readers; one producer, any number of readers."""

    def __init__(
        self,
        dir: Path | None = None,
        *,
        expected_size: int | None = None,
        max_bytes: int = limits.MAX_UPLOAD_BYTES,
        stall_timeout: float = 30.0,
    ) -> None:
        if expected_size is not None and expected_size > max_bytes:
            raise PayloadTooLarge(
                f"upload of {expected_size} bytes is over the limit of {max_bytes} bytes",
                limit=max_bytes,
            )
        fd, name = tempfile.mkstemp(prefix="unmask-upload-", suffix=".part", dir=dir)
        self.path = Path(name)
        self.expected_size = expected_size
        self.max_bytes = max_bytes
        self.stall_timeout = stall_timeout
        self._fd: int | None = fd
        self._cond = threading.Condition()
        self._size = 0
        self._finished = False
        self._error: BaseException | None = None
        self._last_progress = time.monotonic()
        self._hash = hashlib.sha256()
        self._head = bytearray()

    # -- producer side (event loop thread: nothing here may block for long) --

    def write(self, data: bytes) -> None:
        """Append ``data``; raise PayloadTooLarge once the total passes ``max_bytes``."""
        if self._error is not None:
            raise self._error
        if self._finished or self._fd is None:
            raise RuntimeError("write() after finish() or close()")
        total = self._size + len(data)
        if total > self.max_bytes:
            err = PayloadTooLarge(f"upload is over the limit of {self.max_bytes} bytes", limit=self.max_bytes)
            self.fail(err)
            raise err
        if self.expected_size is not None and total > self.expected_size:
            err = BadRequest(f"upload is longer than the announced {self.expected_size} bytes")
            self.fail(err)
            raise err
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self._hash.update(data)
        if len(self._head) < limits.SNIFF_BYTES:
            self._head += data[: limits.SNIFF_BYTES - len(self._head)]
        with self._cond:
            self._size = total
            self._last_progress = time.monotonic()
            self._cond.notify_all()

    def finish(self) -> None:
        """Mark the upload complete: readers see EOF at the end instead of waiting."""
        if self._error is not None:
            return
        if self.expected_size is not None and self._size != self.expected_size:
            self.fail(
                UndecodableMedia(f"upload ended after {self._size} of {self.expected_size} announced bytes")
            )
            return
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        """Abort the upload (client went away, limit hit): every waiting and later read raises."""
        if not isinstance(exc, UnmaskError):
            wrapped = UndecodableMedia(f"upload failed: {exc or type(exc).__name__}")
            wrapped.__cause__ = exc
            exc = wrapped
        with self._cond:
            if self._error is None:
                self._error = exc
            self._cond.notify_all()

    # -- state --

    @property
    def bytes_written(self) -> int:
        """Bytes appended so far."""
        return self._size

    @property
    def finished(self) -> bool:
        """True once finish() has been called (and the upload did not fail)."""
        return self._finished

    @property
    def sha256(self) -> str | None:
        """Hex SHA-256 of the whole upload, once finished."""
        return self._hash.hexdigest() if self._finished else None

    @property
    def head(self) -> bytes:
        """The first ``limits.SNIFF_BYTES`` bytes (fewer while they are still arriving)."""
        return bytes(self._head)

    def wait_head(self, timeout: float) -> bytes:
        """Block until the sniffable head has arrived (or the upload finished), then return it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._head) < limits.SNIFF_BYTES and not self._finished:
                self._raise_if_failed()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise UndecodableMedia(f"upload stalled: no video header after {timeout:g} s")
                self._cond.wait(left)
            return bytes(self._head)

    def reader(self) -> GrowingFileReader:
        """A new blocking, seekable binary reader from offset 0."""
        if self._fd is None:
            raise ValueError("GrowingFile is closed")
        return GrowingFileReader(self)

    # -- reader support --

    def _raise_if_failed(self) -> None:
        """Raise the stored failure, if any (caller holds the lock)."""
        if self._error is not None:
            raise self._error

    def _wait_for(self, pos: int) -> int:
        """Block until a byte exists at ``pos`` or the upload finished; return the current size."""
        with self._cond:
            while True:
                self._raise_if_failed()
                if self._size > pos or self._finished:
                    return self._size
                left = self._last_progress + self.stall_timeout - time.monotonic()
                if left <= 0:
                    raise UndecodableMedia(
                        f"upload stalled: no data for {self.stall_timeout:g} s after {self._size} bytes"
                    )
                self._cond.wait(left)

    def _wait_end(self) -> int:
        """The final size: ``expected_size`` when announced, else wait for finish()."""
        if self.expected_size is not None:
            return self.expected_size
        with self._cond:  # re-entrant: _wait_for takes the same lock
            while not self._finished:
                self._wait_for(self._size)
            return self._size

    # -- lifetime --

    def close(self) -> None:
        """Remove the temp file; waiting readers fail instead of hanging."""
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        # Removed before waiting readers are woken, so a reader that sees the failure never
        # finds the file still there (open readers keep their own descriptors meanwhile).
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if not self._finished:
            self.fail(UndecodableMedia("upload was closed before it finished"))

    def __enter__(self) -> GrowingFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class GrowingFileReader(io.RawIOBase):
    """Blocking, seekable view of a GrowingFile for one consumer (e.g. ``av.open``)."""

    def __init__(self, source: GrowingFile) -> None:
        super().__init__()
        self._source = source
        # Our own descriptor: reads use pread, so readers never share a file position.
        self._fd = os.open(source.path, os.O_RDONLY)
        self._pos = 0

    def readable(self) -> bool:
        """Always True."""
        return True

    def seekable(self) -> bool:
        """Always True: a seek past the written bytes just makes the next read wait."""
        return True

    def tell(self) -> int:
        """Current offset."""
        return self._pos

    def known_size(self) -> int | None:
        """The final size if already known (announced or finished), else None; never blocks."""
        src = self._source
        return src.expected_size if src.expected_size is not None else src._size if src._finished else None

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move; SEEK_END waits for the upload to finish unless its size was announced."""
        self._checkClosed()
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._source._wait_end() + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes, waiting for at least one; b"" only at the final end."""
        self._checkClosed()
        if size is None or size < 0:
            return self.readall()
        if size == 0:
            return b""
        available = self._source._wait_for(self._pos)
        if available <= self._pos:
            return b""
        data = os.pread(self._fd, min(size, available - self._pos), self._pos)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        """Read to the end, waiting for the upload to finish."""
        chunks = []
        while chunk := self.read(1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        """Read into ``buffer``, waiting like read()."""
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def close(self) -> None:
        """Close this reader's descriptor."""
        if not self.closed:
            os.close(self._fd)
        super().close()
