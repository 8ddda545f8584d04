"""Static DASH manifests (MPD) parsed by us into the same segment list as an HLS media playlist.

Supported: ``type="static"`` MPDs, the first Period, video AdaptationSets, BaseURL at every level,
SegmentTemplate (``$Number$``/``$Time$`` with duration or SegmentTimeline), SegmentList and a
single-file SegmentBase/BaseURL representation. Not supported (clear errors): live (``dynamic``)
manifests and protected content (ContentProtection). Segments are fetched by our Fetcher; FFmpeg
never reads the manifest.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from urllib.parse import urljoin

from server import limits
from server.errors import UnsupportedMedia
from server.media.hls import BadPlaylist, MediaPlaylist, Segment, Variant, pick_variant

__all__ = ["parse_mpd"]

_ISO_DURATION = re.compile(
    r"P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?"
)
_TEMPLATE_VAR = re.compile(r"\$(RepresentationID|Number|Time|Bandwidth)(%0(\d{1,2})d)?\$")


def parse_mpd(text: str, url: str, max_height: int = limits.STREAM_MAX_HEIGHT) -> MediaPlaylist:
    """The segments of the video representation picked by height cap from the MPD at ``url``."""
    if len(text) > limits.PLAYLIST_MAX_BYTES:
        raise BadPlaylist(f"the DASH manifest is larger than {limits.PLAYLIST_MAX_BYTES} bytes")
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        # No DTDs at all: entity expansion is the classic XML parser attack.
        raise BadPlaylist("the DASH manifest declares a DTD or entities; not accepted")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise BadPlaylist(f"the DASH manifest is not valid XML: {exc}") from None
    if _local(root.tag) != "MPD":
        raise BadPlaylist("not a DASH manifest: the root element is not <MPD>")
    if root.get("type", "static") != "static":
        raise UnsupportedMedia("live DASH streams (type=dynamic) are not supported", looks_like="live DASH")
    period = _child(root, "Period")
    if period is None:
        raise BadPlaylist("the DASH manifest has no Period")
    total = _iso_seconds(period.get("duration") or root.get("mediaPresentationDuration"))
    base = _base(_base(url, root), period)
    choices: list[tuple[Variant, ET.Element, ET.Element, str]] = []
    for aset in _children(period, "AdaptationSet"):
        if _children(aset, "ContentProtection"):
            raise UnsupportedMedia("the DASH stream is DRM-protected; protected streams are not supported")
        set_base = _base(base, aset)
        for rep in _children(aset, "Representation"):
            if not _is_video(aset, rep):
                continue
            if _children(rep, "ContentProtection"):
                raise UnsupportedMedia(
                    "the DASH stream is DRM-protected; protected streams are not supported"
                )
            variant = Variant(
                url=rep.get("id", ""),
                bandwidth=_int(rep.get("bandwidth")),
                width=_int(rep.get("width") or aset.get("width")),
                height=_int(rep.get("height") or aset.get("height")),
                codecs=rep.get("codecs") or aset.get("codecs"),
            )
            choices.append((variant, aset, rep, _base(set_base, rep)))
    if not choices:
        raise BadPlaylist("the DASH manifest has no video representation")
    chosen = pick_variant([c[0] for c in choices], max_height)
    variant, aset, rep, rep_base = next(c for c in choices if c[0] is chosen)
    init, segments = _segments(aset, rep, rep_base, variant, total)
    if not segments:
        raise BadPlaylist("the chosen DASH representation has no segments")
    return MediaPlaylist(
        url=url,
        segments=tuple(segments),
        init=init,
        target_duration=max(s.duration for s in segments),
        ended=True,
        width=variant.width,
        height=variant.height,
        bandwidth=variant.bandwidth,
    )


def _segments(
    aset: ET.Element, rep: ET.Element, base: str, variant: Variant, total: float | None
) -> tuple[Segment | None, list[Segment]]:
    """Init section and segments of one representation, whichever addressing it uses."""
    template = _merged(_child(aset, "SegmentTemplate"), _child(rep, "SegmentTemplate"))
    if template is not None:
        return _from_template(template, base, rep.get("id", ""), variant.bandwidth, total)
    seg_list = _child(rep, "SegmentList")
    if seg_list is None:
        seg_list = _child(aset, "SegmentList")
    if seg_list is not None:
        return _from_list(seg_list, base, total)
    # SegmentBase or a bare BaseURL: one self-contained file for the whole period.
    return None, [Segment(url=base, start=0.0, duration=total or 0.0, sequence=0)]


def _from_template(
    tpl: dict[str, str], base: str, rep_id: str, bandwidth: int | None, total: float | None
) -> tuple[Segment | None, list[Segment]]:
    """Segments of a SegmentTemplate, with a SegmentTimeline or a fixed duration."""
    timescale = _int(tpl.get("timescale")) or 1
    number = _int(tpl.get("startNumber"))
    number = 1 if number is None else number
    offset = _int(tpl.get("presentationTimeOffset")) or 0
    media = tpl.get("media")
    if not media:
        raise BadPlaylist("a SegmentTemplate has no media attribute")

    def fill(pattern: str, n: int, t: int) -> str:
        return urljoin(base, _substitute(pattern, rep_id, n, t, bandwidth))

    init = tpl.get("initialization")
    init_seg = Segment(url=fill(init, 0, 0), start=0.0, duration=0.0, sequence=-1) if init else None
    segments: list[Segment] = []
    timeline = tpl.get("_timeline")
    if timeline is not None:
        for t, d in _timeline(timeline, total, timescale):
            segments.append(Segment(fill(media, number, t), (t - offset) / timescale, d / timescale, number))
            number += 1
            _check_count(segments)
        return init_seg, segments
    seg_d = _int(tpl.get("duration"))
    if not seg_d or total is None:
        raise BadPlaylist("a SegmentTemplate needs a SegmentTimeline, or a duration and a known length")
    count = math.ceil(total * timescale / seg_d - 1e-9)
    if count > limits.PLAYLIST_MAX_ENTRIES:
        raise BadPlaylist(f"the DASH manifest has more than {limits.PLAYLIST_MAX_ENTRIES} segments")
    for i in range(count):
        t = i * seg_d
        d = min(seg_d, total * timescale - t)
        segments.append(Segment(fill(media, number + i, t), t / timescale, d / timescale, number + i))
    return init_seg, segments


def _timeline(timeline: str, total: float | None, timescale: int) -> list[tuple[int, int]]:
    """(start, duration) pairs in timescale units from an encoded SegmentTimeline."""
    out: list[tuple[int, int]] = []
    t = 0
    end = None if total is None else total * timescale
    for item in timeline.split(";"):
        try:
            s_t, s_d, s_r = (int(x) for x in item.split(","))
        except ValueError:
            raise BadPlaylist("a SegmentTimeline entry has non-integer t, d or r") from None
        t = s_t if s_t >= 0 else t
        if s_d <= 0:
            raise BadPlaylist("a SegmentTimeline entry has no duration")
        repeat = s_r
        if repeat < 0:  # r=-1: repeat until the end of the period
            if end is None:
                raise BadPlaylist("a SegmentTimeline repeats to an unknown end")
            repeat = max(0, math.ceil((end - t) / s_d) - 1)
        for _ in range(repeat + 1):
            out.append((t, s_d))
            t += s_d
            if len(out) > limits.PLAYLIST_MAX_ENTRIES:
                raise BadPlaylist(f"the DASH manifest has more than {limits.PLAYLIST_MAX_ENTRIES} segments")
    return out


def _from_list(seg_list: ET.Element, base: str, total: float | None) -> tuple[Segment | None, list[Segment]]:
    """Segments of a SegmentList (fixed duration per SegmentURL)."""
    timescale = _int(seg_list.get("timescale")) or 1
    seg_d = (_int(seg_list.get("duration")) or 0) / timescale
    init_el = _child(seg_list, "Initialization")
    init = None
    if init_el is not None and init_el.get("sourceURL"):
        init = Segment(
            urljoin(base, init_el.get("sourceURL", "")), 0.0, 0.0, -1, _range(init_el.get("range"))
        )
    segments: list[Segment] = []
    for i, el in enumerate(_children(seg_list, "SegmentURL")):
        seg_url = urljoin(base, el.get("media", "")) if el.get("media") else base
        segments.append(Segment(seg_url, i * seg_d, seg_d, i, _range(el.get("mediaRange"))))
        _check_count(segments)
    if segments and seg_d == 0 and total:
        each = total / len(segments)
        segments = [Segment(s.url, i * each, each, s.sequence, s.byterange) for i, s in enumerate(segments)]
    return init, segments


def _merged(outer: ET.Element | None, inner: ET.Element | None) -> dict[str, str] | None:
    """SegmentTemplate attributes, the Representation's overriding the AdaptationSet's."""
    if outer is None and inner is None:
        return None
    attrs: dict[str, str] = {}
    for el in (outer, inner):
        if el is None:
            continue
        attrs.update(el.attrib)
        timeline = _child(el, "SegmentTimeline")
        if timeline is not None:
            attrs["_timeline"] = ";".join(
                f"{s.get('t', '-1')},{s.get('d', '0')},{s.get('r', '0')}" for s in _children(timeline, "S")
            )
    return attrs


def _substitute(pattern: str, rep_id: str, number: int, time: int, bandwidth: int | None) -> str:
    """Expand $RepresentationID$, $Number$, $Time$, $Bandwidth$ (with %0Nd widths) and $$."""

    def one(match: re.Match[str]) -> str:
        name, width = match.group(1), match.group(3)
        value = {"RepresentationID": rep_id, "Number": number, "Time": time, "Bandwidth": bandwidth or 0}[
            name
        ]
        if width and name != "RepresentationID":
            return f"{int(value):0{int(width)}d}"
        return str(value)

    return _TEMPLATE_VAR.sub(one, pattern).replace("$$", "$")


def _is_video(aset: ET.Element, rep: ET.Element) -> bool:
    """True for a video representation (by contentType, mimeType or codecs)."""
    kind = aset.get("contentType") or ""
    mime = rep.get("mimeType") or aset.get("mimeType") or ""
    if kind:
        return kind == "video"
    if mime:
        return mime.startswith("video/")
    return Variant(url="", codecs=rep.get("codecs") or aset.get("codecs")).has_video


def _base(url: str, el: ET.Element) -> str:
    """``url`` joined with the element's first BaseURL child, if any."""
    child = _child(el, "BaseURL")
    if child is None or not (child.text or "").strip():
        return url
    return urljoin(url, (child.text or "").strip())


