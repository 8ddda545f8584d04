"""Detector evaluation: metrics on P(fake) scores (accuracy, AUROC, per-class precision and
recall, expected calibration error, the threshold for a target false-positive rate), the
``evaluate`` entry point over image or video folders, and JSON/markdown/PNG reports.

Label 1 is "fake" (positive), 0 is "real"; a crop is called fake when its score ≥ threshold.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ECE_BINS = 15  # Guo et al. 2017 use 15 equal-width bins; kept for comparability
DEFAULT_TARGET_FPR = 0.05


def _arrays(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(np.int64)
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.shape[0]} vs {y.shape[0]}")
    if s.size == 0:
        raise ValueError("no scores to evaluate")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return s, y


def _average_ranks(s: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(s.size, np.float64)
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], s.size]
    for a, b in zip(starts, ends, strict=True):
        ranks[order[a:b]] = (a + 1 + b) / 2.0
    return ranks


def auroc(scores: Any, labels: Any) -> float | None:
    """Area under the ROC curve by the Mann–Whitney rank statistic (ties count half);
    None when only one class is present."""
    s, y = _arrays(scores, labels)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(s)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) for "fake if score ≥ threshold", thresholds descending, from (0, 0)."""
    s, y = _arrays(scores, labels)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]  # end index of each distinct score
    tps = np.cumsum(y)[last].astype(np.float64)
    fps = (last + 1 - tps).astype(np.float64)
    n_pos, n_neg = max(1, int(y.sum())), max(1, int((1 - y).sum()))
    fpr = np.r_[0.0, fps / n_neg]
    tpr = np.r_[0.0, tps / n_pos]
    return fpr, tpr, np.r_[np.inf, s[last]]


def threshold_at_fpr(scores: Any, labels: Any, target_fpr: float) -> dict[str, float]:
    """The lowest threshold whose false-positive rate (on these labels) is ≤ ``target_fpr``,
    with the FPR and TPR it gives; above every real score when no lower one qualifies."""
    if not 0.0 <= target_fpr <= 1.0:
        raise ValueError(f"target_fpr must be in [0, 1], got {target_fpr}")
    fpr, tpr, thr = roc_curve(scores, labels)
    ok = np.flatnonzero(fpr <= target_fpr + 1e-12)
    k = int(ok[-1])  # fpr is non-decreasing, so the last qualifying point has the lowest threshold
    t = float(thr[k])
    if not np.isfinite(t):
        t = float(np.nextafter(np.max(np.asarray(scores, np.float64)), np.inf))
    return {"threshold": t, "fpr": float(fpr[k]), "tpr": float(tpr[k]), "target_fpr": float(target_fpr)}


