"""Decode untrusted video in a separate, resource-limited process; the parent keeps a watchdog.

``open_sandboxed_video`` has the interface of ``open_video`` (``.info``, ``.samples(rate)``,
``.truncated``, ``.decoded_frames``, ``with``), but libav runs in a child process under
``setrlimit`` (address space, CPU time, no file writes, few descriptors). The parent never
unpickles what the child sends (a hijacked decoder must not reach the server): messages are
small JSON headers plus raw pixel bytes, validated against the limits before use.

* A path is opened by the child itself (``file:`` protocol only, as in ``open_video``).
* A file-like (a growing upload, a fetched body) stays in the parent: the child's reads, seeks
  and size queries are served over the pipe, so blocking on a still-arriving upload and the
  moov-at-end seek behave exactly as in-process.
* The child dying on a signal or a limit, or sending nothing for ``hang_s`` while the parent
  waits for it, becomes ``UndecodableMedia`` (422) for that check only.

Each video gets a fresh child, forked from a *zygote*: a clean, single-threaded interpreter
started once (``exec``, never ``fork`` of the threaded server) with libav already imported, so
a decoder starts in milliseconds instead of the ~0.7 s of a new interpreter. ``SandboxPool``
owns the zygote; the children serve one video each, then exit.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import io
import json
import math
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from server.errors import ServiceUnavailable, UndecodableMedia, UnmaskError
from server.media.decode import DecodeLimits, MediaInfo, SampledFrame
from server.media.sniff import FFMPEG_FORMAT

# The repository root, put on the child's sys.path (it runs isolated: -I ignores env and cwd).
_ROOT = str(Path(__file__).resolve().parents[2])

# Largest read the child may ask for in one message (libav reads 32 KiB at a time).
_MAX_READ_BYTES = 1 << 20

# A JSON header from the child longer than this is a protocol violation.
_MAX_HEADER_BYTES = 64 * 1024

# How long close() waits for a child to exit before killing it.
_EXIT_GRACE_S = 1.0

# How long a fork request may wait for a (re)starting zygote: the interpreter plus libav imports.
_ZYGOTE_START_S = 30.0

# The zygote also looks for exited decoders this often (SIGCHLD normally wakes it first).
_REAP_INTERVAL_S = 0.5


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """Resource limits of one decoder process and the parent's watchdog."""

    # A 4K frame-threaded H.264/HEVC decode needs well under 1 GiB; the rest is headroom.
    address_space_bytes: int = 2 * 1024**3
    # CPU seconds (all threads) for one video: a 30 min 1080p file sampled at 2 fps needs ~60 s.
    cpu_s: int = 300
    # The decoder never writes files; any attempt kills it (SIGXFSZ).
    file_size_bytes: int = 0
    # Descriptors: the interpreter's own, the pipe, and the one video file.
    open_files: int = 64
    # No message for this long while the parent waits for one: the decoder hangs; kill it.
    hang_s: float = 30.0


def open_sandboxed_video(
    source: str | os.PathLike[str] | BinaryIO,
    *,
    container: str | None = None,
    limits: DecodeLimits = DecodeLimits(),  # noqa: B008 - frozen: a shared default is safe
    rlimits: SandboxLimits = SandboxLimits(),
    pool: SandboxPool | None = None,
) -> SandboxedReader:
    """Open and validate a video like ``open_video``, but decode it in a sandboxed child."""
    if container is not None and container not in FFMPEG_FORMAT:
        raise ValueError(f"unknown container {container!r}")
    request: dict[str, Any] = {"op": "open", "container": container, "limits": asdict(limits)}
    request["rlimits"] = asdict(rlimits)
    file: BinaryIO | None = None
    if isinstance(source, (str, os.PathLike)):
        request["path"] = os.path.abspath(os.fspath(source))
    else:
        if container is None:
            raise ValueError("container= is required for a file-like source (sniff its head first)")
        file = source
        seekable = getattr(source, "seekable", None)
        request["seekable"] = hasattr(source, "seek") and (seekable is None or bool(seekable()))
        request["known_size"] = callable(getattr(source, "known_size", None))
    child = (pool or default_pool()).take()
    reader = SandboxedReader(child, file, limits, rlimits)
    try:
        reader._open(request)
    except BaseException:
        reader.close()
        raise
    return reader


