"""Post-hoc Laplace posteriors of a finished stage, and the costs every evaluation records (private).

With ``TransferConfig.laplace`` set, every stage of a single deterministic-head model is, after its own
evaluation, turned into one :class:`~vipann.calibration.LaplaceModel` per variant (``<subset>-<hessian>``,
fitted by :func:`vipann.calibration.fit_laplace` on the stage's training clips, with the prior precision
of the marginal likelihood) and evaluated exactly like the model itself, in
``<stage>/laplace-<variant>/`` (``metrics.json``, ``retention.csv``, ``predictions.safetensors``, figures,
``laplace.json``). The network is not retrained: this is the "Bayesian in minutes" path for a trained
tagger.

Costs (every ``metrics.json``): ``train_seconds`` (training of the stage's network(s)),
``posthoc_seconds`` (fitting after training: a Laplace posterior, a temperature), ``predict_ms_per_clip``
(wall time of the test predictions per clip and prediction run, ``S`` samples each, on this device) and
``model_mb`` (every tensor the evaluated model holds: network(s) and posterior).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vipann.calibration.laplace_fit import fit_laplace
from vipann.evaluation import evaluate_runs, write_evaluation
from vipann.train.distributed import DistContext
from vipann.utils.atomic import write_json_atomic

__all__ = ["model_megabytes", "timed_logit_runs", "write_laplace_outputs"]

LogitRuns = Callable[[nn.Module, Tensor, Any, DistContext, int], Tensor]


def model_megabytes(model: nn.Module) -> float:
    """Megabytes (10^6 bytes) of every tensor in ``model.state_dict()``."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 1e6


def timed_logit_runs(
    logit_runs: LogitRuns, model: nn.Module, waves: Tensor, config: Any, ctx: DistContext, salt: int
) -> tuple[Tensor, float]:
    """``logit_runs(model, waves, ...)`` (``(R, S, N, C)`` logits) and its wall time per clip and run, in ms."""
    start = time.perf_counter()
    logits = logit_runs(model, waves, config, ctx, salt)
    elapsed = time.perf_counter() - start
    per_process = max(1, -(-len(waves) // ctx.world_size))
    return logits, 1000.0 * elapsed / (per_process * logits.shape[0])


def write_laplace_outputs(
    model: nn.Module,
    stage_dir: Path,
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    ood: Tensor | None,
    config: Any,
    ctx: DistContext,
    salt: int,
    title: str,
    clip_ids: list[str],
    train_seconds: float | None,
    logit_runs: LogitRuns,
) -> dict[str, dict[str, float]]:
    """Fit and evaluate every ``config.laplace`` variant of a finished stage.

    Args:
        model: The stage's trained model (deterministic MLP head).
        stage_dir: The stage's folder.
        train: ``(waves, targets)`` the stage trained on.
        test: ``(waves, targets)`` of the test fold.
        ood: Out-of-distribution clips, or None.
        config: The run's :class:`~vipann.recipes.transfer.TransferConfig`.
        ctx: Distributed context (each process fits on its shard; the GGN is summed).
        salt: Seed salt of the predictions.
        title: Figure titles.
        clip_ids: Test clip identifiers.
        train_seconds: Training time of the network (recorded for the cost columns).
        logit_runs: The recipe's prediction runs (:func:`vipann.recipes._outputs.logit_runs`).

    Returns:
        Variant -> its metrics, on rank 0 (empty elsewhere).
    """
    results = {}
    multilabel = model.pretrained_cfg.multilabel
    mine = torch.arange(ctx.rank, len(train[0]), ctx.world_size)
    for variant in config.laplace:
        subset, hessian = variant.split("-")
        start = time.perf_counter()
        laplace = fit_laplace(
            model,
            (train[0][mine], train[1][mine]),
            likelihood="bernoulli" if multilabel else "categorical",
            subset=subset,
            hessian=hessian,
            num_samples=config.num_samples,
            batch_size=config.eval_batch_size,
            distributed=ctx.distributed,
        )
        fit_seconds = time.perf_counter() - start
        logits, per_clip = timed_logit_runs(logit_runs, laplace, test[0], config, ctx, salt + 700)
        ood_logits = logit_runs(laplace, ood, config, ctx, salt + 1200) if ood is not None else None
        if not ctx.is_main:
            continue
        probs = _probs(logits, multilabel)
        ood_probs = _probs(ood_logits, multilabel) if ood_logits is not None else None
        evaluation = evaluate_runs(probs, test[1], multilabel=multilabel, ood_probs=ood_probs)
        evaluation.scalars.update(
            {
                "posthoc_seconds": fit_seconds,
                "predict_ms_per_clip": per_clip,
                "model_mb": model_megabytes(laplace),
                "prior_precision": laplace.prior_precision,
            }
        )
        if train_seconds is not None:
            evaluation.scalars["train_seconds"] = train_seconds
        out = stage_dir / f"laplace-{variant}"
        write_evaluation(
            evaluation,
            out,
            probs=probs,
            targets=test[1],
            clip_ids=clip_ids,
            ood_probs=ood_probs,
            title=f"{title}, Laplace {variant}",
            plots=config.plots,
        )
        write_json_atomic(
            out / "laplace.json",
            {
                "subset": subset,
                "hessian": hessian,
                "likelihood": laplace.likelihood,
                "prior_precision": laplace.prior_precision,
                "log_marginal_likelihood": float(laplace.log_marginal_likelihood()),
                "train_clips": laplace.num_data,
                "posterior_mb": laplace.posterior_bytes() / 1e6,
                "fit_seconds": fit_seconds,
            },
        )
        if config.export:
            from vipann.zoo.serialization import save_pretrained

            save_pretrained(laplace, out / "export", overwrite=True)
        results[variant] = evaluation.scalars
    return results


def _probs(logits: Tensor, multilabel: bool) -> Tensor:
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=-1)
