"""Monte-Carlo samplers: the one thing :func:`vipann.predict` asks of a model.

A *sampler* maps a batch of ``N`` windows ``(N, T)`` to Monte-Carlo logits ``(S', N, C)``;
:func:`make_sampler` prepares one for a whole prediction (its random generator and temperature are
fixed once, then it is called batch after batch).

* A staged network (:class:`~vipann.models.PANN`) gets the default sampler, :func:`sample_logits`:
  everything before the first stochastic stage is computed once per window and shared by all
  ``S`` samples; the stochastic suffix runs on ``S`` stacked copies inside
  :func:`vipann.layers.mc_sampling`, in chunks of at most ``max_rows`` rows.
* Any other model implements :class:`MonteCarloModel`: a ``mc_sampler`` method that returns its own
  sampler. An :class:`~vipann.Ensemble` does, concatenating its members' samplers (``S' = M·S``),
  so ensembles go through exactly the code path of a single model.

How the Flipout layers draw the weight noise of a chunk is ``draws``:

* ``"independent"``: every sample is its own weight draw (each Flipout layer draws one ``ΔW`` per
  stacked sample; the windows of one sample share it, as in a plain forward pass).
* ``"shared"``: one ``ΔW`` per layer and chunk serves all its samples and windows, decorrelated by
  sign vectors drawn per row and channel (Flipout as Wen et al., 2018 define it); biases, and the
  weights of layers with fewer than ``FlipoutLayer.shared_min_elements`` of them, are drawn per
  row. Each row is an exact posterior sample and any two rows are uncorrelated, but not
  independent; for ``drop`` models the two settings are the same (masks are drawn per element).

:func:`default_draws` picks the setting when the caller gives none: ``"shared"`` where both sample
the same distribution (the clip-level head of ``detflip``), ``"independent"`` elsewhere (measured in
``benchmarks/bench_mc_quality.py``; numbers in ``benchmarks/RESULTS.md``).

The temperature is part of the sampler: ``temperature=None`` means the model's own
(``model.pretrained_cfg.temperature``, none if unset); a value overrides it (``1.0``: raw logits).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from vipann.inference.temperature import apply_temperature
from vipann.layers import mc_sampling
from vipann.layers.stochastic import check_draws

__all__ = ["LogitSampler", "MonteCarloModel", "default_draws", "default_rows", "make_sampler", "sample_logits"]

#: Maps a batch of windows ``(N, T)`` to Monte-Carlo logits ``(S', N, C)``.
LogitSampler = Callable[[Tensor], Tensor]
Temperature = float | Sequence[float] | Tensor | None


@runtime_checkable
class MonteCarloModel(Protocol):
    """A model that prepares its own Monte-Carlo sampling (ensembles, post-hoc posteriors, ...).

    Besides ``mc_sampler`` such a model has the attributes :func:`vipann.predict` reads of every
    model: ``method``, ``num_classes``, ``sample_rate``, ``min_samples``, ``pretrained_cfg`` and
    parameters (their device and dtype are the prediction's).
    """

    def mc_sampler(
        self,
        num_samples: int,
        *,
        generator: torch.Generator | None = None,
        max_rows: int | None = None,
        temperature: Temperature = None,
        draws: str | None = None,
    ) -> LogitSampler:
        """Prepare the sampler of one prediction.

        Args:
            num_samples: Monte-Carlo samples ``S`` per window.
            generator: Random generator on the model's device (None: torch's global one).
            max_rows: Upper bound on rows per stochastic pass (None: the model's default).
            temperature: Override of the model's temperature (None: the model's own).
            draws: ``"independent"`` or ``"shared"`` weight draws (None: the model's default).

        Returns:
            The sampler.
        """
        ...


def default_draws(model: nn.Module) -> str:
    """The weight-draw setting :func:`make_sampler` uses when the caller gives none.

    ``"shared"`` wherever it samples the same distribution as independent draws, only faster;
    ``"independent"`` elsewhere. The two agree row by row for a Flipout layer whose input is one
    vector per row (the clip-level head of ``detflip``): there bayesian-torch's element-wise signs
    are a sign vector per row. In a convolution (``flip``) or a per-segment head
    (``cnn14-dlmax``) bayesian-torch flips every time-frequency position or segment on its own,
    which is not one weight draw per row: the noise averages out in pooling and the predictive
    spread is smaller than that of the weight posterior, which ``"shared"`` samples exactly (on
    ``flip-cnn6`` the standard deviation of the probabilities was measured 2x larger). vipann
    trains with the element-wise noise, so for those models the default keeps it;
    ``draws="shared"`` is the opt-in. See ``benchmarks/RESULTS.md`` for the measurements.

    Args:
        model: A vipann network (its ``method`` and ``pooling`` are read).

    Returns:
        ``"shared"`` for clip-level ``detflip`` models, ``"independent"`` otherwise (for ``det``
        and ``drop`` models the setting changes nothing).
    """
    clip_level = getattr(model, "pooling", "clip") == "clip"
    return "shared" if getattr(model, "method", None) == "detflip" and clip_level else "independent"


def default_rows(method: str, device: torch.device, draws: str = "independent") -> int:
    """Rows (windows × stacked samples) per stochastic pass when the caller gives none.

    Args:
        method: The model's method.
        device: Where it runs.
        draws: The weight-draw setting of the pass (``"independent"`` or ``"shared"``).

    Returns:
        64 on accelerators. On CPU: 4 for ``drop`` (a pass over 4 rows keeps the activations in
        cache: 1.24x the loop's speed on ResNet54, against 0.70x with 32 rows); for ``detflip``
        (only the head is stochastic) 32 rows with independent draws and 1024 with shared ones;
        for ``flip`` one sample per pass with independent draws (stacking independent draws was
        measured slower) and 16 rows with shared ones. See ``benchmarks/bench_predict.py``.
    """
    if device.type != "cpu":
        return 64
    if method == "flip":
        return 16 if draws == "shared" else 1
    if method == "detflip" and draws == "shared":
        return 1024
    if method == "drop":
        return 4
    return 32


@torch.no_grad()
def sample_logits(
    model: nn.Module,
    wave: Tensor,
    num_samples: int,
    generator: torch.Generator | None,
    max_rows: int,
    stop: int | None = None,
    draws: str = "independent",
) -> Tensor:
    """Logits ``(S, N, C)`` of ``N`` windows, sharing everything before the first stochastic stage.

    Args:
        model: A staged network (``normalize``, ``logmel``, ``stage_names``, ``run_stages``,
            ``first_stochastic_stage``).
        wave: ``(N, T)`` windows on the model's device and dtype.
        num_samples: ``S``.
        generator: Random generator (None: torch's global one).
        max_rows: Upper bound on rows per stochastic pass.
        stop: Run only ``stage_names[:stop]`` and return that output, ``(S, N, ...)`` (e.g. the
            segment logits ``(S, N, segments, C)`` of a decision-level model).
        draws: ``"independent"``: one weight draw per stacked sample; ``"shared"``: one draw per
            pass (of at most ``max_rows`` rows), sign vectors per row (see the module docstring).

    Returns:
        The logits (no temperature applied).

    Raises:
        ValueError: For an unknown ``draws``.
    """
    check_draws(draws)
    x = model.normalize(model.logmel(wave))
    stop = len(model.stage_names) if stop is None else stop
    split = min(model.first_stochastic_stage(), stop)
    shared = model.run_stages(x, 0, split)
    if split == stop:  # nothing stochastic before stop
        return shared[None].expand(num_samples, *shared.shape)
    n = shared.shape[0]
    per_pass = max(1, max_rows // n)
    out = []
    done = 0
    while done < num_samples:
        groups = min(per_pass, num_samples - done)
        stacked = shared.repeat(groups, *([1] * (shared.dim() - 1)))
        with mc_sampling(model, generator=generator, num_draws=groups if draws == "independent" else 1, draws=draws):
            logits = model.run_stages(stacked, split, stop)
        out.append(logits.reshape(groups, n, *logits.shape[1:]))
        done += groups
    return torch.cat(out)


def make_sampler(
    model: nn.Module,
    num_samples: int,
    *,
    generator: torch.Generator | None = None,
    max_rows: int | None = None,
    temperature: Temperature = None,
    draws: str | None = None,
) -> LogitSampler:
    """The sampler of one prediction: the model's own (:class:`MonteCarloModel`) or the staged default.

    Args:
        model: A vipann model, in ``eval()`` mode, on its device.
        num_samples: Monte-Carlo samples ``S`` per window.
        generator: Random generator on the model's device (None: torch's global one).
        max_rows: Upper bound on rows per stochastic pass (None: :func:`default_rows`).
        temperature: Override of the model's temperature (None: the model's own; ``1.0``: raw logits).
        draws: ``"independent"`` or ``"shared"`` weight draws (None: :func:`default_draws`).

    Returns:
        A function from windows ``(N, T)`` to logits ``(S', N, C)``.

    Raises:
        ValueError: For an unknown ``draws``.
    """
    if draws is not None:
        check_draws(draws)
    if isinstance(model, MonteCarloModel):
        return model.mc_sampler(
            num_samples, generator=generator, max_rows=max_rows, temperature=temperature, draws=draws
        )
    if temperature is None:
        temperature = getattr(getattr(model, "pretrained_cfg", None), "temperature", None)
    draws = draws or default_draws(model)
    device = next(model.parameters()).device
    rows = max_rows if max_rows is not None else default_rows(model.method, device, draws)

    def sampler(wave: Tensor) -> Tensor:
        logits = sample_logits(model, wave, num_samples, generator, rows, draws=draws)
        return logits if temperature is None else apply_temperature(logits, temperature)

    return sampler