class SandboxedReader:
    """The parent's side of one sandboxed decode; the same interface as ``VideoReader``."""

    def __init__(self, child: _Child, file: BinaryIO | None, limits: DecodeLimits, rlimits: SandboxLimits):
        self._child = child
        self._file = file
        self._limits = limits
        self._rlimits = rlimits
        self._started = False
        self._finished = False  # the child sent its last message ("end" or "error")
        self._source_error: UnmaskError | None = None
        self.info: MediaInfo | None = None
        self.truncated = False
        self.decoded_frames = 0
        self.peak_rss_bytes: int | None = None  # the child's, from the kernel, once it exited

    def _open(self, request: dict[str, Any]) -> None:
        self._child.send(request)
        header, _ = self._recv()
        if header.get("op") != "info":
            raise self._violation("expected the media info")
        try:
            self.info = MediaInfo(
                container=str(header["container"]),
                codec=str(header["codec"]),
                width=int(header["width"]),
                height=int(header["height"]),
                fps=None if header["fps"] is None else float(header["fps"]),
                duration_s=None if header["duration_s"] is None else float(header["duration_s"]),
                frame_count=None if header["frame_count"] is None else int(header["frame_count"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise self._violation(f"bad media info ({err})") from err

    def samples(self, rate: float) -> Iterator[SampledFrame]:
        """Yield sampled frames exactly as ``VideoReader.samples`` does; single use."""
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"sample rate must be positive, got {rate}")
        if self._started:
            raise RuntimeError("samples() can be iterated only once per VideoReader")
        self._started = True
        return self._samples(rate)

    def _samples(self, rate: float) -> Iterator[SampledFrame]:
        self._child.send({"op": "samples", "rate": rate})
        emitted = 0
        while True:
            header, pixels = self._recv()
            op = header.get("op")
            if op == "end":
                self._finished = True
                self._take_counters(header)
                return
            if op != "frame" or emitted >= self._limits.max_sampled_frames:
                raise self._violation("unexpected message while sampling")
            yield self._frame(header, pixels, emitted)
            emitted += 1

    def _frame(self, header: dict[str, Any], pixels: bytes | None, emitted: int) -> SampledFrame:
        """A SampledFrame from a child's message, after checking it against the limits."""
        try:
            h, w = (int(v) for v in header["shape"])
            t = float(header["t"])
        except (KeyError, TypeError, ValueError) as err:
            raise self._violation(f"bad frame header ({err})") from err
        if not (0 < h * w <= self._limits.max_frame_pixels and h > 0 and math.isfinite(t)):
            raise self._violation(f"frame of {w}x{h} at t={t}")
        if pixels is None or len(pixels) != h * w * 3:
            raise self._violation("frame size does not match its pixels")
        self._take_counters(header)
        image = np.frombuffer(bytearray(pixels), dtype=np.uint8).reshape(h, w, 3)
        return SampledFrame(emitted, t, image)

    def _take_counters(self, header: dict[str, Any]) -> None:
        self.truncated = bool(header.get("truncated", self.truncated))
        with contextlib.suppress(TypeError, ValueError):
            self.decoded_frames = int(header.get("decoded_frames", self.decoded_frames))

    def _recv(self) -> tuple[dict[str, Any], bytes | None]:
        """The next header (and pixels) from the child, serving its file requests meanwhile."""
        while True:
            header, payload = self._child.recv(self._rlimits.hang_s, self._max_message())
            op = header.get("op")
            if op == "error":
                self._finished = True
                self._take_counters(header)
                if self._source_error is not None:
                    raise self._source_error  # the upload/fetch failed: its own error, not a copy
                raise _rebuild_error(header)
            if op in ("read", "seek", "tell", "known_size"):
                self._serve(header)
                continue
            return header, payload

    def _max_message(self) -> int:
        return self._limits.max_frame_pixels * 3 + 1024

    def _serve(self, request: dict[str, Any]) -> None:
        """Answer one file operation of the child on the parent's file-like."""
        f = self._file
        if f is None:
            raise self._violation("file request for a path source")
        op = request["op"]
        try:
            if op == "read":
                n = int(request["n"])
                if not 0 < n <= _MAX_READ_BYTES:
                    raise self._violation(f"read of {n} bytes")
                data = f.read(n) or b""
                self._child.send({"op": "ok", "n": len(data)}, data or None)
                return
            if op == "seek":
                whence = int(request["whence"])
                if whence not in (io.SEEK_SET, io.SEEK_CUR, io.SEEK_END):
                    raise self._violation(f"seek whence {whence}")
                value: int | None = f.seek(int(request["offset"]), whence)
            elif op == "tell":
                value = f.tell()
            else:
                value = f.known_size()  # type: ignore[attr-defined]
        except UnmaskError as err:
            self._source_error = err
            self._child.send(_error_header(err))
            return
        except (OSError, ValueError) as err:
            self._child.send({"op": "error", "cls": "OSError", "message": str(err) or type(err).__name__})
            return
        self._child.send({"op": "ok", "value": value})

    def _violation(self, what: str) -> UndecodableMedia:
        """Kill a child that broke the protocol (it may be hijacked) and say so."""
        self._child.kill()
        return UndecodableMedia(f"the decoder process misbehaved: {what}")

    def close(self) -> None:
        """Stop the child (it serves one video) and record its peak memory."""
        if self._started and not self._finished:
            self._child.kill()  # stopped mid-stream (early verdict): no reason to let it finish
        self._child.close()
        self.peak_rss_bytes = self._child.peak_rss_bytes

    def __enter__(self) -> SandboxedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _error_header(err: BaseException) -> dict[str, Any]:
    """An UnmaskError as a JSON header (class name, message, JSON-safe details)."""
    details = getattr(err, "details", {}) or {}
    return {
        "op": "error",
        "cls": type(err).__name__,
        "message": getattr(err, "message", None) or str(err) or type(err).__name__,
        "details": {k: v for k, v in details.items() if isinstance(v, (str, int, float, bool, type(None)))},
    }


def _rebuild_error(header: dict[str, Any]) -> UnmaskError:
    """The child's error as the same UnmaskError class; anything else is UndecodableMedia."""
    message = str(header.get("message") or "the decoder failed")[:2000]
    cls = _error_classes().get(str(header.get("cls")))
    details = header.get("details") if isinstance(header.get("details"), dict) else {}
    if isinstance(cls, type) and issubclass(cls, UnmaskError) and 400 <= cls.status < 500:
        try:
            return cls(message, **details)
        except TypeError:
            return cls(message)
    return UndecodableMedia(message)


def _error_classes() -> dict[str, type[UnmaskError]]:
    """Every UnmaskError subclass by name (those beside their modules included)."""
    found: dict[str, type[UnmaskError]] = {}
    todo: list[type[UnmaskError]] = [UnmaskError]
    while todo:
        cls = todo.pop()
        found.setdefault(cls.__name__, cls)
        todo.extend(cls.__subclasses__())
    return found


class _Zygote:
    """A clean, single-threaded interpreter with libav imported that forks one child per video.

    Forking the server itself is unsafe (torch and executor threads); forking this process is
    cheap (milliseconds) and safe. It reaps its children and reports their exit status and
    peak memory back over its socket, newline-delimited JSON.
    """

    def __init__(self) -> None:
        parent_sock, zygote_sock = socket.socketpair()
        fd = zygote_sock.fileno()
        code = (
            f"import sys; sys.path.insert(0, {_ROOT!r}); "
            f"from server.media.sandbox import _zygote_main; _zygote_main({fd})"
        )
        # No secrets from the server's environment; two malloc arenas keep RLIMIT_AS meaningful
        # (glibc reserves 64 MiB of address space per arena, otherwise one per decoder thread).
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MALLOC_ARENA_MAX": "2"}
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-c", code],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            pass_fds=(fd,),
            env=env,
            cwd="/",
        )
        zygote_sock.close()
        self._sock = parent_sock
        self._fork_lock = threading.Lock()
        self._cond = threading.Condition()
        self._pids: list[int] = []
        self._exits: dict[int, tuple[int, int]] = {}  # pid -> (wait status, peak RSS bytes)
        self.alive = True
        threading.Thread(target=self._read, name="sandbox-zygote", daemon=True).start()

    def fork(self, fd: int) -> int:
        """A new child serving the socket ``fd``; its pid."""
        with self._fork_lock:
            try:
                socket.send_fds(self._sock, [b"F"], [fd])
            except OSError as err:
                raise ServiceUnavailable("the decoder service is not running") from err
            with self._cond:
                if not self._cond.wait_for(lambda: self._pids or not self.alive, _ZYGOTE_START_S):
                    raise ServiceUnavailable("the decoder service did not start a decoder")
                if not self._pids:
                    raise ServiceUnavailable("the decoder service stopped")
                return self._pids.pop(0)

    def _read(self) -> None:
        buffer = b""
        try:
            while chunk := self._sock.recv(65536):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                with self._cond:
                    for line in lines:
                        msg = json.loads(line)
                        if "pid" in msg:
                            self._pids.append(int(msg["pid"]))
                        else:
                            self._exits[int(msg["exit"])] = (int(msg["status"]), int(msg["rss"]))
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass
        with self._cond:
            self.alive = False
            self._cond.notify_all()

    def wait_exit(self, pid: int, timeout: float) -> tuple[int, int] | None:
        """(wait status, peak RSS) of child ``pid`` once reaped; None after ``timeout``."""
        with self._cond:
            self._cond.wait_for(lambda: pid in self._exits or not self.alive, timeout)
            return self._exits.pop(pid, None)

    def close(self) -> None:
        """Stop the zygote (its children are killed by their parent-death signal)."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        try:
            self.proc.wait(_EXIT_GRACE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _Child:
    """One forked decoder process and the parent's end of its socket."""

    def __init__(self, zygote: _Zygote) -> None:
        parent_sock, child_sock = socket.socketpair()
        try:
            self.pid = zygote.fork(child_sock.fileno())
        finally:
            child_sock.close()
        self._zygote = zygote
        self.conn = Connection(parent_sock.detach())
        self.peak_rss_bytes: int | None = None
        self.status: int | None = None
        self.reaped = False
        self.killed_by_watchdog = False
        self._lock = threading.Lock()
        self._hang_s = 0.0

    def send(self, header: dict[str, Any], payload: bytes | None = None) -> None:
        """Send a header (and optional bytes); a dead child is reported as a crash."""
        try:
            self.conn.send_bytes(json.dumps(header).encode())
            if payload is not None:
                self.conn.send_bytes(payload)
        except (OSError, EOFError) as err:
            raise self._crashed() from err

    def recv(self, hang_s: float, max_payload: int) -> tuple[dict[str, Any], bytes | None]:
        """The next header (and its payload when it announces one), under the hang watchdog."""
        self._hang_s = hang_s
        timer = threading.Timer(hang_s, self._watchdog_kill)
        timer.daemon = True
        timer.start()
        try:
            raw = self.conn.recv_bytes(_MAX_HEADER_BYTES)
            header = json.loads(raw)
            if not isinstance(header, dict):
                raise ValueError("header is not an object")
            payload = self.conn.recv_bytes(max_payload) if header.get("op") == "frame" else None
        except (OSError, EOFError) as err:
            raise self._crashed() from err
        except ValueError as err:  # bad JSON, or a message over its maximum length
            self.kill()
            raise UndecodableMedia(f"the decoder process misbehaved: {err}") from err
        finally:
            timer.cancel()
        return header, payload

    def _watchdog_kill(self) -> None:
        self.killed_by_watchdog = True
        self.kill()

    def _crashed(self) -> UndecodableMedia:
        """Why the child went away, as the check's error."""
        status = self._reap(timeout=_EXIT_GRACE_S)
        if self.killed_by_watchdog:
            return UndecodableMedia(f"the decoder hung for {self._hang_s:g} s and was stopped")
        if status is not None and os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig == signal.SIGXCPU:
                return UndecodableMedia("the decoder ran out of CPU time")
            try:
                name = signal.Signals(sig).name
            except ValueError:
                name = "unknown"
            return UndecodableMedia(f"the decoder crashed (signal {sig}, {name})")
        code = os.WEXITSTATUS(status) if status is not None and os.WIFEXITED(status) else None
        return UndecodableMedia(f"the decoder exited unexpectedly (status {code})")

    def kill(self) -> None:
        """SIGKILL the child unless it was already reaped (its pid may be reused then)."""
        with self._lock:
            if not self.reaped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)

    def _reap(self, timeout: float) -> int | None:
        """Wait for the child's exit report (killing it after ``timeout``); its wait status."""
        if self.reaped:
            return self.status
        report = self._zygote.wait_exit(self.pid, timeout)
        if report is None:
            self.kill()
            report = self._zygote.wait_exit(self.pid, _EXIT_GRACE_S)
        with self._lock:
            self.reaped = True
            if report is not None:
                self.status, rss = report
                self.peak_rss_bytes = rss
        return self.status

    def close(self) -> None:
        """Ask the child to exit, reap it, and close the socket."""
        if not self.reaped:
            with contextlib.suppress(OSError, EOFError, ValueError):
                self.conn.send_bytes(b'{"op": "exit"}')
            self._reap(timeout=_EXIT_GRACE_S)
        self.conn.close()