def _range(value: str | None) -> tuple[int, int] | None:
    """(first, last) from a DASH ``a-b`` byte range."""
    match = re.fullmatch(r"(\d{1,15})-(\d{1,15})", (value or "").strip())
    if match is None:
        return None
    first, last = int(match.group(1)), int(match.group(2))
    if last < first:
        raise BadPlaylist(f"byte range {value!r} is not valid")
    return first, last


def _iso_seconds(value: str | None) -> float | None:
    """Seconds of an ISO 8601 duration like PT1M30.5S."""
    if not value:
        return None
    match = _ISO_DURATION.fullmatch(value.strip())
    if match is None:
        raise BadPlaylist(f"duration {value[:40]!r} is not an ISO 8601 duration")
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    return parts.get("d", 0) * 86400 + parts.get("h", 0) * 3600 + parts.get("m", 0) * 60 + parts.get("s", 0)


def _check_count(segments: list[Segment]) -> None:
    """BadPlaylist past the entry limit."""
    if len(segments) > limits.PLAYLIST_MAX_ENTRIES:
        raise BadPlaylist(f"the DASH manifest has more than {limits.PLAYLIST_MAX_ENTRIES} segments")


def _int(value: str | None) -> int | None:
    """A non-negative integer attribute, or None."""
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


def _local(tag: str) -> str:
    """The tag name without its XML namespace."""
    return tag.rsplit("}", 1)[-1]


def _children(el: ET.Element, name: str) -> list[ET.Element]:
    """Direct children named ``name`` (any namespace)."""
    return [c for c in el if _local(c.tag) == name]


def _child(el: ET.Element, name: str) -> ET.Element | None:
    """The first direct child named ``name``."""
    found = _children(el, name)
    return found[0] if found else None
