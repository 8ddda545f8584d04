"""The report page of one check: verdict, timeline chart, faces, purified crops, model card, timings."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from server.analysis.verdict import Label
from server.db.models import Check, CheckStatus
from server.db.thumbnails import Thumbnail, ThumbnailKind
from server.report.chart import legend, timeline_svg
from server.report.html import esc, page

# A page of a check that is still running reloads itself this often (a meta refresh: no script).
REFRESH_S = 3

HEADLINES = {
    Label.AUTHENTIC: "No sign of manipulation was found.",
    Label.MANIPULATED: "The faces in this video appear to be manipulated.",
    Label.TAMPERED: "Someone added an adversarial perturbation to hide from the detector.",
    Label.INCONCLUSIVE: "There was not enough to judge.",
    Label.FAILED: "The check failed.",
}

CARD_FIELDS = ("id", "version", "architecture", "input_size", "threshold", "training_data", "created_at")


def _num(v: Any, digits: int = 3) -> str:
    return "n/a" if v is None else f"{float(v):.{digits}f}"


def _data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def _facts(rows: Sequence[tuple[str, str]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _perturbed(tamper: dict[str, Any], faces: dict[str, Any]) -> str:
    """Flagged and purified frames, and how many face frames the tamper check saw when not all
    (captured frames are checked only inside lossless face patches)."""
    text = (
        f"{esc(tamper.get('suspicious_frames', 0))} found, {esc(tamper.get('purified_frames', 0))} purified"
    )
    checked, face_frames = tamper.get("checked_frames"), faces.get("frames_with_faces", 0)
    if tamper.get("threshold") is None:
        return text + " (no tamper check: no calibration for this model)"
    if checked is not None and checked < face_frames:
        text += f" (checked {esc(checked)} of {esc(face_frames)} face frames)"
    return text


def _source(check: Check) -> str:
    if check.source_url:
        return f"<code>{esc(check.source_url)}</code>"
    if check.filename:
        return f"upload <code>{esc(check.filename)}</code>"
    return esc(check.source)


def _verdict_section(check: Check, verdict: dict[str, Any]) -> str:
    label = str(verdict.get("label", Label.INCONCLUSIVE))
    model = verdict.get("model") or {}
    tamper = verdict.get("tamper") or {}
    faces = verdict.get("faces") or {}
    rows = [
        ("score", f"{_num(verdict.get('score'))} (threshold {_num(model.get('threshold'))})"),
        (
            "confidence",
            "n/a"
            if verdict.get("confidence") is None
            else f"{float(verdict['confidence']):.0%} of face frames agree",
        ),
        ("frames analysed", esc(verdict.get("frames_analyzed", 0))),
        (
            "faces",
            f"{esc(faces.get('total', 0))} in {esc(faces.get('frames_with_faces', 0))} frames",
        ),
        ("perturbed frames", _perturbed(tamper, faces)),
        ("source", _source(check)),
    ]
    if verdict.get("cached"):
        rows.append(("from cache", "yes: this video was judged before"))
    extra = ""
    if label == Label.TAMPERED and "manipulated" in verdict:
        after = "manipulated" if verdict["manipulated"] else "authentic"
        extra += f'<p class="reason"><strong>After purification the content scores {after}.</strong></p>'
    if verdict.get("reason"):
        extra += f'<p class="reason">{esc(verdict["reason"])}</p>'
    if model.get("demo"):
        extra += (
            '<p class="warn"><strong>Demo model.</strong> This verdict comes from demonstration weights '
            "and must not be used for real decisions.</p>"
        )
    if verdict.get("truncated"):
        extra += '<p class="warn">The file is truncated or corrupt; the verdict uses what decoded.</p>'
    return (
        f'<section class="verdict {esc(label)}" id="verdict"><span class="label">{esc(label)}</span>'
        f"<h1>{esc(HEADLINES.get(label, ''))}</h1>{extra}{_facts(rows)}</section>"
    )


def _chart_section(verdict: dict[str, Any]) -> str:
    timeline = verdict.get("timeline") or []
    svg = timeline_svg(
        timeline,
        threshold=(verdict.get("model") or {}).get("threshold"),
        tamper_threshold=(verdict.get("tamper") or {}).get("threshold"),
    )
    rows = "".join(
        f'<tr><td class="num">{esc(p.get("index"))}</td><td class="num">{_num(p.get("t"), 2)}</td>'
        f'<td class="num">{_num(p.get("score"))}</td><td class="num">{_num(p.get("tamper"))}</td>'
        f'<td class="num">{_num(p.get("purified_score"))}</td>'
        f'<td class="num">{len(p.get("boxes") or [])}</td></tr>'
        for p in timeline
    )
    table = (
        "<details><summary>Per-frame numbers</summary><table><thead><tr><th>frame</th><th>t (s)</th>"
        "<th>score</th><th>tamper</th><th>purified</th><th>faces</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></details>"
    )
    return f'<section id="timeline"><h2>Timeline</h2>{svg}{legend()}{table}</section>'


def _face_figure(thumb: Thumbnail, score: Any) -> str:
    boxes = "".join(
        f'<rect x="{int(b[0])}" y="{int(b[1])}" width="{int(b[2])}" height="{int(b[3])}" fill="none" '
        f'stroke="#ffd400" stroke-width="2"/>'
        for b in thumb.boxes or []
        if len(b) >= 4
    )
    return (
        f'<figure><svg width="{thumb.width}" height="{thumb.height}" '
        f'viewBox="0 0 {thumb.width} {thumb.height}" '
        f'role="img" aria-label="frame at {thumb.t:.2f} s" xmlns="http://www.w3.org/2000/svg">'
        f'<image href="{_data_uri(thumb.jpeg)}" width="{thumb.width}" height="{thumb.height}"/>{boxes}</svg>'
        f"<figcaption>t={thumb.t:.2f} s · score {_num(score)}</figcaption></figure>"
    )


def _faces_section(thumbs: Sequence[Thumbnail], timeline: Sequence[dict[str, Any]]) -> str:
    scores = {p.get("index"): p.get("score") for p in timeline}
    faces = [t for t in thumbs if t.kind == ThumbnailKind.FACE]
    if not faces:
        return (
            '<section id="faces"><h2>Faces</h2><p class="muted">No face thumbnails were kept.</p></section>'
        )
    figures = "".join(_face_figure(t, scores.get(t.index)) for t in faces)
    return f'<section id="faces"><h2>Faces</h2><div class="thumbs">{figures}</div></section>'


def _purified_section(thumbs: Sequence[Thumbnail], timeline: Sequence[dict[str, Any]]) -> str:
    points = {p.get("index"): p for p in timeline}
    by_index: dict[int, dict[str, Thumbnail]] = {}
    for t in thumbs:
        if t.kind in (ThumbnailKind.ORIGINAL, ThumbnailKind.PURIFIED):
            by_index.setdefault(t.index, {})[t.kind] = t
    pairs = []
    for index, pair in sorted(by_index.items()):
        p = points.get(index, {})
        cells = []
        for kind, caption in (
            (ThumbnailKind.ORIGINAL, f"as received · score {_num(p.get('score'))}"),
            (ThumbnailKind.PURIFIED, f"purified · score {_num(p.get('purified_score'))}"),
        ):
            thumb = pair.get(kind)
            img = (
                f'<img src="{_data_uri(thumb.jpeg)}" alt="{esc(kind)} face crop, frame {index}">'
                if thumb is not None
                else '<p class="muted">not kept</p>'
            )
            cells.append(f"<figure>{img}<figcaption>{esc(caption)}</figcaption></figure>")
        pairs.append(
            f'<div class="pair">{"".join(cells)}'
            f'<p class="muted">frame {index} at {_num(p.get("t"), 2)} s</p></div>'
        )
    if not pairs:
        return ""
    return (
        '<section id="purified"><h2>Perturbed frames: received vs purified</h2>'
        '<p class="muted">Purification (Deep Image Prior) rebuilds the face without the perturbation; '
        f"the detector judges it again.</p>{''.join(pairs)}</section>"
    )


def _model_section(verdict: dict[str, Any], active_card: dict[str, Any] | None) -> str:
    model = dict(verdict.get("model") or {})
    card = active_card if active_card and active_card.get("id") == model.get("id") else None
    if card is not None and card.get("version") == model.get("version"):
        model = {**card, **model}
    rows = [
        (name, f"<code>{esc(model[name])}</code>")
        for name in CARD_FIELDS
        if model.get(name) not in (None, "")
    ]
    rows.append(("demo weights", "yes" if model.get("demo") else "no"))
    metrics = model.get("metrics") or {}
    for name, value in list(metrics.items())[:8]:
        rows.append((f"metric: {name}", esc(value)))
    return f'<section id="model"><h2>Model card</h2>{_facts(rows)}</section>'


def _timings_section(verdict: dict[str, Any]) -> str:
    timings = verdict.get("timings") or {}
    rows = "".join(
        f'<tr><td>{esc(name)}</td><td class="num">{float(value):.3f} s</td></tr>'
        for name, value in timings.items()
        if isinstance(value, int | float)
    )
    return (
        f'<section id="timings"><h2>Timings</h2><table><tbody>{rows}</tbody></table>'
        f'<p class="muted">Judged at {esc(verdict.get("created_at"))}.</p></section>'
    )


def _footer(check: Check) -> str:
    return (
        f'Check <code>{esc(check.id)}</code> · <a href="/v1/checks/{esc(check.id)}">JSON</a> · '
        "Verdicts estimate; they are not proof."
    )


def report_page(check: Check, thumbs: Sequence[Thumbnail], active_card: dict[str, Any] | None) -> str:
    """The whole report page of ``check`` (with its verdict loaded)."""
    subtitle = f"report of check {check.id}"
    if check.status == CheckStatus.FAILED:
        body = (
            f'<section class="verdict failed"><span class="label">failed</span>'
            f"<h1>{esc(HEADLINES[Label.FAILED])}</h1>"
            f'<p class="reason">{esc(check.error_message)} '
            f'<span class="muted">({esc(check.error_code)})</span></p>'
            f"{_facts([('source', _source(check))])}</section>"
        )
        return page("Unmask: check failed", body, subtitle=subtitle, footer=_footer(check))
    if check.verdict is None:
        body = (
            f'<section class="verdict"><span class="label">{esc(check.status)}</span>'
            f"<h1>This check is still running.</h1>"
            f'<p class="reason">{esc(check.frames_analyzed)} frames analysed so far; this page reloads '
            f"every {REFRESH_S} s.</p></section>"
        )
        return page("Unmask: checking…", body, subtitle=subtitle, footer=_footer(check), refresh_s=REFRESH_S)
    verdict = check.verdict.payload
    timeline = verdict.get("timeline") or []
    body = "".join(
        [
            _verdict_section(check, verdict),
            _chart_section(verdict),
            _faces_section(thumbs, timeline),
            _purified_section(thumbs, timeline),
            _model_section(verdict, active_card),
            _timings_section(verdict),
        ]
    )
    title = f"Unmask: {verdict.get('label', 'verdict')}"
    return page(title, body, subtitle=subtitle, footer=_footer(check))


def not_found_page(check_id: str) -> str:
    """The 404 page of an unknown check id."""
    body = (
        '<section class="verdict"><span class="label">not found</span>'
        f'<h1>There is no check with this id.</h1><p class="reason"><code>{esc(check_id[:64])}</code></p>'
        '<p class="muted">Reports are kept as long as their check; the link may be mistyped.</p></section>'
    )
    return page("Unmask: no such check", body, subtitle="report")
