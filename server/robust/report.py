"""Write an ``eval_robustness`` result as JSON, a markdown table beside the paper's numbers, and a PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Gandhi & Jain's numbers (shared/reference/paper.md): slide 7 (clean), slide 13 (perturbed
# fakes), slide 16 (ResNet-18 with Lipschitz regularisation: average / best over λ), slide 21 (DIP).
PAPER: dict[str, dict[str, float | None]] = {
    "vgg16": {
        "accuracy": 99.7,
        "fake": 99.7,
        "real": 99.8,
        "fgsm_blackbox": 8.9,
        "fgsm_whitebox": 0.0,
        "cw_l2_blackbox": 26.6,
        "cw_l2_whitebox": 0.0,
    },
    "resnet18": {
        "accuracy": 93.2,
        "fake": 95.4,
        "real": 91.1,
        "fgsm_blackbox": 20.8,
        "fgsm_whitebox": 7.5,
        "cw_l2_blackbox": 4.6,
        "cw_l2_whitebox": 0.0,
    },
    "resnet18_lipschitz_avg": {
        "accuracy": None,
        "fake": 93.9,
        "real": None,
        "fgsm_blackbox": 31.5,
        "fgsm_whitebox": 12.5,
        "cw_l2_blackbox": 14.3,
        "cw_l2_whitebox": 0.5,
    },
    "resnet18_lipschitz_best": {
        "accuracy": None,
        "fake": 99.3,
        "real": None,
        "fgsm_blackbox": 53.2,
        "fgsm_whitebox": 26.5,
        "cw_l2_blackbox": 19.8,
        "cw_l2_whitebox": 2.2,
    },
}
PAPER_DIP = {"restore": 95.0, "retain": 98.0, "accuracy": 97.0, "n_fooled": 40, "n_other": 60}
# (row key, label, where the value sits in a detector's rows)
ROWS = (
    ("accuracy", "clean accuracy (real + fake)", ("clean", "accuracy")),
    ("real", "clean reals called real", ("clean", "real_recall")),
    ("fake", "unperturbed fakes called fake", ("clean", "fake_recall")),
    ("fgsm_blackbox", "FGSM black-box", ("fgsm_blackbox", "fake_recall")),
    ("fgsm_whitebox", "FGSM white-box", ("fgsm_whitebox", "fake_recall")),
    ("cw_l2_blackbox", "CW-L2 black-box", ("cw_l2_blackbox", "fake_recall")),
    ("cw_l2_whitebox", "CW-L2 white-box", ("cw_l2_whitebox", "fake_recall")),
)


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def _paper(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}"


def _ours(result: dict[str, Any], name: str, where: tuple[str, str]) -> float | None:
    row = result["detectors"].get(name, {}).get(where[0])
    return None if row is None else row.get(where[1])


def detector_table(result: dict[str, Any]) -> list[str]:
    """The paper's table: our detectors' percentages beside the paper's."""
    lip = "lipschitz" in result["detectors"]
    lines = [
        "| condition | ours: default | ours: Lipschitz | paper VGG-16 | paper ResNet-18 | "
        "paper ResNet-18 + Lipschitz (avg / best λ) |",
        "|---|---|---|---|---|---|",
    ]
    for key, label, where in ROWS:
        p = PAPER
        lines.append(
            f"| {label} | {_pct(_ours(result, 'default', where))} | "
            f"{_pct(_ours(result, 'lipschitz', where)) if lip else 'not run'} | {_paper(p['vgg16'][key])} | "
            f"{_paper(p['resnet18'][key])} | {_paper(p['resnet18_lipschitz_avg'][key])} / "
            f"{_paper(p['resnet18_lipschitz_best'][key])} |"
        )
    return lines