class SandboxPool:
    """Owns the zygote that forks decoder processes; each child serves a single video."""

    def __init__(self) -> None:
        self._zygote: _Zygote | None = None
        self._lock = threading.Lock()
        self._closed = False

    def take(self) -> _Child:
        """A fresh decoder process (the zygote is started, or restarted, on demand)."""
        return _Child(self._running_zygote())

    def _running_zygote(self) -> _Zygote:
        with self._lock:
            if self._closed:
                raise RuntimeError("SandboxPool is closed")
            if self._zygote is None or not self._zygote.alive or self._zygote.proc.poll() is not None:
                if self._zygote is not None:
                    self._zygote.close()
                self._zygote = _Zygote()
            return self._zygote

    def prewarm(self) -> None:
        """Start the zygote now, in the background, so the first check does not wait for it."""
        threading.Thread(target=self._running_zygote, name="sandbox-prewarm", daemon=True).start()

    def close(self) -> None:
        """Stop the zygote."""
        with self._lock:
            self._closed = True
            zygote, self._zygote = self._zygote, None
        if zygote is not None:
            zygote.close()


_DEFAULT_POOL: SandboxPool | None = None
_DEFAULT_LOCK = threading.Lock()


def default_pool() -> SandboxPool:
    """The process-wide pool (created on first use, closed at exit)."""
    global _DEFAULT_POOL
    with _DEFAULT_LOCK:
        if _DEFAULT_POOL is None:
            _DEFAULT_POOL = SandboxPool()
            atexit.register(_DEFAULT_POOL.close)
        return _DEFAULT_POOL


