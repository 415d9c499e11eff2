"""The VI-PANN statements the demo tests, each decided on the run by a paired 95 % interval.

Every claim names the paper's statement it tests (Fischer, Orescanin & Eckstrand, "VI-PANN", 2024),
the verdict the paper reports, and the statistic of :mod:`vipann.evaluation.claims` that decides it:

* calibration ("the score rises as uncertain clips are discarded"): the area between the
  uncertainty-ranked and the random retention curve (paired bootstrap over clips; over runs and folds
  when there are several), counted from the retention level where enough clips and classes are kept;
* OOD ("OOD clips are more uncertain"): AUROC - 0.5 (stratified bootstrap over ID and OOD clips), and
  for "stays the same" an equivalence test with the same interval;
* accuracy comparisons ("fine-tuned beats fixed-feature", "transfer beats training from scratch"): the
  per-clip paired difference of accuracy on the same test clips.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from vipann.evaluation.claims import Claim, auroc_gain, paired_difference, retention_gain
from vipann.uncertainty import decompose

__all__ = ["MARGINS", "STATEMENTS", "pretrained_claims", "stage_predictions", "transfer_claims"]

# The smallest effect that matters: retention gain in mAP / accuracy points, AUROC - 0.5, accuracy.
MARGINS = {"retention": 0.01, "auroc": 0.05, "accuracy": 0.01}
RESAMPLES = {"retention": 200, "other": 2000}

# id -> (statement, where VI-PANN says it, the verdict it reports)
STATEMENTS: dict[str, tuple[str, str, str]] = {
    "flip-calibrated": (
        "Our Flipout VI-PANN demonstrates well-calibrated uncertainty across all three measures.",
        "VI-PANN §4.2, Fig. 1",
        "holds",
    ),
    "drop-calibrated": (
        "In contrast, the MC dropout VI-PANN exhibits poor calibration.",
        "VI-PANN §4.2, Fig. 1",
        "does not hold",
    ),
    "flip-ood-rise": (
        "We observe a subtle increase in both average entropy and aleatoric uncertainty [on ShipsEar].",
        "VI-PANN §4.2, Fig. 2",
        "holds",
    ),
    "flip-ood-epistemic": (
        "Conversely, the average epistemic uncertainty remains consistent across both datasets.",
        "VI-PANN §4.2, Fig. 2",
        "holds",
    ),
    "transfer-calibrated": (
        "Following TL, when fixing the features of the base model and after fine-tuning, all three variants of "
        "our VI-PANNs result in well-calibrated models.",
        "VI-PANN §4.3, Figs. 3-4, 6-7, 9-10",
        "holds",
    ),
    "transfer-ood": (
        "All three model variants exhibit a notable increase in average entropy, epistemic uncertainty, and "
        "aleatoric uncertainty compared to the TL dataset.",
        "VI-PANN §4.3, Figs. 5, 8, 11",
        "holds",
    ),
    "finetune-beats-fixed": (
        "Fine-tuned models demonstrate a substantial increase in accuracy compared to fixed-feature models.",
        "VI-PANN §4.3, Table 4",
        "holds",
    ),
    "transfer-beats-scratch": (
        "Both TL techniques provide significant performance increases over the models trained from scratch.",
        "VI-PANN §4.3, Tables 4-5",
        "holds",
    ),
}
GAIN = "retention gain"


def _claim(key: str, claim: str, statistic: str, interval, kind: str = "greater", margin: float = 0.0) -> Claim:
    statement, source, expected = STATEMENTS[key]
    return Claim(claim, statement, source, expected, statistic, interval, kind, margin)


def pretrained_claims(
    name: str,
    probs: Tensor,
    targets: Tensor,
    uncertainty: dict[str, Tensor],
    ood_uncertainty: dict[str, Tensor],
    seed: int,
    min_coverage: float,
    curves: dict | None = None,
) -> list[Claim]:
    """VI-PANN's Section 4.2 statements about one pre-trained model (flip and drop have some).

    Args:
        name: The model, e.g. "flip-demo".
        probs: ``(N, C)`` mean probabilities on the evaluation clips.
        targets: ``(N, C)`` multi-hot.
        uncertainty: Scored measure -> ``(N,)`` (measures without spread left out).
        ood_uncertainty: Measure -> ``(M,)`` on the OOD clips.
        seed: Seed of the resamples.
        min_coverage: Share of classes a retention level must cover to count.
        curves: The measures' bootstrap retention curves from :func:`vipann.evaluation.evaluate_runs` with
            the same ``seed`` (reused: only the random-discarding references are computed here).

    Returns:
        The claims (none for a model the paper says nothing about).
    """
    method = name.split("-")[0]
    if method not in ("flip", "drop") or not uncertainty:
        return []
    first = next(iter(curves.values())) if curves else None
    gains = retention_gain(
        [(probs, targets, uncertainty)],
        metric="map",
        bootstrap=RESAMPLES["retention"] if first is None else first.values.shape[0],
        seed=seed,
        min_coverage=min_coverage,
        precomputed=None if curves is None else [curves],
    )
    key = f"{method}-calibrated"
    claims = [
        _claim(
            key,
            f"{name}: mAP rises as uncertain clips are discarded ({m})",
            f"{GAIN} (mAP)",
            g,
            "greater",
            MARGINS["retention"],
        )
        for m, g in gains.items()
    ]
    if method == "flip":
        for m in ("entropy", "aleatoric", "epistemic"):
            if m not in uncertainty or m not in ood_uncertainty:
                continue
            gain = auroc_gain([(uncertainty[m], ood_uncertainty[m])], bootstrap=RESAMPLES["other"], seed=seed)
            if m == "epistemic":
                claim = f"{name}: {m} uncertainty stays the same on OOD clips (AUROC within 0.5 ± {MARGINS['auroc']})"
                claims.append(
                    _claim("flip-ood-epistemic", claim, "OOD AUROC - 0.5", gain, "equivalent", MARGINS["auroc"])
                )
            else:
                claim = f"{name}: OOD clips have a higher {m} uncertainty"
                claims.append(_claim("flip-ood-rise", claim, "OOD AUROC - 0.5", gain, "greater", MARGINS["auroc"]))
    return claims


def stage_predictions(stage_dir: Path) -> dict[str, Tensor] | None:
    """A finished stage's ``predictions.safetensors`` (probs ``(R, S, N, C)``, targets, ood_probs), or None."""
    path = stage_dir / "predictions.safetensors"
    return load_file(str(path)) if path.is_file() else None


