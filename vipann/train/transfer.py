"""Transfer learning (VI-PANN Section 3.5): the Flip, Det-Flip, Drop and Det strategies.

* **flip**: a Flipout backbone (``flip-resnet54``) and a new Flipout head (fc1 + classifier) with
  bayesian-torch's ``LinearFlipout`` defaults.
* **detflip**: a deterministic backbone and a Flipout head: fc1 converted from the pretrained fc1
  by MOPED (delta 0.5), a new Flipout classifier.
* **drop**: an MC-dropout backbone (``drop-resnet54``) and a new MC-dropout head (p = 0.5 before
  fc1 and before the classifier).
* **det**: a deterministic backbone and a new deterministic head (the baseline).
* ``from_scratch=True``: the same networks with nothing copied (paper Table 5).
* ``head="sngp"``: the strategy's trunk with an SNGP head in place of fc1 + classifier
  (:func:`vipann.calibration.attach_sngp_head`: spectral-normalised hidden layer, random-feature
  Gaussian-process output layer, mean-field logits at inference). It fits ``det`` (the SNGP of Liu
  et al.), ``drop`` (MC dropout around an SNGP head) and ``flip`` (a Flipout trunk); ``detflip``
  is refused, because its defining Flipout head would be replaced (that is ``det`` with SNGP).

Training has two stages: *fixed-feature* (backbone frozen, head trained) and *fine-tuned*
(everything trained). The fixed-feature stage never recomputes a frozen backbone: the pooled
features (the input of fc1) are computed once per clip and the head is trained on them. A
deterministic backbone gives one feature vector per clip (computed in ``eval()`` mode: no
dropout, no SpecAugment). A stochastic backbone (flip, drop) gives ``K`` Monte-Carlo draws per
clip, and every epoch each clip uses one of its draws, chosen by ``(seed, epoch, clip)``, so the
head still sees the backbone's variability.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from vipann.layers import FlipoutLayer, LinearFlipout, flipout_layers, mc_sampling
from vipann.models.families import build_network
from vipann.models.pann import PANN
from vipann.train.distributed import DistContext, all_gather_rows
from vipann.zoo.moped import load_deterministic_weights

__all__ = [
    "HEADS",
    "STRATEGIES",
    "Strategy",
    "build_transfer_model",
    "extract_features",
    "head_forward",
    "head_parameters",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Strategy:
    """A transfer-learning strategy.

    Attributes:
        name: Strategy id.
        method: Method of the resulting model.
        backbone: Default backbone (registry name) for AudioSet transfer.
        fc1_init: ``"new"`` (fresh fc1) or ``"moped"`` (fc1 converted from the backbone's fc1).
    """

    name: str
    method: str
    backbone: str
    fc1_init: str = "new"


STRATEGIES: dict[str, Strategy] = {
    "flip": Strategy("flip", "flip", "flip-resnet54"),
    "detflip": Strategy("detflip", "detflip", "det-resnet54", fc1_init="moped"),
    "drop": Strategy("drop", "drop", "drop-resnet54"),
    "det": Strategy("det", "det", "det-resnet54"),
}

_HEAD = ("fc1", "fc_audioset")

HEADS = ("mlp", "sngp")


def _is_head(key: str) -> bool:
    return key.split(".", 1)[0] in _HEAD


def build_transfer_model(
    strategy: str | Strategy,
    backbone: PANN,
    num_classes: int,
    *,
    moped_delta: float = 0.5,
    head_dropout: float = 0.5,
    from_scratch: bool = False,
    seed: int = 0,
    head: str = "mlp",
    multilabel: bool = False,
    sngp: dict[str, Any] | None = None,
) -> PANN:
    """A model for a downstream task: the backbone's trunk and a new head of the strategy's method.

    Args:
        strategy: ``"flip"``, ``"detflip"``, ``"drop"``, ``"det"`` or a :class:`Strategy`.
        backbone: The pretrained model (any method; a deterministic trunk going into a Flipout
            strategy is converted by MOPED with ``moped_delta``).
        num_classes: Classes of the downstream task.
        moped_delta: MOPED delta (trunk conversion, and fc1 for ``detflip``).
        head_dropout: MC-dropout rate of the head (``drop``: p before fc1 and before the classifier).
        from_scratch: Copy nothing: every weight freshly initialised.
        seed: Seed of the new head's initialisation.
        head: ``"mlp"`` (the PANN head of the strategy's method) or ``"sngp"`` (see the module notes).
        multilabel: Sigmoid outputs (for the SNGP head's Laplace weights; the MLP head ignores it).
        sngp: Options of :func:`vipann.calibration.attach_sngp_head` (``hidden``, ``num_features``,
            ``ridge``, ``likelihood``, ...).

    Returns:
        The new model (training mode) on the backbone's device.

    Raises:
        ValueError: For an unknown strategy or head, an SNGP head on ``detflip``, a Flipout
            backbone for a deterministic-trunk strategy, or a decision-level (frame-wise) backbone.
    """
    if isinstance(strategy, str):
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
        strategy = STRATEGIES[strategy]
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose one of: {', '.join(HEADS)}")
    if backbone.pooling != "clip":
        raise ValueError(
            f"transfer learning needs a clip-level backbone (one pooled vector per clip); {backbone.arch!r} has a "
            f"{backbone.pooling!r} (frame-level) head. Use the clip-level counterpart "
            "(e.g. det-cnn14 for det-cnn14-dlmax)"
        )
    if head == "sngp" and strategy.name == "detflip":
        raise ValueError(
            "head='sngp' replaces the Flipout head that defines the detflip strategy; "
            "use strategy 'det' (or 'drop', 'flip') with the SNGP head"
        )
    model = _build(strategy, backbone, num_classes, moped_delta, head_dropout, from_scratch, seed)
    if head == "sngp":
        from vipann.calibration import attach_sngp_head

        torch.manual_seed(seed + 7919)
        attach_sngp_head(model, **{"multilabel": bool(multilabel), **(sngp or {})})
    return model.train()


def _build(
    strategy: Strategy,
    backbone: PANN,
    num_classes: int,
    moped_delta: float,
    head_dropout: float,
    from_scratch: bool,
    seed: int,
) -> PANN:
    config = backbone.config()
    config.update(
        num_classes=int(num_classes), method=strategy.method, fc_dropout=head_dropout, head_dropout=head_dropout
    )
    device = next(backbone.parameters()).device
    torch.manual_seed(seed)
    with torch.device(device):
        model = build_network(config.pop("arch"), config.pop("method"), config.pop("num_classes"), **config)
    if from_scratch:
        return model.train()
    trunk_flip = strategy.method == "flip"
    backbone_flip = any(not _is_head(name) for name, _ in flipout_layers(backbone))
    if backbone_flip and not trunk_flip:
        raise ValueError(
            f"a {backbone.method} backbone has a Flipout trunk; the {strategy.name} strategy needs a "
            "deterministic one (use a det or drop checkpoint)"
        )
    source = {k: v for k, v in backbone.state_dict().items() if not _is_head(k)}
    target_trunk = {k: v for k, v in model.state_dict().items() if not _is_head(k)}
    if trunk_flip and not backbone_flip:
        # A deterministic trunk into a Flipout trunk: MOPED on a copy, keep the new head.
        head_state = {k: v.clone() for k, v in model.state_dict().items() if _is_head(k)}
        head_det = {f"{p}.weight": torch.zeros_like(getattr(model, p).mu_w) for p in _HEAD}
        head_det.update({f"{p}.bias": torch.zeros_like(getattr(model, p).mu_bias) for p in _HEAD})
        load_deterministic_weights(
            model,
            {**source, **head_det},
            moped_delta=moped_delta,
            source="backbone",
            target=f"{strategy.method}-{model.arch}",
        )
        model.load_state_dict({**model.state_dict(), **head_state})
    else:
        missing = set(target_trunk) - set(source)
        priors_only = all(".prior_" in k for k in missing)
        if not priors_only or set(source) - set(target_trunk):
            raise ValueError(
                f"the {backbone.method}-{backbone.arch} backbone does not match the {strategy.name} trunk "
                f"(missing {sorted(missing)[:5]}, unexpected {sorted(set(source) - set(target_trunk))[:5]})"
            )
        model.load_state_dict({**model.state_dict(), **source})
    if strategy.fc1_init == "moped":
        fc1 = backbone.fc1
        weight = fc1.mu_w if isinstance(fc1, FlipoutLayer) else fc1.weight
        bias = fc1.mu_bias if isinstance(fc1, FlipoutLayer) else fc1.bias
        assert isinstance(model.fc1, LinearFlipout)
        model.fc1.init_from_deterministic(weight.detach(), bias.detach(), moped_delta, "zero")
    return model.train()


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters trained in the fixed-feature stage (fc1 and the classifier)."""
    module = getattr(model, "module", model)
    return [*module.fc1.parameters(), *module.fc_audioset.parameters()]


def head_forward(model: nn.Module, pooled: Tensor) -> Tensor:
    """Logits from pooled features: the stages after the trunk (dropout, fc1, ReLU, dropout, classifier)."""
    module = getattr(model, "module", model)
    return module.run_stages(pooled, len(module.trunk_names))


@torch.no_grad()
def extract_features(
    model: PANN,
    waveforms: Tensor,
    *,
    draws: int = 1,
    batch_size: int = 16,
    ctx: DistContext | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> Tensor:
    """Pooled features (the input of fc1) of every clip, computed once.

    Args:
        model: The model whose trunk extracts the features.
        waveforms: ``(N, T)`` clips (on any device).
        draws: Monte-Carlo draws per clip for a stochastic trunk (``1`` for a deterministic one).
        batch_size: Clips per forward pass.
        ctx: Distributed context: each process computes its share and all processes receive all.
        generator: Generator for the draws.
        progress: Show a progress bar.

    Returns:
        ``(K, N, D)`` features, ``K = draws`` for a stochastic trunk and 1 for a deterministic one.
    """
    ctx = ctx or DistContext()
    model.eval()
    n_trunk = len(model.trunk_names)
    split = model.first_stochastic_stage()
    stochastic = split < n_trunk
    k = draws if stochastic else 1
    indices = torch.arange(ctx.rank, len(waveforms), ctx.world_size)
    chunks = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    if progress and ctx.is_main:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc=f"features ({k} draw{'s' if k > 1 else ''})", unit="batch", leave=False)
    parts = []
    for index in chunks:
        wave = waveforms[index].to(ctx.device)
        x = model.normalize(model.logmel(wave))
        shared = model.run_stages(x, 0, min(split, n_trunk))
        if not stochastic:
            parts.append(model.run_stages(shared, split if split < n_trunk else n_trunk, n_trunk)[None])
            continue
        stacked = shared.repeat(k, *([1] * (shared.dim() - 1)))
        with mc_sampling(model, generator=generator, num_draws=k):
            feats = model.run_stages(stacked, split, n_trunk)
        parts.append(feats.reshape(k, len(index), -1))
    local = torch.cat(parts, dim=1) if parts else torch.empty(k, 0, model.embed_dim, device=ctx.device)
    # Gather along clips in rank-interleaved order, then restore the dataset order.
    gathered = all_gather_rows(ctx, local.transpose(0, 1).contiguous()).transpose(0, 1)
    order = torch.cat([torch.arange(r, len(waveforms), ctx.world_size) for r in range(ctx.world_size)])
    out = torch.empty_like(gathered)
    out[:, order.to(gathered.device)] = gathered
    return out