def reliability_bins(probs: Any, labels: Any, n_bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Equal-width bins of P(fake): count, mean predicted P(fake) and observed fake rate per bin."""
    p, y = _arrays(probs, labels)
    if p.min() < 0 or p.max() > 1:
        raise ValueError("probabilities must lie in [0, 1]")
    idx = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    out = []
    for b in range(n_bins):
        m = idx == b
        n = int(m.sum())
        out.append(
            {
                "lo": b / n_bins,
                "hi": (b + 1) / n_bins,
                "count": n,
                "mean_prob": float(p[m].mean()) if n else 0.0,
                "fake_rate": float(y[m].mean()) if n else 0.0,
            }
        )
    return out


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = ECE_BINS) -> float:
    """ECE of P(fake): Σ_bins (n_b / N) · |observed fake rate − mean P(fake)|."""
    bins = reliability_bins(probs, labels, n_bins)
    total = sum(b["count"] for b in bins)
    return float(sum(b["count"] / total * abs(b["fake_rate"] - b["mean_prob"]) for b in bins))


def confusion(probs: Any, labels: Any, threshold: float) -> dict[str, int]:
    """Counts of true/false positives/negatives at ``threshold`` (fake = positive)."""
    p, y = _arrays(probs, labels)
    pred = p >= threshold
    return {
        "tp": int((pred & (y == 1)).sum()),
        "fp": int((pred & (y == 0)).sum()),
        "tn": int((~pred & (y == 0)).sum()),
        "fn": int((~pred & (y == 1)).sum()),
    }


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def compute_metrics(
    probs: Any,
    labels: Any,
    *,
    threshold: float = 0.5,
    target_fpr: float = DEFAULT_TARGET_FPR,
    n_bins: int = ECE_BINS,
) -> dict[str, Any]:
    """Accuracy, AUROC, per-class precision/recall, ECE, confusion and the threshold at ``target_fpr``."""
    p, y = _arrays(probs, labels)
    c = confusion(p, y, threshold)
    return {
        "n": int(y.size),
        "n_real": int((y == 0).sum()),
        "n_fake": int((y == 1).sum()),
        "threshold": float(threshold),
        "accuracy": (c["tp"] + c["tn"]) / y.size,
        "auroc": auroc(p, y),
        "precision": {"real": _ratio(c["tn"], c["tn"] + c["fn"]), "fake": _ratio(c["tp"], c["tp"] + c["fp"])},
        "recall": {"real": _ratio(c["tn"], c["tn"] + c["fp"]), "fake": _ratio(c["tp"], c["tp"] + c["fn"])},
        "ece": expected_calibration_error(p, y, n_bins) if p.min() >= 0 and p.max() <= 1 else None,
        "ece_bins": n_bins,
        "confusion": c,
        "at_target_fpr": threshold_at_fpr(p, y, target_fpr),
    }


def group_scores(probs: Any, labels: Any, groups: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Mean P(fake) and label per group (e.g. per video), groups in sorted order."""
    p, y = _arrays(probs, labels)
    names = sorted(set(groups))
    index = {g: i for i, g in enumerate(names)}
    gi = np.array([index[g] for g in groups])
    counts = np.bincount(gi, minlength=len(names))
    mean = np.bincount(gi, weights=p, minlength=len(names)) / counts
    label = np.zeros(len(names), np.int64)
    label[gi] = y
    return mean, label, names


# ---- reports -------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def markdown_report(metrics: dict[str, Any], title: str = "Detector evaluation") -> str:
    """A short human-readable summary of ``metrics`` (as returned by ``evaluate``)."""
    lines = [f"# {title}", ""]
    if "model" in metrics:
        m = metrics["model"]
        demo = " (demonstration model)" if m.get("demo") else ""
        lines += [f"Model: `{m.get('id')}` version {m.get('version')} ({m.get('architecture')}){demo}", ""]
    if "data" in metrics:
        lines += [f"Data: `{metrics['data']}`", ""]
    levels = [("frame" if metrics.get("level") == "frame" else "image", metrics)]
    if "video" in metrics:
        levels.append(("video", metrics["video"]))
    lines += [
        "| level | n (real/fake) | accuracy | AUROC | ECE | threshold | TPR @ FPR target |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in levels:
        t = m["at_target_fpr"]
        lines.append(
            f"| {name} | {m['n']} ({m['n_real']}/{m['n_fake']}) | {_fmt(m['accuracy'])} | "
            f"{_fmt(m['auroc'])} | "
            f"{_fmt(m['ece'])} | {_fmt(m['threshold'])} | {_fmt(t['tpr'])} at FPR {_fmt(t['fpr'])} "
            f"(threshold {_fmt(t['threshold'])}, target {t['target_fpr']}) |"
        )
    lines += ["", "| class | precision | recall |", "|---|---|---|"]
    for c in ("real", "fake"):
        lines.append(f"| {c} | {_fmt(metrics['precision'][c])} | {_fmt(metrics['recall'][c])} |")
    c = metrics["confusion"]
    lines += [
        "",
        f"Confusion at threshold {_fmt(metrics['threshold'])}: "
        f"TP {c['tp']}, FP {c['fp']}, TN {c['tn']}, FN {c['fn']}.",
    ]
    return "\n".join(lines) + "\n"


def _figure():  # type: ignore[no-untyped-def]
    """A matplotlib Figure on the Agg canvas, without touching pyplot's global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_roc(probs: Any, labels: Any, path: str | Path, title: str = "ROC") -> Path:
    """Write the ROC curve (with its AUROC) as a PNG."""
    fpr, tpr, _ = roc_curve(probs, labels)
    area = auroc(probs, labels)
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, lw=2, label=f"AUROC {_fmt(area)}")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set(
        xlabel="false-positive rate (real called fake)",
        ylabel="true-positive rate",
        title=title,
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return Path(path)


def plot_reliability(
    probs: Any, labels: Any, path: str | Path, n_bins: int = ECE_BINS, title: str = "Reliability"
) -> Path:
    """Write the reliability diagram (observed fake rate vs mean P(fake) per bin) as a PNG."""
    bins = reliability_bins(probs, labels, n_bins)
    ece = expected_calibration_error(probs, labels, n_bins)
    fig = _figure()
    ax = fig.add_subplot()
    width = 1.0 / n_bins
    full = [b for b in bins if b["count"]]
    ax.bar([b["lo"] for b in full], [b["fake_rate"] for b in full], width=width, align="edge", alpha=0.7,
           edgecolor="k", label="observed fake rate")  # fmt: skip
    ax.plot(
        [b["mean_prob"] for b in full], [b["fake_rate"] for b in full], "o", c="C1", label="bin mean P(fake)"
    )
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set(
        xlabel="predicted P(fake)",
        ylabel="fraction fake",
        title=f"{title} (ECE {ece:.3f})",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return Path(path)


def write_report(
    metrics: dict[str, Any], probs: Any, labels: Any, out_dir: str | Path, title: str = "Detector evaluation"
) -> dict[str, str]:
    """Write eval.json, eval.md, roc.png and reliability.png into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "eval.json",
        "markdown": out / "eval.md",
        "roc": out / "roc.png",
        "reliability": out / "reliability.png",
    }
    paths["json"].write_text(json.dumps(metrics, indent=2) + "\n")
    paths["markdown"].write_text(markdown_report(metrics, title))
    plot_roc(probs, labels, paths["roc"], title=f"ROC ({metrics.get('level', 'image')} level)")
    plot_reliability(probs, labels, paths["reliability"], metrics.get("ece_bins", ECE_BINS))
    return {k: str(v) for k, v in paths.items()}


# ---- the entry point -----------------------------------------------------------------------


def evaluate(
    model: Any,
    data: Any,
    *,
    out_dir: str | Path | None = None,
    threshold: float | None = None,
    target_fpr: float = DEFAULT_TARGET_FPR,
    every: int = 1,
    device: str = "auto",
    margin: float | None = None,
    video_level: bool | None = None,
) -> dict[str, Any]:
    """Score ``data`` with ``model`` and return (and optionally write) the metrics.

    ``model``: a checkpoint directory or a loaded ``Detector``. ``data``: an image folder
    (``real/``, ``fake/``), a video folder of the same layout (one crop of the largest face per
    ``every``-th frame, plus per-video metrics from mean scores), or a sequence of ``Item``
    (``video_level=True`` treats their groups as videos). ``threshold`` defaults to the card's.
    """
    from server.vision.datasets import CROP_MARGIN, is_video_folder, load_items, read_rgb
    from server.vision.detector import Detector

    det = model if isinstance(model, Detector) else Detector.load(model, device=device)
    size = tuple(det.card.input_size)
    if isinstance(data, str | Path):
        video = is_video_folder(data)
        items = load_items(data, size=size, every=every, margin=CROP_MARGIN if margin is None else margin)  # type: ignore[arg-type]
    else:
        items, video = list(data), bool(video_level)
    crops = [it.source if isinstance(it.source, np.ndarray) else read_rgb(it.source) for it in items]
    labels = np.array([max(it.label, 0) for it in items], np.int64)
    probs = det.predict(crops).astype(np.float64)
    thr = det.card.threshold if threshold is None else float(threshold)
    metrics = compute_metrics(probs, labels, threshold=thr, target_fpr=target_fpr)
    metrics["level"] = "frame" if video else "image"
    metrics["model"] = {
        "id": det.card.id,
        "version": det.card.version,
        "architecture": det.card.architecture,
        "demo": det.card.demo,
    }
    metrics["data"] = str(data) if isinstance(data, str | Path) else f"{len(items)} items"
    if video:
        vp, vy, _ = group_scores(probs, labels, [it.group for it in items])
        metrics["video"] = compute_metrics(vp, vy, threshold=thr, target_fpr=target_fpr)
    if out_dir is not None:
        metrics["files"] = write_report(metrics, probs, labels, out_dir)
        Path(metrics["files"]["json"]).write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
