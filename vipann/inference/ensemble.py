"""Deep ensembles: :class:`Ensemble` of independently trained members and its Monte-Carlo prediction.

An ensemble of ``M`` members, each predicted with ``S`` Monte-Carlo samples, gives probabilities of
shape ``(M·S, B, C)`` (member-major: rows ``m·S`` to ``(m+1)·S - 1`` belong to member ``m``). This is
the package's one Monte-Carlo convention, so every decomposition (:func:`vipann.uncertainty.decompose`)
and metric works unchanged: the epistemic part then measures disagreement between members as well as
within each member's own sampling. With deterministic members (``S = 1``) it is a classic deep
ensemble (Lakshminarayanan et al., 2017).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vipann.inference.predict import Prediction, predict
from vipann.inference.sampler import LogitSampler, Temperature, make_sampler
from vipann.zoo.factory import from_pretrained

__all__ = ["Ensemble", "member_seeds", "predict_ensemble"]


def _signature(model: nn.Module) -> dict[str, Any]:
    """What members must share for their probabilities to be comparable."""
    cfg = getattr(model, "pretrained_cfg", None)
    return {
        "arch": getattr(model, "arch", None),
        "method": getattr(model, "method", None),
        "num_classes": getattr(model, "num_classes", None),
        "sample_rate": getattr(model, "sample_rate", None),
        "multilabel": getattr(cfg, "multilabel", None),
        "labels": getattr(cfg, "labels", None),
        "head_type": getattr(model, "head_type", None),
    }


def _short(labels: Sequence[str] | None) -> str:
    labels = tuple(labels or ())
    return f"{len(labels)} names starting {list(labels[:3])}"


class Ensemble(nn.Module):
    """A deep ensemble of vipann models that :func:`vipann.predict` samples member by member.

    Members must agree on everything that makes their outputs comparable: architecture, method,
    number of classes, sample rate, multi-label flag and class names; they differ in their weights
    (e.g. fine-tuned with different seeds). The ensemble's ``pretrained_cfg`` is member 0's, with
    no temperature (a temperature fitted on the ensemble with :func:`vipann.calibration.calibrate` is
    stored there and then overrides the members' own).

    Args:
        models: The ``M >= 1`` members.

    Attributes:
        members: The members (an :class:`torch.nn.ModuleList`).
        pretrained_cfg: Metadata shared by the members (``default_num_samples`` is the members').

    Raises:
        TypeError: If a member is not an ``nn.Module`` or is itself an ensemble.
        ValueError: For no members, or members that disagree (the message names the field and values).

    References:
        Lakshminarayanan, Pritzel & Blundell, "Simple and scalable predictive uncertainty estimation
        using deep ensembles", NeurIPS 2017. Ye et al., "Uncertainty calibration for deep audio
        classifiers", Interspeech 2022 (M = 5 ensembles of audio classifiers). Lukashevich, Grollmisch
        & Abeßer, "Temperature scaling for reliable uncertainty estimation", 2023 (ensembles + T).

    Example:
        >>> import torch, vipann
        >>> members = []
        >>> for seed in range(3):
        ...     _ = torch.manual_seed(seed)
        ...     members.append(vipann.create_model("drop-tiny"))
        >>> ensemble = vipann.Ensemble(members)
        >>> result = vipann.predict(ensemble, torch.randn(2, 16000) * 0.1, num_samples=4, generator=0)
        >>> result.probs.shape  # (M·S, B, C)
        torch.Size([12, 2, 10])
    """

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        models = list(models)
        if not models:
            raise ValueError("an Ensemble needs at least one member")
        for i, m in enumerate(models):
            if isinstance(m, Ensemble):
                raise TypeError(f"member {i} is itself an Ensemble; pass its members instead")
            if not isinstance(m, nn.Module):
                raise TypeError(f"member {i} must be a vipann model (nn.Module), got {type(m).__name__}")
        first = _signature(models[0])
        for i, m in enumerate(models[1:], start=1):
            for key, value in _signature(m).items():
                if value != first[key]:
                    a, b = (_short(first[key]), _short(value)) if key == "labels" else (first[key], value)
                    raise ValueError(f"ensemble members must agree on {key}: member 0 has {a!r}, member {i} has {b!r}")
        self.members = nn.ModuleList(models)
        cfg = getattr(models[0], "pretrained_cfg", None)
        if cfg is not None and "temperature" in {f.name for f in dataclasses.fields(cfg)}:
            cfg = dataclasses.replace(cfg, temperature=None)
        self.pretrained_cfg = cfg

    @classmethod
    def from_pretrained(cls, sources: Sequence[str], **kwargs: Any) -> Ensemble:
        """Load every member with :func:`vipann.from_pretrained`.

        Args:
            sources: One source per member (registry names, ``hf-hub:...``, ``local-dir:...``).
            **kwargs: Passed to every :func:`vipann.from_pretrained` call (``device``, ``revision``, ...).

        Returns:
            The ensemble (members in ``eval()`` mode).

        Raises:
            TypeError: If ``sources`` is a single string.
        """
        if isinstance(sources, str):
            raise TypeError("sources must be a sequence of sources, one per member, not a single string")
        return cls([from_pretrained(s, **kwargs) for s in sources])

    # -- metadata (what vipann.predict and the recipes read) ---------------------------------
    def __len__(self) -> int:
        return len(self.members)

    @property
    def arch(self) -> str:
        """Architecture of the members."""
        return self.members[0].arch

    @property
    def member_method(self) -> str:
        """Method (``det``/``drop``/``flip``/``detflip``) of the members."""
        return self.members[0].method

    @property
    def method(self) -> str:
        """``"ensemble-<members' method>"``."""
        return f"ensemble-{self.member_method}"

    @property
    def num_classes(self) -> int:
        """Number of outputs."""
        return self.members[0].num_classes

    @property
    def sample_rate(self) -> int:
        """Sample rate (Hz) every member expects."""
        return self.members[0].sample_rate

    @property
    def min_samples(self) -> int:
        """The shortest clip every member accepts."""
        return max(m.min_samples for m in self.members)

    @property
    def multilabel(self) -> bool:
        """Sigmoid (True) or softmax (False) outputs, from the metadata (False without one)."""
        return bool(getattr(self.pretrained_cfg, "multilabel", False))

    def extra_repr(self) -> str:
        """Summary shown by ``repr(module)``."""
        return f"members={len(self.members)}, method={self.method!r}, num_classes={self.num_classes}"

    def forward(self, waveform: Tensor, **kwargs: Any) -> Tensor:
        """Logits of the members' averaged probabilities (one pass per member, in its current mode).

        Multi-class: ``log mean_m softmax(z_m)`` (valid softmax logits); multi-label:
        ``logit(mean_m sigmoid(z_m))``. Computed with log-sum-exps, so confident members stay finite.

        Args:
            waveform: ``(B, T)`` float waveform.
            **kwargs: Passed to every member's ``forward``.

        Returns:
            ``(B, C)`` logits.
        """
        z = torch.stack([m(waveform, **kwargs) for m in self.members])
        log_m = math.log(z.shape[0])
        if self.multilabel:
            return torch.logsumexp(F.logsigmoid(z), 0) - torch.logsumexp(F.logsigmoid(-z), 0)
        return torch.logsumexp(torch.log_softmax(z, -1), 0) - log_m

    def mc_sampler(
        self,
        num_samples: int,
        *,
        generator: torch.Generator | None = None,
        max_rows: int | None = None,
        temperature: Temperature = None,
        draws: str | None = None,
    ) -> LogitSampler:
        """The ensemble's Monte-Carlo sampler: every member's own sampling, concatenated member-major.

        This is the :class:`~vipann.inference.sampler.MonteCarloModel` protocol that
        :func:`vipann.predict` uses: each member ``m`` samples ``S`` logits with its own scheme and an
        independent seed drawn from ``generator`` (:func:`member_seeds`), giving ``(M·S, N, C)``.

        Args:
            num_samples: Samples per member ``S``.
            generator: Random generator (None: torch's global one).
            max_rows: Rows per stochastic pass of each member (None: the member's default).
            temperature: Override of the temperatures (None: the ensemble's own if it has one, else
                each member's own).
            draws: ``"independent"`` or ``"shared"`` weight draws of every member (None: each
                member's default, :func:`~vipann.inference.sampler.default_draws`).

        Returns:
            The sampler.
        """
        if temperature is None:
            temperature = getattr(self.pretrained_cfg, "temperature", None)
        device = next(self.parameters()).device
        samplers = [
            make_sampler(
                member,
                num_samples,
                generator=None if seed is None else torch.Generator(device=device).manual_seed(seed),
                max_rows=max_rows,
                temperature=temperature,
                draws=draws,
            )
            for member, seed in zip(self.members, member_seeds(generator, len(self.members)))
        ]

        def sampler(wave: Tensor) -> Tensor:
            return torch.cat([sample(wave) for sample in samplers])

        return sampler


def member_seeds(generator: torch.Generator | int | None, num_members: int) -> list[int | None]:
    """Independent seeds for the members' Monte-Carlo sampling, derived from one generator or seed.

    Args:
        generator: An int seed, a :class:`torch.Generator` (one draw of it is consumed), or None
            (every member then uses torch's global generator).
        num_members: How many seeds.

    Returns:
        ``num_members`` int seeds (or Nones).
    """
    if generator is None:
        return [None] * num_members
    if isinstance(generator, bool) or not isinstance(generator, (int, torch.Generator)):
        raise TypeError(f"generator must be a torch.Generator, an int seed or None; got {type(generator).__name__}")
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    draws = torch.randint(0, 2**62, (num_members,), generator=generator, device=generator.device)
    return [int(s) for s in draws.tolist()]


def predict_ensemble(
    ensemble: Ensemble,
    waveforms: Tensor | np.ndarray | Sequence,
    num_samples: int | None = None,
    *,
    generator: torch.Generator | int | None = None,
    **kwargs: Any,
) -> Prediction:
    """Monte-Carlo prediction of an ensemble: :func:`vipann.predict` restricted to :class:`Ensemble`.

    :func:`vipann.predict` handles ensembles itself (through :meth:`Ensemble.mc_sampler`); this
    function only adds the type check.

    Args:
        ensemble: The ensemble.
        waveforms: As :func:`vipann.predict`.
        num_samples: Samples per member ``S`` (default: the members' ``default_num_samples``).
        generator: An int seed or a :class:`torch.Generator` for reproducible sampling.
        **kwargs: Other :func:`vipann.predict` arguments (``batch_size``, ``device``, ``multilabel``, ...).

    Returns:
        A :class:`~vipann.Prediction` with ``probs`` of shape ``(M·S, B, C)``, member-major.

    Raises:
        TypeError: If ``ensemble`` is not an :class:`Ensemble`.
        ValueError: As :func:`vipann.predict`.

    References:
        Lakshminarayanan, Pritzel & Blundell, "Simple and scalable predictive uncertainty estimation
        using deep ensembles", NeurIPS 2017.
    """
    if not isinstance(ensemble, Ensemble):
        raise TypeError(f"predict_ensemble needs an Ensemble, got {type(ensemble).__name__}")
    return predict(ensemble, waveforms, num_samples, generator=generator, **kwargs)
