"""HLS test streams made with PyAV (TS segments cut at keyframes) and a fake social site serving them."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from aiohttp import web

# MPEG-TS clock: 90 kHz.
TS_CLOCK = 90_000


def encode_ts(frames: Iterable[np.ndarray], *, fps: int, gop: int) -> bytes:
    """One H.264 MPEG-TS (bytes) with a keyframe every ``gop`` frames and no B-frames."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mpegts") as out:
        stream = None
        for frame in frames:
            if stream is None:
                h, w = frame.shape[:2]
                stream = out.add_stream("libx264", rate=Fraction(fps))
                stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                stream.options = {"crf": "30", "preset": "ultrafast", "bf": "0", "sc_threshold": "0"}
                stream.codec_context.gop_size = gop
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(vf):
                out.mux(packet)
        if stream is None:
            raise ValueError("encode_ts needs at least one frame")
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def split_ts(data: bytes, *, every: int, shift_s: float = 0.0) -> list[tuple[bytes, float]]:
    """Cut a TS at every ``every``-th keyframe into standalone TS segments: [(bytes, seconds)].

    ``shift_s`` moves every timestamp (to place a reused segment later on the timeline).
    """
    groups: list[list[av.Packet]] = []
    keyframes = 0
    with av.open(io.BytesIO(data), format="mpegts") as src:
        stream = src.streams.video[0]
        tb = stream.time_base
        for packet in src.demux(stream):
            if packet.size == 0:
                continue
            if packet.is_keyframe:
                if keyframes % every == 0:
                    groups.append([])
                keyframes += 1
            groups[-1].append(packet)
        shift = round(shift_s / tb)
        out_segments = []
        starts = [g[0].pts for g in groups]
        for i, group in enumerate(groups):
            buf = io.BytesIO()
            with av.open(buf, mode="w", format="mpegts") as out:
                ostream = out.add_stream_from_template(stream)
                for packet in group:
                    packet.pts += shift
                    packet.dts += shift
                    packet.stream = ostream
                    out.mux(packet)
            end = starts[i + 1] if i + 1 < len(groups) else group[-1].pts - shift + (group[-1].duration or 0)
            out_segments.append((buf.getvalue(), float((end - starts[i]) * tb)))
    return out_segments


def write_dash(frames: Iterable[np.ndarray], directory: Path, *, fps: int, seg_s: int = 1) -> Path:
    """A static DASH stream (manifest.mpd, fMP4 init + numbered segments) written by FFmpeg's dash muxer."""
    directory.mkdir(parents=True, exist_ok=True)
    options = {"seg_duration": str(seg_s), "use_template": "1", "use_timeline": "0"}
    with av.open(str(directory / "manifest.mpd"), mode="w", format="dash", options=options) as out:
        stream = None
        for frame in frames:
            if stream is None:
                h, w = frame.shape[:2]
                stream = out.add_stream("libx264", rate=Fraction(fps))
                stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                stream.options = {"crf": "30", "preset": "ultrafast", "bf": "0"}
                stream.codec_context.gop_size = fps * seg_s
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(vf):
                out.mux(packet)
        if stream is None:
            raise ValueError("write_dash needs at least one frame")
        for packet in stream.encode(None):
            out.mux(packet)
    return directory / "manifest.mpd"


def media_playlist(names: Iterable[tuple[str, float]], *, ended: bool = True, sequence: int = 0) -> str:
    """An HLS media playlist over (uri, seconds) segments."""
    items = list(names)
    target = max(1, int(max(d for _, d in items) + 0.999))
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{target}",
        f"#EXT-X-MEDIA-SEQUENCE:{sequence}",
    ]
    for uri, seconds in items:
        lines += [f"#EXTINF:{seconds:.3f},", uri]
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def master_playlist(variants: Iterable[tuple[str, int, int, int]]) -> str:
    """An HLS master playlist over (uri, width, height, bandwidth) variants."""
    lines = ["#EXTM3U"]
    for uri, w, h, bw in variants:
        lines += [f'#EXT-X-STREAM-INF:BANDWIDTH={bw},RESOLUTION={w}x{h},CODECS="avc1.42c01e"', uri]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- a fake social site


@dataclass
class StreamSite:
    """What the fake site serves, and what it was asked for."""

    face_mp4: bytes
    renditions: dict[str, list[tuple[bytes, float]]]  # name -> TS segments
    sizes: dict[str, tuple[int, int]]  # name -> (width, height)
    long_base: bytes  # the TS used to build the 10-minute stream
    long_segment_s: float
    long_segments: int
    canary_port: int = 0
    requests: list[str] = field(default_factory=list)
    bytes_served: int = 0

    def long_total_bytes(self) -> int:
        """Bytes of every segment of the long stream (for comparing with the estimate)."""
        return sum(len(self.long_segment(i)) for i in range(self.long_segments))

    def long_segment(self, i: int) -> bytes:
        """Segment ``i`` of the long stream: the base TS moved to its place on the timeline."""
        return split_ts(self.long_base, every=10**6, shift_s=i * self.long_segment_s)[0][0]