def _measures(probs: Tensor) -> dict[str, Tensor]:
    """Measure -> ``(R, N)`` multi-class decomposition of ``(R, S, N, C)`` probabilities."""
    parts = [decompose(p, False) for p in probs]
    return {
        "entropy": torch.stack([d.total for d in parts]),
        "epistemic": torch.stack([d.epistemic for d in parts]),
        "aleatoric": torch.stack([d.aleatoric for d in parts]),
    }


def _correct(pred: dict[str, Tensor]) -> Tensor:
    """Per-clip accuracy averaged over the runs: ``(N,)``."""
    return (pred["probs"].mean(1).argmax(-1) == pred["targets"]).double().mean(0)


def transfer_claims(
    transfer: Path, scratch: Path, strategies: list[str], scratch_strategies: list[str], folds: list[int], seed: int
) -> list[Claim]:
    """VI-PANN's Section 4.3 statements, from the stages' saved predictions.

    Args:
        transfer: The transfer run's output folder (``<strategy>/fold<k>/<stage>/predictions.safetensors``).
        scratch: The from-scratch run's output folder.
        strategies: Transfer strategies run.
        scratch_strategies: Strategies also trained from scratch.
        folds: Test folds.
        seed: Seed of the resamples.

    Returns:
        The claims, in the report's order.
    """
    claims: list[Claim] = []

    def stage(root: Path, strategy: str, name: str) -> list[dict[str, Tensor]]:
        found = [stage_predictions(root / strategy / f"fold{k}" / name) for k in folds]
        return [p for p in found if p is not None]

    for strategy in (s for s in strategies if s != "det"):
        for name, label in (("fixed", "fixed-feature"), ("finetuned", "fine-tuned")):
            preds = stage(transfer, strategy, name)
            if not preds:
                continue
            groups = []
            for p in preds:
                measures = {m: u for m, u in _measures(p["probs"]).items() if bool(u.max() > u.min())}
                groups.append((p["probs"].mean(1), p["targets"], measures))
            if any(set(g[2]) != set(groups[0][2]) for g in groups) or not groups[0][2]:
                continue
            gains = retention_gain(groups, metric="accuracy", bootstrap=RESAMPLES["other"], seed=seed)
            for m, g in gains.items():
                claim = f"transfer {strategy}, {label}: accuracy rises as uncertain clips are discarded ({m})"
                claims.append(
                    _claim("transfer-calibrated", claim, f"{GAIN} (accuracy)", g, "greater", MARGINS["retention"])
                )
    for strategy in (s for s in strategies if s != "det"):
        preds = stage(transfer, strategy, "finetuned")
        if not preds or any("ood_probs" not in p for p in preds):
            continue
        for m in ("entropy", "epistemic", "aleatoric"):
            groups = []
            for p in preds:
                ind, ood = _measures(p["probs"])[m], _measures(p["ood_probs"])[m]
                groups += [(ind[r], ood[r]) for r in range(ind.shape[0])]
            gain = auroc_gain(groups, bootstrap=RESAMPLES["other"], seed=seed)
            claim = f"transfer {strategy}, fine-tuned: OOD clips have a higher {m} uncertainty"
            claims.append(_claim("transfer-ood", claim, "OOD AUROC - 0.5", gain, "greater", MARGINS["auroc"]))
    for strategy in strategies:
        fixed, fine = stage(transfer, strategy, "fixed"), stage(transfer, strategy, "finetuned")
        if fixed and len(fixed) == len(fine):
            diff = paired_difference(
                [(_correct(b), _correct(a)) for a, b in zip(fixed, fine)], bootstrap=RESAMPLES["other"], seed=seed
            )
            claim = f"transfer {strategy}: fine-tuned beats fixed-feature accuracy"
            claims.append(
                _claim(
                    "finetune-beats-fixed",
                    claim,
                    "accuracy difference",
                    diff,
                    "greater",
                    MARGINS["accuracy"],
                )
            )
    for strategy in scratch_strategies:
        base = stage(scratch, strategy, "finetuned")
        for name, label in (("fixed", "fixed-feature"), ("finetuned", "fine-tuned")):
            tl = stage(transfer, strategy, name)
            if not base or len(base) != len(tl):
                continue
            diff = paired_difference(
                [(_correct(a), _correct(b)) for a, b in zip(tl, base)], bootstrap=RESAMPLES["other"], seed=seed
            )
            claim = f"{strategy}: {label} transfer beats training from scratch (same budget)"
            claims.append(
                _claim(
                    "transfer-beats-scratch",
                    claim,
                    "accuracy difference",
                    diff,
                    "greater",
                    MARGINS["accuracy"],
                )
            )
    return claims