def _video_line(v: dict[str, Any] | None) -> list[str]:
    if not v:
        return []
    return [
        "",
        f"Per video: {_pct(v['with_1_flag'])} % of the {v['n']} clean videos have at least one flagged crop "
        f"and {_pct(v['with_2_flags'])} % at least two ({v['crops_per_video']} crops per video here; the "
        "service samples 2 frames/s and calls a video tampered on one suspicious frame).",
    ]


def tamper_table(tamper: dict[str, Any]) -> list[str]:
    """Detection rate of the tamper check per attack."""
    c = tamper["clean"]
    lines = [
        f"Operating threshold {tamper['threshold']:.4f} (`tamper.json`, fitted on other videos for a "
        f"per-frame FPR ≤ {tamper['target_fpr']:.0%}); "
        f"on these clean crops FPR = {_pct(c['fpr'])} % (reals {_pct(c['fpr_real'])} %, "
        f'fakes {_pct(c["fpr_fake"])} %, n = {c["n"]}). "TPR @ 5 % FPR here" re-reads the threshold '
        f"from these clean crops (FPR {_pct(c['oracle_fpr'])} %).",
        *_video_line(c.get("videos")),
        "",
        "| attack | box | ε | n | detector fooled | TPR (operating threshold) | TPR @ 5 % FPR here | "
        "TPR among fooled | evaded (fooled and not flagged) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in tamper["attacks"].values():
        eps = "—" if row["eps"] is None else f"{row['eps']:g}"
        lines.append(
            f"| {row['attack']} | {row['box']} | {eps} | {row['n']} | {_pct(row['fooled'])} | "
            f"{_pct(row['tpr'])} | {_pct(row['tpr_oracle'])} | {_pct(row['tpr_fooled'])} | "
            f"{_pct(row['evaded'])} |"
        )
    return lines


def purification_lines(p: dict[str, Any]) -> list[str]:
    """Restore / retain rates beside the paper's 95 % / 98 %."""
    if "skipped" in p:
        return [f"Not run: {p['skipped']}."]
    by = ", ".join(f"{k} {_pct(v)} %" for k, v in p["restore_by_attack"].items())
    return [
        "| measure | ours | paper (100-image subsample) |",
        "|---|---|---|",
        f'| fooled fakes restored to "fake" | {_pct(p["restore_rate"])} % '
        f"({p['restored']}/{p['n_fooled']}) | {PAPER_DIP['restore']:.0f} % (38/40) |",
        f"| other crops still right | {_pct(p['retain_rate'])} % ({p['retained']}/{p['n_other']}: "
        f"reals {_pct(p['retain_real'])} %, fakes {_pct(p['retain_fake'])} %) | "
        f"{PAPER_DIP['retain']:.0f} % (59/60) |",
        f"| accuracy on the subsample | {_pct(p['accuracy'])} % | {PAPER_DIP['accuracy']:.0f} % |",
        "",
        f"Preset `{p['preset']}` (config {p['config_version']}), {p['iterations']} iterations, "
        f"{p['seconds_per_crop']} s per crop. Restored by attack: {by}.",
    ]


def markdown(result: dict[str, Any]) -> str:
    """The human-readable report."""
    m, d, mach = result["model"], result["data"], result["machine"]
    lines = [
        "# Robustness evaluation",
        "",
        f"Detector `{m['id']}` v{m['version']} ({m['architecture']}, threshold {m['threshold']:.4f}); "
        f"data `{d['path']}`: {d['n_real']} real and {d['n_fake']} fake face crops (every {d['every']}th "
        "frame). Decisions use the card's calibrated P(fake) and threshold. Percentages are fake recall "
        "unless the row says otherwise.",
        "",
        f"Ran in {result['seconds']['total']:.0f} s on {mach['cpu_count']} CPU(s), "
        f"{mach['torch_threads']} torch thread(s); load average {mach['load_avg']} at the start, "
        f"{mach['load_avg_end']} at the end.",
        "",
        "## The paper's table",
        "",
        *detector_table(result),
    ]
    models = result.get("models", {})
    if "substitute" in models:
        s = models["substitute"]
        lines += [
            "",
            f"Black-box attacks were crafted on `{s['id']}` ({s['architecture']} {s['arch_kwargs']}) "
            "and transferred unchanged.",
        ]
    cw = result["config"]["cw"]
    lines += [
        "",
        f"FGSM ε = {result['config']['eps']}; CW-L2 κ = {cw['confidence']}, {cw['max_steps']} steps × "
        f"{cw['search_steps']} searches on {result['config']['cw_n']} fakes (paper: κ = 200, 1000 × 5).",
    ]
    tamper = result.get("tamper", {})
    lines += ["", "## Tamper check", ""]
    lines += [f"Not run: {tamper['skipped']}."] if "skipped" in tamper else tamper_table(tamper)
    if "cost" in result:
        c = result["cost"]
        lines += [
            "",
            "## Per-frame cost on the CPU",
            "",
            f"Detector {c['detector_ms']} ms, tamper check {c['tamper_ms']} ms per one-face frame "
            f"(median of {c['frames']} frames, {c['torch_threads']} thread(s)): **{c['ratio']}×** the "
            f"detector's own cost (ratio of means {c['ratio_of_means']}×; target ≤ 3×).",
        ]
    if "purification" in result:
        lines += ["", "## DIP purification", "", *purification_lines(result["purification"])]
    lines += ["", f"Files: `{Path(result['files']['json']).name}`, `{Path(result['files']['plot']).name}`."]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> Path:
    """Two panels: fake recall per condition (ours and the paper's), tamper TPR per attack."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5), dpi=100)  # no pyplot: no global state, no display
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2, 1)
    keys = [k for k, _, _ in ROWS[2:]]
    series = [("ours: default", [_ours(result, "default", w) for _, _, w in ROWS[2:]], 100)]
    if "lipschitz" in result["detectors"]:
        series.append(("ours: Lipschitz", [_ours(result, "lipschitz", w) for _, _, w in ROWS[2:]], 100))
    series += [
        ("paper ResNet-18", [PAPER["resnet18"][k] for k in keys], 1),
        ("paper ResNet-18 + Lipschitz (avg)", [PAPER["resnet18_lipschitz_avg"][k] for k in keys], 1),
    ]
    width = 0.8 / len(series)
    for i, (label, values, scale) in enumerate(series):
        xs = [j + i * width for j in range(len(keys))]
        ax.bar(xs, [0 if v is None else v * scale for v in values], width, label=label)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))])
    ax.set_xticklabels(["clean", "FGSM bb", "FGSM wb", "CW bb", "CW wb"])
    ax.set(ylabel="fakes called fake (%)", ylim=(0, 105), title="Detector accuracy on perturbed fakes")
    ax.legend(fontsize=7)
    ax2 = fig.add_subplot(1, 2, 2)
    attacks = result.get("tamper", {}).get("attacks", {})
    if attacks:
        names = list(attacks)
        ax2.barh(names, [100 * attacks[n]["tpr"] for n in names], label="flagged (TPR)")
        ax2.barh(
            names,
            [100 * attacks[n]["evaded"] for n in names],
            label="evaded (fooled, not flagged)",
            alpha=0.8,
        )
        ax2.axvline(95, ls="--", c="grey", lw=1)
        ax2.set(xlim=(0, 100), xlabel="% of perturbed fakes", title="Tamper check")
        ax2.tick_params(axis="y", labelsize=7)
        ax2.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def write_report(result: dict[str, Any], out_dir: str | Path) -> dict[str, str]:
    """Write eval_robustness.json, .md and .png into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "json": out / "eval_robustness.json",
        "markdown": out / "eval_robustness.md",
        "plot": out / "eval_robustness.png",
    }
    result["files"] = {k: str(v) for k, v in files.items()}
    plot(result, files["plot"])
    files["markdown"].write_text(markdown(result))
    files["json"].write_text(json.dumps(result, indent=2, default=float) + "\n")
    return result["files"]
