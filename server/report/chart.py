"""The per-frame timeline as inline SVG: detector score, purified score and tamper score over time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from server.report.html import esc

WIDTH, HEIGHT = 900, 300
LEFT, RIGHT, TOP = 48, 16, 14
SCORE_H = 180  # the score panel; the tamper strip sits below it
TAMPER_TOP, TAMPER_H = 222, 44
AXIS_Y = TAMPER_TOP + TAMPER_H

SCORE_COLOUR = "#2b59c3"
PURIFIED_COLOUR = "#1f7a3a"
TAMPER_COLOUR = "#8a4b00"
SUSPICIOUS_COLOUR = "#b3261e"
NO_FACE_COLOUR = "#9aa3ae"


def _fmt(v: float) -> str:
    return f"{v:.1f}"


def _segments(points: list[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    """Runs of consecutive points with a value (a frame without a face breaks the line)."""
    runs: list[list[tuple[float, float]]] = [[]]
    for x, y in points:
        if y is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((x, y))
    return [r for r in runs if r]


def _ticks(duration: float) -> list[float]:
    steps = (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600)
    step = next((s for s in steps if duration / s <= 10), 1200)
    ticks, t = [], 0.0
    while t <= duration + 1e-9:
        ticks.append(t)
        t += step
    return ticks


def timeline_svg(
    timeline: Sequence[dict[str, Any]],
    *,
    threshold: float | None,
    tamper_threshold: float | None = None,
) -> str:
    """An accessible SVG chart (titles on every mark, so hovering explains it without JavaScript)."""
    duration = max([float(p.get("t") or 0.0) for p in timeline] + [0.0]) or 1.0
    plot_w = WIDTH - LEFT - RIGHT

    def x(t: float) -> float:
        return LEFT + plot_w * (t / duration)

    def y(score: float) -> float:
        return TOP + SCORE_H * (1.0 - max(0.0, min(1.0, score)))

    tampers = [float(p["tamper"]) for p in timeline if p.get("tamper") is not None]
    tamper_max = max([*tampers, (tamper_threshold or 0.0) * 1.25, 1e-9])
    out = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="chart-title" xmlns="http://www.w3.org/2000/svg">',
        '<title id="chart-title">Per-frame manipulation score and tamper score over time</title>',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{SCORE_H}" fill="#fbfcfd" stroke="#d8dde5"/>',
    ]
    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        out.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_fmt(y(v))}" y2="{_fmt(y(v))}" stroke="#eceff3"/>'
            f'<text x="{LEFT - 6}" y="{_fmt(y(v) + 4)}" font-size="11" text-anchor="end" fill="#5b6472">'
            f"{v:g}</text>"
        )
    out.append(
        f'<text x="12" y="{TOP + SCORE_H / 2}" font-size="11" fill="#5b6472" '
        f'transform="rotate(-90 12 {TOP + SCORE_H / 2})" text-anchor="middle">score</text>'
    )
    if threshold is not None:
        ty = _fmt(y(threshold))
        out.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{ty}" y2="{ty}" stroke="{SUSPICIOUS_COLOUR}" '
            f'stroke-dasharray="6 4"><title>decision threshold {threshold:.3f}</title></line>'
            f'<text x="{WIDTH - RIGHT - 4}" y="{_fmt(y(threshold) - 4)}" font-size="11" text-anchor="end" '
            f'fill="{SUSPICIOUS_COLOUR}">threshold {threshold:.2f}</text>'
        )
    # Suspicious (perturbed) frames: a shaded column through the score panel.
    for p in timeline:
        tam = p.get("tamper")
        if tam is not None and tamper_threshold is not None and tam >= tamper_threshold:
            cx = x(float(p["t"]))
            out.append(
                f'<rect x="{_fmt(cx - 5)}" y="{TOP}" width="10" height="{SCORE_H}" '
                f'fill="{SUSPICIOUS_COLOUR}" opacity="0.12">'
                f"<title>t={float(p['t']):.2f} s: adversarial perturbation found</title></rect>"
            )
    points = [(x(float(p["t"])), None if p.get("score") is None else y(float(p["score"]))) for p in timeline]
    for run in _segments(points):
        coords = " ".join(f"{_fmt(a)},{_fmt(b)}" for a, b in run)
        out.append(f'<polyline points="{coords}" fill="none" stroke="{SCORE_COLOUR}" stroke-width="2"/>')
    for p in timeline:
        t = float(p["t"])
        cx = _fmt(x(t))
        score, purified = p.get("score"), p.get("purified_score")
        if score is None:
            out.append(
                f'<line x1="{cx}" x2="{cx}" y1="{TOP + SCORE_H - 6}" y2="{TOP + SCORE_H}" '
                f'stroke="{NO_FACE_COLOUR}" stroke-width="2"><title>t={t:.2f} s: no face</title></line>'
            )
            continue
        cy = _fmt(y(float(score)))
        out.append(
            f'<circle cx="{cx}" cy="{cy}" r="3.5" fill="{SCORE_COLOUR}">'
            f"<title>t={t:.2f} s: score {float(score):.3f}</title></circle>"
        )
        if purified is not None:
            py = _fmt(y(float(purified)))
            out.append(
                f'<line x1="{cx}" x2="{cx}" y1="{cy}" y2="{py}" stroke="{PURIFIED_COLOUR}" '
                f'stroke-dasharray="3 3"/>'
                f'<rect x="{_fmt(x(t) - 4)}" y="{_fmt(y(float(purified)) - 4)}" width="8" height="8" '
                f'fill="#fff" stroke="{PURIFIED_COLOUR}" stroke-width="2">'
                f"<title>t={t:.2f} s: after purification {float(purified):.3f}</title></rect>"
            )
    out.append(
        f'<rect x="{LEFT}" y="{TAMPER_TOP}" width="{plot_w}" height="{TAMPER_H}" '
        f'fill="#fbfcfd" stroke="#d8dde5"/>'
        f'<text x="{LEFT - 6}" y="{TAMPER_TOP + TAMPER_H / 2 + 4}" font-size="11" text-anchor="end" '
        f'fill="#5b6472">tamper</text>'
    )
    if tamper_threshold is not None:
        ty = _fmt(TAMPER_TOP + TAMPER_H * (1 - tamper_threshold / tamper_max))
        out.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{ty}" y2="{ty}" stroke="{SUSPICIOUS_COLOUR}" '
            f'stroke-dasharray="4 3"><title>tamper threshold {tamper_threshold:.3g}</title></line>'
        )
    bar_w = max(2.0, min(10.0, plot_w / max(1, len(timeline)) * 0.6))
    for p in timeline:
        tam = p.get("tamper")
        if tam is None:
            continue
        height = TAMPER_H * min(1.0, float(tam) / tamper_max)
        hot = tamper_threshold is not None and tam >= tamper_threshold
        out.append(
            f'<rect x="{_fmt(x(float(p["t"])) - bar_w / 2)}" y="{_fmt(TAMPER_TOP + TAMPER_H - height)}" '
            f'width="{_fmt(bar_w)}" height="{_fmt(height)}" '
            f'fill="{SUSPICIOUS_COLOUR if hot else TAMPER_COLOUR}" opacity="{1 if hot else 0.55}">'
            f"<title>t={float(p['t']):.2f} s: tamper score {float(tam):.3g}</title></rect>"
        )
    for t in _ticks(duration):
        tx = _fmt(x(t))
        out.append(
            f'<line x1="{tx}" x2="{tx}" y1="{AXIS_Y}" y2="{AXIS_Y + 4}" stroke="#5b6472"/>'
            f'<text x="{tx}" y="{AXIS_Y + 16}" font-size="11" text-anchor="middle" '
            f'fill="#5b6472">{t:g} s</text>'
        )
    if not timeline:
        out.append(
            f'<text x="{LEFT + plot_w / 2}" y="{TOP + SCORE_H / 2}" text-anchor="middle" fill="#5b6472">'
            "no frames were analysed</text>"
        )
    out.append("</svg>")
    return "".join(out)


def legend() -> str:
    """The chart's key, as HTML."""
    items = (
        (SCORE_COLOUR, "detector score per frame"),
        (PURIFIED_COLOUR, "score after purification"),
        (SUSPICIOUS_COLOUR, "threshold / perturbed frame"),
        (TAMPER_COLOUR, "tamper score"),
        (NO_FACE_COLOUR, "no face"),
    )
    spans = "".join(f'<span><i class="sw" style="background:{c}"></i>{esc(text)}</span>' for c, text in items)
    return f'<div class="legend">{spans}</div>'
