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

__all__ = ["LogitSampler", "MonteCarloModel", "default_rows", "make_sampler", "sample_logits"]

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
    ) -> LogitSampler:
        """Prepare the sampler of one prediction.

        Args:
            num_samples: Monte-Carlo samples ``S`` per window.
            generator: Random generator on the model's device (None: torch's global one).
            max_rows: Upper bound on rows per stochastic pass (None: the model's default).
            temperature: Override of the model's temperature (None: the model's own).

        Returns:
            The sampler.
        """
        ...


def default_rows(method: str, device: torch.device) -> int:
    """Rows (windows × stacked samples) per stochastic pass when the caller gives none.

    Args:
        method: The model's method.
        device: Where it runs.

    Returns:
        64 on accelerators; on CPU one sample per pass for ``flip`` (stacking independent weight
        draws was measured slower there) and 32 otherwise.
    """
    if device.type != "cpu":
        return 64
    return 1 if method == "flip" else 32


@torch.no_grad()
def sample_logits(
    model: nn.Module,
    wave: Tensor,
    num_samples: int,
    generator: torch.Generator | None,
    max_rows: int,
    stop: int | None = None,
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

    Returns:
        The logits (no temperature applied).
    """
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
        with mc_sampling(model, generator=generator, num_draws=groups):
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
) -> LogitSampler:
    """The sampler of one prediction: the model's own (:class:`MonteCarloModel`) or the staged default.

    Args:
        model: A vipann model, in ``eval()`` mode, on its device.
        num_samples: Monte-Carlo samples ``S`` per window.
        generator: Random generator on the model's device (None: torch's global one).
        max_rows: Upper bound on rows per stochastic pass (None: :func:`default_rows`).
        temperature: Override of the model's temperature (None: the model's own; ``1.0``: raw logits).

    Returns:
        A function from windows ``(N, T)`` to logits ``(S', N, C)``.
    """
    if isinstance(model, MonteCarloModel):
        return model.mc_sampler(num_samples, generator=generator, max_rows=max_rows, temperature=temperature)
    if temperature is None:
        temperature = getattr(getattr(model, "pretrained_cfg", None), "temperature", None)
    rows = max_rows if max_rows is not None else default_rows(model.method, next(model.parameters()).device)

    def sampler(wave: Tensor) -> Tensor:
        logits = sample_logits(model, wave, num_samples, generator, rows)
        return logits if temperature is None else apply_temperature(logits, temperature)

    return sampler