# ---------------------------------------------------------------------------- the child side


def _zygote_main(fd: int) -> None:
    """The zygote: fork a decoder per request, reap them and report their exits."""
    ctl = socket.socket(fileno=fd)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: die with the server
    # SIGCHLD wakes the select below at once, so exits are reported without polling delay.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    while True:
        ready, _, _ = select.select([ctl, wake_r], [], [], _REAP_INTERVAL_S)
        with contextlib.suppress(BlockingIOError):
            os.read(wake_r, 4096)
        _report_exits(ctl)
        if ctl not in ready:
            continue
        try:
            msg, fds, _, _ = socket.recv_fds(ctl, 16, 1)
        except OSError:
            return
        if not msg:
            return  # the server closed its end
        if not fds:
            continue
        pid = os.fork()
        if pid == 0:
            try:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for own in (ctl.detach(), wake_r, wake_w):
                    os.close(own)
                _child_main(fds[0])
            finally:
                os._exit(0)
        os.close(fds[0])
        ctl.sendall(json.dumps({"pid": pid}).encode() + b"\n")


def _report_exits(ctl: socket.socket) -> None:
    """Reap every exited child and tell the server its status and peak memory."""
    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not pid:
            return
        line = {"exit": pid, "status": status, "rss": usage.ru_maxrss * 1024}
        with contextlib.suppress(OSError):
            ctl.sendall(json.dumps(line).encode() + b"\n")