def make_site(face_mp4: bytes, frames: list[np.ndarray], *, fps: int = 25) -> StreamSite:
    """Encode the fake site's media: two HLS renditions (1 s segments) and a long-stream segment."""
    import cv2

    renditions, sizes = {}, {}
    for name, scale in (("hi", 1.0), ("lo", 0.5)):
        h, w = frames[0].shape[:2]
        size = (int(w * scale) // 2 * 2, int(h * scale) // 2 * 2)
        scaled = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]
        renditions[name] = split_ts(encode_ts(scaled, fps=fps, gop=fps), every=1)
        sizes[name] = size
    small = [cv2.resize(f, (160, 120), interpolation=cv2.INTER_AREA) for f in frames[:fps]]
    long_fps, long_s = 5, 10.0
    loop = [small[(i * fps // long_fps) % len(small)] for i in range(int(long_fps * long_s))]
    base = encode_ts(loop, fps=long_fps, gop=int(long_fps * long_s))
    return StreamSite(face_mp4, renditions, sizes, base, long_s, 60)


def site_app(site: StreamSite) -> web.Application:
    """The fake site: social pages, a progressive MP4, HLS master + renditions, hostile playlists."""

    def page(body: str) -> web.Response:
        return web.Response(
            text=f"<!doctype html><html><head>{body}</head><body><p>a post</p></body></html>",
            content_type="text/html",
        )

    async def record(request: web.Request, handler):  # type: ignore[no-untyped-def]
        site.requests.append(request.path_qs)
        resp = await handler(request)
        if resp.body is not None:
            site.bytes_served += len(resp.body)
        return resp

    canary = f"http://127.0.0.1:{site.canary_port}"
    routes = web.RouteTableDef()

    @routes.get("/post/social")
    async def social(request: web.Request) -> web.Response:
        return page(
            '<title>A post</title><meta property="og:title" content="Look at this">'
            '<meta property="og:video" content="/media/face.mp4">'
        )

    @routes.get("/post/stream")
    async def stream_page(request: web.Request) -> web.Response:
        return page(
            "<title>Live</title></head><body><video controls>"
            '<source src="/hls/master.m3u8" type="application/x-mpegURL"></video>'
        )

    @routes.get("/post/empty")
    async def empty(request: web.Request) -> web.Response:
        return page("<title>Nothing to see</title>")

    @routes.get("/post/evil")
    async def evil(request: web.Request) -> web.Response:
        return page(
            f'<title>Evil</title></head><body><video><source src="{canary}/x.m3u8" '
            'type="application/x-mpegURL"></video>'
        )

    @routes.get("/media/face.mp4")
    async def face(request: web.Request) -> web.Response:
        return web.Response(body=site.face_mp4, content_type="video/mp4")

    @routes.get("/hls/master.m3u8")
    async def master(request: web.Request) -> web.Response:
        variants = [
            (f"{n}/index.m3u8", *site.sizes[n], 200_000 * site.sizes[n][1] // 60) for n in ("lo", "hi")
        ]
        return _m3u8(master_playlist(variants))

    @routes.get("/hls/{name}/index.m3u8")
    async def rendition(request: web.Request) -> web.Response:
        segs = site.renditions[request.match_info["name"]]
        return _m3u8(media_playlist([(f"seg{i}.ts", d) for i, (_, d) in enumerate(segs)]))

    @routes.get("/hls/{name}/seg{i:\\d+}.ts")
    async def segment(request: web.Request) -> web.Response:
        segs = site.renditions[request.match_info["name"]]
        return web.Response(body=segs[int(request.match_info["i"])][0], content_type="video/mp2t")

    @routes.get("/bad/passwd.m3u8")
    async def passwd(request: web.Request) -> web.Response:
        return _m3u8(media_playlist([("file:///etc/passwd", 1.0), ("/hls/hi/seg1.ts", 1.0)]))

    @routes.get("/bad/redirect.m3u8")
    async def redirect_playlist(request: web.Request) -> web.Response:
        return _m3u8(
            media_playlist([("/hls/hi/seg0.ts", 1.0), ("/bad/hop.ts", 1.0), ("/hls/hi/seg2.ts", 1.0)])
        )

    @routes.get("/bad/hop.ts")
    async def hop(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": f"{canary}/seg.ts"})

    @routes.get("/long/index.m3u8")
    async def long_playlist(request: web.Request) -> web.Response:
        items = [(f"seg{i}.ts", site.long_segment_s) for i in range(site.long_segments)]
        return _m3u8(media_playlist(items))

    @routes.get("/long/seg{i:\\d+}.ts")
    async def long_segment(request: web.Request) -> web.Response:
        return web.Response(body=site.long_segment(int(request.match_info["i"])), content_type="video/mp2t")

    app = web.Application(middlewares=[web.middleware(record)])
    app.add_routes(routes)
    return app


def _m3u8(text: str) -> web.Response:
    return web.Response(text=text, content_type="application/vnd.apple.mpegurl")


@dataclass
class Canary:
    """A TCP server on 127.0.0.1 that counts connections: refused fetches must never reach it."""

    port: int = 0
    connections: int = 0


@contextlib.asynccontextmanager
async def canary_server() -> AsyncIterator[Canary]:
    """Run a Canary for the duration of the block."""
    canary = Canary()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        canary.connections += 1
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    canary.port = server.sockets[0].getsockname()[1]
    try:
        yield canary
    finally:
        server.close()
        await server.wait_closed()
