"""The parts of ``unmask eval-robustness``: detectors under test, attack rows, tamper check,
its per-frame cost, and DIP purification of a stratified subsample."""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from server.analysis.verdict import is_tampered
from server.robust.adaptive import TamperAwarePGD, squeezer_transforms
from server.robust.attacks import CWL2, EOTPGD, FGSM, PGD, Attack
from server.robust.calibrate import evenly, quantize
from server.robust.dip import Purifier
from server.robust.dip_prefilter import resize
from server.robust.purification import purifier_config
from server.robust.purify_calibration import PURIFY_FILENAME, PurifiedThreshold
from server.robust.tamper.score import CALIBRATION_BATCH, TamperScorer
from server.vision.calibration import apply_calibration
from server.vision.card import ModelCard
from server.vision.detector import Detector
from server.vision.evaluate import auroc

if TYPE_CHECKING:
    from server.robust.evaluate import RobustnessConfig

# False-positive rate at which "TPR @ 5 % FPR" re-reads the tamper threshold from held-out clean
# crops (issue #4: ≥ 95 % TPR at ≤ 5 % FPR), whatever rate the calibration targets.
REPORT_FPR = 0.05
# An attack's adversarial fakes, which of them the detector calls real, and which of those it had
# right unperturbed.
Pool = tuple[torch.Tensor, np.ndarray, np.ndarray]
# Iterations between the points of the purification curve (restore / retain along the fit).
CURVE_EVERY = 100
# Forward passes are batched this large when only scoring (no autograd, small crops).
SCORE_BATCH = 128
# Self-blended pseudo-fakes per real crop when training a substitute / Lipschitz detector,
# as models/build_default.py trains the default one.
TRAIN_SBI_RATIO = 0.6
# Epochs the learning-rate schedule of a quick detector spans (``train_steps`` cuts it short).
TRAIN_EPOCHS = 3
# Samples per batch the Lipschitz penalty is estimated on (build_default.py's variant).
LIPSCHITZ_BATCH = 8


@dataclass
class Target:
    """A detector under evaluation: [0, 1] pixels → raw logits, and its card's decision rule."""

    name: str
    net: nn.Module
    card: ModelCard
    path: Path

    @classmethod
    def load(cls, name: str, model_dir: str | Path) -> Target:
        """Load a checkpoint directory on the CPU."""
        det = Detector.load(model_dir, device="cpu")
        return cls(name, det.pixel_model(), det.card, Path(model_dir))

    def prob(self, images: torch.Tensor) -> np.ndarray:
        """Calibrated P(fake) per image."""
        if not len(images):
            return np.zeros(0, np.float32)
        with torch.no_grad():
            logits = torch.cat([self.net(b) for b in images.split(SCORE_BATCH)])
        return apply_calibration(logits.numpy(), self.card.calibration)

    def says_fake(self, images: torch.Tensor) -> np.ndarray:
        """The card's decision per image (P(fake) ≥ threshold)."""
        return self.prob(images) >= self.card.threshold

    @property
    def offset(self) -> float:
        """The raw logit margin Z_fake − Z_real at the card's threshold (0 for isotonic: argmax)."""
        cal, thr = self.card.calibration, min(max(self.card.threshold, 1e-6), 1 - 1e-6)
        logit = math.log(thr / (1 - thr))
        if cal["type"] == "temperature":
            return float(cal["temperature"]) * logit
        return logit if cal["type"] == "none" else 0.0

    def describe(self) -> dict[str, Any]:
        """Identity of the checkpoint for the report."""
        c = self.card
        return {
            "id": c.id,
            "version": c.version,
            "architecture": c.architecture,
            "arch_kwargs": c.arch_kwargs,
            "threshold": c.threshold,
            "path": str(self.path),
            "notes": c.notes,
        }