class _RemoteFile:
    """The child's view of the parent's file-like: every call is one request over the pipe."""

    def __init__(self, conn: Connection, *, seekable: bool, known_size: bool) -> None:
        self._conn = conn
        self._seekable = seekable
        if known_size:
            self.known_size = lambda: self._call({"op": "known_size"})

    def _call(self, request: dict[str, Any]) -> Any:
        _send(self._conn, request)
        reply = json.loads(self._conn.recv_bytes())
        if reply.get("op") == "error":
            raise _rebuild_child_error(reply)
        return reply.get("value")

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes from the parent's file (blocking like it)."""
        n = _MAX_READ_BYTES if n is None or n < 0 else min(n, _MAX_READ_BYTES)
        if n == 0:
            return b""
        _send(self._conn, {"op": "read", "n": n})
        reply = json.loads(self._conn.recv_bytes())
        if reply.get("op") == "error":
            raise _rebuild_child_error(reply)
        return self._conn.recv_bytes() if reply.get("n") else b""

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Seek the parent's file."""
        return int(self._call({"op": "seek", "offset": int(offset), "whence": int(whence)}))

    def tell(self) -> int:
        """The parent's file position."""
        return int(self._call({"op": "tell"}))

    def seekable(self) -> bool:
        """Whether the parent's file is seekable."""
        return self._seekable

    def readable(self) -> bool:
        """Always True."""
        return True