def adversarial(attack: Attack, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``attack`` over chunks of the batch, rounded to 8 bits as a decoded frame would be."""
    parts = [
        attack(x, y)
        for x, y in zip(images.split(CALIBRATION_BATCH), labels.split(CALIBRATION_BATCH), strict=True)
    ]
    return quantize(torch.cat(parts)) if parts else images[:0]


def _norms(adv: torch.Tensor, clean: torch.Tensor) -> dict[str, float]:
    diff = (adv - clean).flatten(1)
    return {"linf_mean": float(diff.abs().amax(dim=1).mean()), "l2_mean": float(diff.norm(dim=1).mean())}


def _recall_row(target: Target, adv: torch.Tensor, clean: torch.Tensor) -> dict[str, Any]:
    """Fake recall on perturbed fakes, with the same fakes' clean recall and the perturbation size."""
    return {
        "n": len(adv),
        "fake_recall": float(target.says_fake(adv).mean()),
        "clean_fake_recall": float(target.says_fake(clean).mean()),
        **_norms(adv, clean),
    }


def detector_rows(
    target: Target,
    reals: torch.Tensor,
    fakes: torch.Tensor,
    cw_idx: torch.Tensor,
    blackbox: dict[str, torch.Tensor],
    cfg: RobustnessConfig,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The paper's rows for one detector, and its white-box adversarial fakes."""
    p_real, p_fake = target.prob(reals), target.prob(fakes)
    thr = target.card.threshold
    probs = np.r_[p_real, p_fake]
    labels = np.r_[np.zeros(len(p_real)), np.ones(len(p_fake))]
    clean = {
        "n_real": len(p_real),
        "n_fake": len(p_fake),
        "accuracy": float(((probs >= thr) == labels).mean()),
        "auroc": auroc(probs, labels),
        "fake_recall": float((p_fake >= thr).mean()),
        "real_recall": float((p_real < thr).mean()),
    }
    ones = torch.ones(len(fakes), dtype=torch.long)
    cw = CWL2(target.net, seed=cfg.seed, **cfg.cw)  # type: ignore[arg-type]
    white = {
        "fgsm": adversarial(FGSM(target.net, cfg.eps), fakes, ones),
        "cw_l2": adversarial(cw, fakes[cw_idx], ones[cw_idx]),
    }
    rows: dict[str, Any] = {
        "clean": clean,
        "fgsm_whitebox": _recall_row(target, white["fgsm"], fakes),
        "cw_l2_whitebox": _recall_row(target, white["cw_l2"], fakes[cw_idx]),
    }
    if "fgsm" in blackbox:
        rows["fgsm_blackbox"] = _recall_row(target, blackbox["fgsm"], fakes)
        rows["cw_l2_blackbox"] = _recall_row(target, blackbox["cw_l2"], fakes[cw_idx])
    return rows, white


def _scores(scorer: TamperScorer, net: nn.Module, images: torch.Tensor) -> np.ndarray:
    """Tamper scores of a batch, ``CALIBRATION_BATCH`` crops per forward."""
    parts = [scorer.score(net, b) for b in images.split(CALIBRATION_BATCH)]
    return np.concatenate(parts) if parts else np.zeros(0)


def _attack_sets(
    target: Target,
    scorer: TamperScorer,
    fakes: torch.Tensor,
    cw_idx: torch.Tensor,
    white: dict[str, torch.Tensor],
    blackbox: dict[str, torch.Tensor],
    cfg: RobustnessConfig,
) -> dict[str, tuple[dict[str, Any], torch.Tensor, torch.Tensor]]:
    """name → (description, adversarial fakes, the clean fakes they came from)."""
    net, n = target.net, len(fakes)
    ones, zeros = torch.ones(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)
    sets: dict[str, tuple[dict[str, Any], torch.Tensor, torch.Tensor]] = {}
    for eps in cfg.tamper_eps:
        fgsm = white["fgsm"] if eps == cfg.eps else adversarial(FGSM(net, eps), fakes, ones)
        sets[f"fgsm_{eps:g}"] = ({"attack": "FGSM", "eps": eps, "box": "white"}, fgsm, fakes)
        pgd = PGD(net, eps, steps=cfg.pgd_steps, norm="linf", seed=cfg.seed)
        sets[f"pgd_{eps:g}"] = (
            {"attack": f"PGD-{cfg.pgd_steps} L∞", "eps": eps, "box": "white"},
            adversarial(pgd, fakes, ones),
            fakes,
        )
    sets["cw_l2_whitebox"] = ({"attack": "CW-L2", "eps": None, "box": "white"}, white["cw_l2"], fakes[cw_idx])
    if "fgsm" in blackbox:
        sets["fgsm_blackbox"] = ({"attack": "FGSM", "eps": cfg.eps, "box": "black"}, blackbox["fgsm"], fakes)
        sets["cw_l2_blackbox"] = (
            {"attack": "CW-L2", "eps": None, "box": "black"},
            blackbox["cw_l2"],
            fakes[cw_idx],
        )
    eot_idx = torch.tensor(evenly(range(n), int(cfg.eot["n"])), dtype=torch.long)
    steps = int(cfg.eot["steps"])
    eot = EOTPGD(
        net,
        cfg.eps,
        2.5 * cfg.eps / steps,
        steps,
        samples=int(cfg.eot["samples"]),
        targeted=True,
        seed=cfg.seed,
    )
    sets["eot_pgd"] = (
        {"attack": "EOT-PGD (Hussain transforms + JPEG)", "eps": cfg.eps, "box": "white"},
        adversarial(eot, fakes[eot_idx], zeros[eot_idx]),
        fakes[eot_idx],
    )
    ad_idx = torch.tensor(evenly(range(n), int(cfg.adaptive["n"])), dtype=torch.long)
    steps = int(cfg.adaptive["steps"])
    squeeze = EOTPGD(
        net,
        cfg.eps,
        2.5 * cfg.eps / steps,
        steps,
        transforms=squeezer_transforms(scorer.config),
        desired_prob=None,
        targeted=True,
        seed=cfg.seed,
    )
    sets["adaptive_eot_squeezers"] = (
        {"attack": "adaptive: EOT-PGD through the squeezers (BPDA)", "eps": cfg.eps, "box": "white+defence"},
        adversarial(squeeze, fakes[ad_idx], zeros[ad_idx]),
        fakes[ad_idx],
    )
    aware = TamperAwarePGD(
        net, scorer, cfg.eps, steps=steps, lam=float(cfg.adaptive["lam"]), offset=target.offset, seed=cfg.seed
    )
    sets["adaptive_tamper_pgd"] = (
        {
            "attack": "adaptive: PGD on detector loss + λ·tamper score (BPDA)",
            "eps": cfg.eps,
            "box": "white+defence",
        },
        adversarial(aware, fakes[ad_idx], zeros[ad_idx]),
        fakes[ad_idx],
    )
    return sets


def tamper_section(
    target: Target,
    scorer: TamperScorer,
    reals: torch.Tensor,
    fakes: torch.Tensor,
    cw_idx: torch.Tensor,
    white: dict[str, torch.Tensor],
    blackbox: dict[str, torch.Tensor],
    cfg: RobustnessConfig,
    groups: Sequence[str] | None = None,
) -> tuple[dict[str, Any], dict[str, tuple[torch.Tensor, np.ndarray]]]:
    """Clean FPR (per crop and, with ``groups``, per video) and per-attack detection rates;
    and each attack's (adversarial fakes, fooled mask)."""
    s_real, s_fake = _scores(scorer, target.net, reals), _scores(scorer, target.net, fakes)
    s_clean = np.r_[s_real, s_fake]
    thr = scorer.threshold
    # The operating point: the threshold that flags REPORT_FPR of these (held-out) clean crops.
    oracle = float(np.quantile(s_clean, 1 - REPORT_FPR, method="higher"))
    section: dict[str, Any] = {
        "threshold": thr,
        "target_fpr": scorer.target_fpr,
        "method": scorer.method,
        "features": list(scorer.feature_names),
        "calibration_stats": scorer.stats,
        "clean": {
            "n": len(s_clean),
            "fpr": float((s_clean > thr).mean()),
            "fpr_real": float((s_real > thr).mean()),
            "fpr_fake": float((s_fake > thr).mean()),
            "oracle_target_fpr": REPORT_FPR,
            "oracle_threshold": oracle,
            "oracle_fpr": float((s_clean > oracle).mean()),
        },
        "attacks": {},
    }
    if groups is not None:
        section["clean"]["videos"] = _video_alarms(s_clean > thr, groups)
    pools: dict[str, Pool] = {}
    for name, (meta, adv, src) in _attack_sets(target, scorer, fakes, cw_idx, white, blackbox, cfg).items():
        t0 = time.perf_counter()
        fooled = ~target.says_fake(adv)
        # Fooled by the attack itself: the detector had the unperturbed source right.
        turned = fooled & target.says_fake(src)
        s = _scores(scorer, target.net, adv)
        flagged = s > thr
        section["attacks"][name] = {
            **meta,
            "n": len(adv),
            "fooled": float(fooled.mean()),
            "fooled_by_attack": float(turned.mean()),
            "tpr": float(flagged.mean()),
            "tpr_oracle": float((s > oracle).mean()),
            "tpr_fooled": float(flagged[fooled].mean()) if fooled.any() else None,
            "evaded": float((fooled & ~flagged).mean()),
            "score_seconds": round(time.perf_counter() - t0, 2),
        }
        pools[name] = (adv, fooled, turned)
    return section, pools


def _video_alarms(flagged: np.ndarray, groups: Sequence[str]) -> dict[str, Any]:
    """How many clean videos carry at least one / two flagged crops, and how many the service's
    rule (server/analysis/verdict.py) would label tampered from their count."""
    per: dict[str, int] = {}
    crops: dict[str, int] = {}
    for g, f in zip(groups, flagged, strict=True):
        per[g] = per.get(g, 0) + int(f)
        crops[g] = crops.get(g, 0) + 1
    n = len(per)
    return {
        "n": n,
        "with_1_flag": sum(v >= 1 for v in per.values()) / n if n else None,
        "with_2_flags": sum(v >= 2 for v in per.values()) / n if n else None,
        "labelled_tampered": sum(is_tampered(v, crops[g]) for g, v in per.items()) / n if n else None,
        "crops_per_video": round(len(groups) / n, 1) if n else None,
    }


def cost_section(
    model_dir: str | Path, scorer: TamperScorer, crops: Sequence[np.ndarray], frames: int
) -> dict[str, Any]:
    """Per-frame cost of the tamper check vs the detector's, one face per frame, as ``score_frame``."""
    det = Detector.load(model_dir, device="cpu")
    pixel_model = det.pixel_model()
    picked = evenly(crops, frames)
    det_t, tam_t = [], []
    for i, crop in enumerate([picked[0], *picked]):  # the first one warms up
        t0 = time.perf_counter()
        logits = det.logits([crop])
        t1 = time.perf_counter()
        pixels = torch.from_numpy(crop[None]).permute(0, 3, 1, 2).float().div_(255.0)
        scorer.score(pixel_model, pixels, logits=torch.from_numpy(logits))
        t2 = time.perf_counter()
        if i:
            det_t.append(t1 - t0)
            tam_t.append(t2 - t1)
    d, t = float(np.median(det_t)), float(np.median(tam_t))
    return {
        "frames": len(det_t),
        "detector_ms": round(d * 1e3, 2),
        "tamper_ms": round(t * 1e3, 2),
        "ratio": round(t / d, 2),
        "ratio_of_means": round(float(np.mean(tam_t) / np.mean(det_t)), 2),
        "torch_threads": torch.get_num_threads(),
    }


def _pick_fooled(pools: dict[str, Pool], n: int) -> list[tuple[str, int]]:
    """Up to ``n`` (attack, index) pairs of fooled fakes, taken round-robin over the attacks."""
    queues = {k: [int(i) for i in np.flatnonzero(fooled)] for k, (_, fooled, _) in pools.items()}
    queues = {k: evenly(q, n) for k, q in queues.items() if q}
    out: list[tuple[str, int]] = []
    while len(out) < n and any(queues.values()):
        for k, q in queues.items():
            if q and len(out) < n:
                out.append((k, q.pop(0)))
    return out


def purification_section(
    target: Target,
    reals: torch.Tensor,
    fakes: torch.Tensor,
    pools: dict[str, Pool],
    cfg: RobustnessConfig,
) -> dict[str, Any]:
    """DIP-purify fooled fakes and as many other crops; how many each group gets right afterwards."""
    fooled = _pick_fooled(pools, cfg.purify_n)
    n_real = cfg.purify_n // 2
    right_fakes = np.flatnonzero(target.says_fake(fakes))
    not_fooled = [(k, int(i)) for k, (_, f, _) in pools.items() for i in np.flatnonzero(~f)]
    other_fakes = [("clean", int(i)) for i in evenly(right_fakes, (cfg.purify_n - n_real + 1) // 2)]
    other_fakes += evenly(not_fooled, cfg.purify_n - n_real - len(other_fakes))
    images = [pools[k][0][i] for k, i in fooled]
    images += [reals[int(i)] for i in evenly(range(len(reals)), n_real)]
    n_other_real = len(images) - len(fooled)
    images += [fakes[i] if k == "clean" else pools[k][0][i] for k, i in other_fakes]
    if not images:
        return {"skipped": "nothing to purify"}
    batch = torch.stack(images)
    labels = np.r_[np.ones(len(fooled)), np.zeros(n_other_real), np.ones(len(other_fakes))].astype(bool)
    config = purifier_config(cfg.purifier, iterations=cfg.purifier_iterations)
    # The cut a worker applies to purified crops: purify.json when it belongs to these weights
    # and this purifier config (fitted on purified training crops), else the card's.
    calibration = PurifiedThreshold.load_for(target.path, target.card.weights_sha256, config.version())
    threshold = target.card.threshold if calibration is None else calibration.threshold
    k = len(fooled)
    seen: dict[int, dict[int, float]] = {}

    def trace(it: int, idx: list[int], outputs: torch.Tensor) -> None:
        if it % CURVE_EVERY == 0:
            out = resize(outputs.float().cpu(), tuple(batch.shape[-2:])).clamp(0, 1)
            seen.setdefault(it, {}).update(zip(idx, target.prob(quantize(out)).tolist(), strict=True))

    result = Purifier(config, cfg.purifier_device).purify(batch, trace=trace)
    probs = target.prob(quantize(result.images))
    rates = _purified_rates(probs >= threshold, labels, k, n_other_real)
    restored = probs[:k] >= threshold
    by_attack: dict[str, list[int]] = {}
    for (name, _), ok in zip(fooled, restored, strict=True):
        by_attack.setdefault(name, []).append(int(ok))
    # The paper's detector (99.7 % clean) missed almost no unperturbed fake, so its fooled fakes were
    # the attack's doing; ours misses some clean, and no purification can turn those: count both.
    turned = np.array([bool(pools[name][2][i]) for name, i in fooled], dtype=bool)
    return {
        "preset": cfg.purifier,
        "device": cfg.purifier_device,
        "config_version": config.version(),
        "threshold": threshold,
        "threshold_source": "card" if calibration is None else PURIFY_FILENAME,
        "calibration": None if calibration is None else calibration.to_dict(),
        "n_fooled": k,
        "n_other": len(labels) - k,
        "n_other_real": n_other_real,
        **rates,
        # The same outputs judged by the card's threshold (what Unmask did without purify.json).
        "card_threshold": _purified_rates(probs >= target.card.threshold, labels, k, n_other_real),
        "restore_by_attack": {name: float(np.mean(v)) for name, v in by_attack.items()},
        "n_turned": int(turned.sum()),
        "restored_turned": int(restored[turned].sum()),
        "restore_rate_turned": float(restored[turned].mean()) if turned.any() else None,
        "picks": [
            {"attack": name, "index": i, "turned_by_attack": bool(t), "purified_p_fake": float(p)}
            for (name, i), t, p in zip(fooled, turned, probs[:k], strict=True)
        ],
        "seconds_per_crop": round(result.seconds / len(batch), 2),
        "iterations": int(np.median(result.iterations)),
        "curve": _curve(seen, labels, k, n_other_real, target.card.threshold),
    }


def _purified_rates(says: np.ndarray, labels: np.ndarray, k: int, n_other_real: int) -> dict[str, Any]:
    """The paper's measure from decisions on purified crops: the first ``k`` are fooled fakes,
    then ``n_other_real`` clean reals, then fakes the detector had right."""
    right = says == labels
    others = right[k:]
    return {
        "restored": int(says[:k].sum()),
        "restore_rate": float(says[:k].mean()) if k else None,
        "retained": int(others.sum()),
        "retain_rate": float(others.mean()) if len(others) else None,
        "retain_real": float(right[k : k + n_other_real].mean()) if n_other_real else None,
        "retain_fake": float(right[k + n_other_real :].mean()) if len(others) > n_other_real else None,
        "accuracy": float(right.mean()),
    }


def _curve(
    seen: dict[int, dict[int, float]], labels: np.ndarray, k: int, n_other_real: int, threshold: float
) -> list[dict[str, Any]]:
    """Restore / retain rates of the outputs along the fit, every ``CURVE_EVERY`` iterations
    (only where every crop was still being fitted: a fixed-iteration budget, or before any stop),
    at the card's ``threshold`` (a purified-crop threshold is fitted for the final output only)."""
    rows = []
    for it in sorted(seen):
        if len(seen[it]) != len(labels):
            continue
        says = np.array([seen[it][i] for i in range(len(labels))]) >= threshold
        right = says == labels
        rows.append(
            {
                "iteration": it,
                "restore_rate": float(says[:k].mean()) if k else None,
                "retain_rate": float(right[k:].mean()) if len(labels) > k else None,
                "retain_real": float(right[k : k + n_other_real].mean()) if n_other_real else None,
            }
        )
    return rows


def trained_model(name: str, cfg: RobustnessConfig, **overrides: Any) -> Target:
    """A quick detector trained on ``cfg.train_data`` (reused when an earlier run left the same one)."""
    from server.vision.train import TrainConfig, train

    out = Path(cfg.models_dir or Path(cfg.out) / "models") / name
    train_cfg = TrainConfig(
        data=cfg.train_data,
        out=out,
        arch="unmask_tiny",
        epochs=TRAIN_EPOCHS,
        max_steps=cfg.train_steps,
        sbi_ratio=TRAIN_SBI_RATIO,
        seed=cfg.seed,
        threads=cfg.threads,
        progress=False,
        model_id=f"eval-{name}",
        demo=True,
        lipschitz_batch=LIPSCHITZ_BATCH,
        notes=f"trained by unmask eval-robustness ({name})",
        **overrides,
    )
    metrics = out / "metrics.json"
    if metrics.is_file() and _same_training(json.loads(metrics.read_text()).get("config"), train_cfg):
        return Target.load(name, out)
    shutil.rmtree(out, ignore_errors=True)
    train(train_cfg)
    return Target.load(name, out)


# Settings of how a training ran, not of what it made: a model trained with other values is reused.
_RUN_ONLY = ("threads", "progress")


def _same_training(saved: dict[str, Any] | None, cfg: Any) -> bool:
    """Whether a saved training config made the model ``cfg`` would make."""
    if saved is None:
        return False
    wanted = json.loads(json.dumps(cfg.to_dict()))
    return {k: v for k, v in saved.items() if k not in _RUN_ONLY} == {
        k: v for k, v in wanted.items() if k not in _RUN_ONLY
    }