def _rebuild_child_error(header: dict[str, Any]) -> Exception:
    if header.get("cls") == "OSError":
        return OSError(header.get("message"))
    return _rebuild_error(header)


def _send(conn: Connection, header: dict[str, Any], payload: bytes | memoryview | None = None) -> None:
    conn.send_bytes(json.dumps(header).encode())
    if payload is not None:
        conn.send_bytes(payload)


def _harden(rlimits: dict[str, Any]) -> None:
    """Lower this process's limits (never raise them) and cut it off from privileges."""
    for name, value in (
        (resource.RLIMIT_AS, rlimits["address_space_bytes"]),
        (resource.RLIMIT_CPU, rlimits["cpu_s"]),
        (resource.RLIMIT_FSIZE, rlimits["file_size_bytes"]),
        (resource.RLIMIT_NOFILE, rlimits["open_files"]),
        (resource.RLIMIT_CORE, 0),
    ):
        _, hard = resource.getrlimit(name)
        value = int(value)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(name, (value, value))
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: no setuid escalation from here on
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: die with the server


def _child_main(fd: int) -> None:
    """Entry point of a decoder process: wait for one job, decode it, exit."""
    conn = Connection(fd)
    try:
        request = json.loads(conn.recv_bytes())
    except (EOFError, OSError):
        return  # the pool closed before handing out this child
    if request.get("op") != "open":
        return
    from server.media.decode import open_video

    limits = DecodeLimits(**request["limits"])
    reader = None
    try:
        _harden(request["rlimits"])
        if "path" in request:
            source: Any = request["path"]
        else:
            source = _RemoteFile(conn, seekable=request["seekable"], known_size=request["known_size"])
        reader = open_video(source, container=request["container"], limits=limits)
        _send(conn, {"op": "info", **asdict(reader.info)})
        command = json.loads(conn.recv_bytes())
        if command.get("op") != "samples":
            return
        for frame in reader.samples(float(command["rate"])):
            image = np.ascontiguousarray(frame.image)
            header = {"op": "frame", "t": frame.t, "shape": list(image.shape[:2])}
            header.update(truncated=reader.truncated, decoded_frames=reader.decoded_frames)
            _send(conn, header, memoryview(image).cast("B"))
        _send(conn, {"op": "end", "truncated": reader.truncated, "decoded_frames": reader.decoded_frames})
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the parent stopped reading (early verdict, shutdown)
    except MemoryError:
        _try_send(conn, _error_header(UndecodableMedia("the decoder ran out of memory")), reader)
    except UnmaskError as err:
        _try_send(conn, _error_header(err), reader)
    except Exception as err:  # anything else is hostile input meeting a decoder corner
        _try_send(conn, _error_header(UndecodableMedia(f"the decoder failed ({type(err).__name__})")), reader)
    finally:
        if reader is not None:
            with contextlib.suppress(Exception):
                reader.close()


def _try_send(conn: Connection, header: dict[str, Any], reader: Any) -> None:
    if reader is not None:
        header.update(truncated=reader.truncated, decoded_frames=reader.decoded_frames)
    with contextlib.suppress(OSError, EOFError):
        _send(conn, header)
