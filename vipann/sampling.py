"""Batched Monte-Carlo prediction: :func:`predict` and its :class:`Prediction` result.

One convention: Monte-Carlo probabilities of shape ``(S, B, C)`` (samples, clips, classes).

How each flavour is sampled (``S = num_samples``):

* ``det``: one deterministic pass; asking for ``S > 1`` returns ``S`` identical samples and warns.
* ``drop``: dropout modules are active only inside the call. Everything before the first active
  dropout site (front end, ``bn0``, the first conv block) is computed once per clip and reused by
  all ``S`` samples.
* ``flip``: every sample is an independent weight draw (not one draw shared by the batch): the
  samples are stacked group-major through the network and each Flipout layer draws one weight
  perturbation per group. Only the front end is shared. Samples are processed in chunks so that
  at most ``max_rows`` rows go through the network at once.
* ``detflip``: the deterministic backbone runs once per clip; only the Flipout head is sampled.

Long audio is cut into windows of ``window_seconds`` (default: the model's clip length) with hop
``hop_seconds`` (default: the window, plus a last window aligned to the end of the clip), every
window is predicted, and per Monte-Carlo sample the window probabilities are aggregated into one
clip prediction: the mean over windows (``aggregate="mean"``, the default for multi-class) or the
maximum (``"max"``, the default for multi-label tagging: an event heard in any window is in the
clip). The decomposition is computed on the aggregated ``(S, B, C)`` probabilities.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from vipann.layers import mc_sampling
from vipann.uncertainty import Decomposition, decompose, decompose_variance

__all__ = ["Prediction", "predict", "window_starts"]


@dataclass
class Prediction:
    """Monte-Carlo predictions of a batch of clips and their uncertainty.

    Attributes:
        probs: ``(S, B, C)`` probabilities of every Monte-Carlo sample.
        multilabel: True when the classes are independent Bernoullis (sigmoid outputs).
        labels: Class names, if known.
    """

    probs: Tensor
    multilabel: bool
    labels: tuple[str, ...] | None = None
    _decomposition: Decomposition | None = field(default=None, repr=False)

    @property
    def mean(self) -> Tensor:
        """Mean prediction ``(B, C)`` over the samples."""
        return self.probs.mean(0)

    @property
    def std(self) -> Tensor:
        """Standard deviation ``(B, C)`` over the samples (0 for a single sample)."""
        if self.probs.shape[0] == 1:
            return torch.zeros_like(self.probs[0])
        return self.probs.std(0)

    @property
    def decomposition(self) -> Decomposition:
        """Entropy decomposition (total, aleatoric, epistemic), per class too when multi-label."""
        if self._decomposition is None:
            self._decomposition = decompose(self.probs, self.multilabel, per_class=self.multilabel)
        return self._decomposition

    @property
    def total(self) -> Tensor:
        """Predictive entropy ``(B,)`` (nats)."""
        return self.decomposition.total

    @property
    def aleatoric(self) -> Tensor:
        """Expected entropy of the samples ``(B,)`` (nats)."""
        return self.decomposition.aleatoric

    @property
    def epistemic(self) -> Tensor:
        """Mutual information between prediction and weights ``(B,)`` (nats)."""
        return self.decomposition.epistemic

    def variance_decomposition(self) -> Decomposition:
        """The variance-based decomposition (Kwon et al., 2020) of the same samples."""
        return decompose_variance(self.probs, self.multilabel)

    def top_k(self, k: int = 3) -> list[list[tuple[str, float, float]]]:
        """The ``k`` most probable classes of every clip.

        Args:
            k: How many classes.

        Returns:
            For every clip, ``(label, mean probability, std)`` tuples, most probable first.
        """
        k = min(int(k), self.probs.shape[-1])
        mean, std = self.mean, self.std
        values, index = mean.topk(k, dim=-1)
        names = self.labels or tuple(f"class_{i}" for i in range(self.probs.shape[-1]))
        return [
            [(names[j], float(values[b, i]), float(std[b, j])) for i, j in enumerate(index[b].tolist())]
            for b in range(mean.shape[0])
        ]


def window_starts(num_samples: int, window: int, hop: int) -> list[int]:
    """Start offsets of the analysis windows of a clip.

    Args:
        num_samples: Clip length.
        window: Window length.
        hop: Hop between windows.

    Returns:
        ``[0]`` when the clip fits in one window; otherwise ``0, hop, 2·hop, ...`` while the
        window fits, plus a last window aligned to the end of the clip when the hops leave a tail.
    """
    if num_samples <= window:
        return [0]
    starts = list(range(0, num_samples - window + 1, hop))
    if starts[-1] + window < num_samples:
        starts.append(num_samples - window)
    return starts


def _as_clips(waveforms: Tensor | np.ndarray | Sequence, sample_rate: int | None, model: nn.Module) -> list[Tensor]:
    if sample_rate is not None and int(sample_rate) != model.sample_rate:
        raise ValueError(
            f"audio at {sample_rate} Hz cannot be fed to a model trained at {model.sample_rate} Hz; resample it first"
        )
    if isinstance(waveforms, (Tensor, np.ndarray)):
        tensor = torch.as_tensor(waveforms)
        if tensor.dim() == 1:
            tensor = tensor[None]
        if tensor.dim() != 2:
            raise ValueError(
                f"waveforms must be (samples,), (batch, samples) or a list of clips, got {tuple(tensor.shape)}"
            )
        clips = list(tensor)
    else:
        clips = [torch.as_tensor(c) for c in waveforms]
    if not clips:
        raise ValueError("no waveforms to predict")
    for i, clip in enumerate(clips):
        if clip.dim() != 1:
            raise ValueError(f"clip {i} must be 1-D (samples,), got shape {tuple(clip.shape)}")
        if not clip.is_floating_point():
            raise TypeError(f"clip {i} has dtype {clip.dtype}; pass float audio in [-1, 1] (int16 PCM: x / 32768)")
        if clip.numel() == 0:
            raise ValueError(f"clip {i} is empty")
        if not torch.isfinite(clip).all():
            raise ValueError(f"clip {i} contains NaN or inf samples")
    return clips


def _windows(clips: list[Tensor], window: int, hop: int, min_len: int) -> tuple[list[Tensor], list[int]]:
    """Cut every clip into windows; a clip shorter than a window is one window (zero-padded to ``min_len``)."""
    pieces, owner = [], []
    for index, clip in enumerate(clips):
        if clip.numel() < min_len:
            clip = torch.nn.functional.pad(clip, (0, min_len - clip.numel()))
        for start in window_starts(clip.numel(), window, hop):
            pieces.append(clip[start : start + window])
            owner.append(index)
    return pieces, owner


def _batches(pieces: list[Tensor], batch_size: int) -> list[tuple[Tensor, list[int]]]:
    """Batch windows of equal length together (in order), at most ``batch_size`` per batch."""
    out: list[tuple[Tensor, list[int]]] = []
    i = 0
    while i < len(pieces):
        j = i + 1
        while j < len(pieces) and j - i < batch_size and pieces[j].numel() == pieces[i].numel():
            j += 1
        out.append((torch.stack(pieces[i:j]), list(range(i, j))))
        i = j
    return out


def _default_rows(method: str, device: torch.device) -> int:
    if device.type != "cpu":
        return 64
    return 1 if method == "flip" else 32


@torch.no_grad()
def _sample_logits(
    model: nn.Module, wave: Tensor, num_samples: int, generator, max_rows: int, stop: int | None = None
) -> Tensor:
    """Logits ``(S, N, C)`` of ``N`` windows, sharing everything before the first stochastic stage.

    With ``stop``, the output of ``stage_names[:stop]`` instead, ``(S, N, ...)`` (e.g. the segment
    logits ``(S, N, segments, C)`` of a decision-level model).
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


def predict(
    model: nn.Module,
    waveforms: Tensor | np.ndarray | Sequence,
    num_samples: int | None = None,
    *,
    batch_size: int = 8,
    device: torch.device | str | None = None,
    generator: torch.Generator | int | None = None,
    multilabel: bool | None = None,
    sample_rate: int | None = None,
    window_seconds: float | None = None,
    hop_seconds: float | None = None,
    aggregate: str | None = None,
    max_rows: int | None = None,
    progress: bool = False,
    temperature: float | Sequence[float] | Tensor | None = None,
) -> Prediction:
    """Monte-Carlo prediction with uncertainty for a batch of clips.

    Args:
        model: A vipann model (any method). It is put in ``eval()`` mode; its stochastic modules
            are switched on only inside this call.
        waveforms: ``(T,)``, ``(B, T)`` float audio at the model's sample rate, or a list of
            1-D clips of different lengths.
        num_samples: Monte-Carlo samples ``S`` (default: the model's ``default_num_samples``,
            1 for ``det``).
        batch_size: Windows per deterministic forward pass.
        device: Device to run on (the model is moved there); default: the model's device.
        generator: A :class:`torch.Generator` on that device, or an int seed, for reproducible
            sampling (default: torch's global generator).
        multilabel: Sigmoid (True) or softmax (False) outputs; default: the model's metadata.
        sample_rate: Sample rate of ``waveforms`` when known; must equal the model's.
        window_seconds: Analysis window (default: the model's clip length).
        hop_seconds: Hop between windows (default: the window length).
        aggregate: ``"mean"`` or ``"max"`` over windows (default: max for multi-label, mean for
            multi-class).
        max_rows: Upper bound on rows (windows × stacked samples) per stochastic pass. Default:
            64 on accelerators; on CPU 32 for ``drop`` and ``detflip`` and one sample per pass for
            ``flip``, where stacking draws was measured slower than sampling one at a time (the
            per-draw weight sampling dominates and large stacked activations leave the cache);
            see ``benchmarks/bench_predict.py``.
        progress: Show a progress bar.
        temperature: Divide every sample's logits by this before the softmax/sigmoid (scalar or
            ``(C,)``); default: the model's ``pretrained_cfg.temperature`` (none if unset). Pass
            ``1.0`` for the raw probabilities of a calibrated model.

    Returns:
        A :class:`Prediction` with ``probs`` of shape ``(S, B, C)`` (``(M·S, B, C)`` for an
        :class:`~vipann.Ensemble` of ``M`` members).

    Raises:
        ValueError: On empty, non-finite or mis-shaped audio, a sample-rate mismatch, or bad
            arguments.
        TypeError: On integer audio.

    Example:
        >>> import torch, vipann
        >>> model = vipann.create_model("flip-tiny")
        >>> result = vipann.predict(model, torch.randn(2, 16000) * 0.1, num_samples=4, generator=0)
        >>> result.probs.shape, result.epistemic.shape
        (torch.Size([4, 2, 10]), torch.Size([2]))
    """
    from vipann.ensemble import Ensemble, predict_ensemble

    if isinstance(model, Ensemble):
        return predict_ensemble(
            model,
            waveforms,
            num_samples,
            batch_size=batch_size,
            device=device,
            generator=generator,
            multilabel=multilabel,
            sample_rate=sample_rate,
            window_seconds=window_seconds,
            hop_seconds=hop_seconds,
            aggregate=aggregate,
            max_rows=max_rows,
            progress=progress,
            temperature=temperature,
        )
    cfg = getattr(model, "pretrained_cfg", None)
    if temperature is None:
        temperature = getattr(cfg, "temperature", None)
    if num_samples is None:
        num_samples = cfg.default_num_samples if cfg is not None else (1 if model.method == "det" else 30)
    num_samples = int(num_samples)
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if batch_size < 1 or (max_rows is not None and max_rows < 1):
        raise ValueError("batch_size and max_rows must be >= 1")
    if multilabel is None:
        multilabel = bool(cfg.multilabel) if cfg is not None else False
    aggregate = aggregate or ("max" if multilabel else "mean")
    if aggregate not in ("mean", "max"):
        raise ValueError(f"aggregate must be 'mean' or 'max', got {aggregate!r}")
    if model.method == "det" and num_samples > 1:
        warnings.warn(
            f"a det model is deterministic: the {num_samples} requested samples are identical "
            "(use a drop, flip or detflip model for Monte-Carlo uncertainty)",
            stacklevel=2,
        )
    if device is not None:
        model.to(device)
    param = next(model.parameters())
    device = param.device
    if isinstance(generator, int):
        generator = torch.Generator(device=device).manual_seed(generator)
    for name, value in (("window_seconds", window_seconds), ("hop_seconds", hop_seconds)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")
    clips = _as_clips(waveforms, sample_rate, model)
    sr = model.sample_rate
    clip_seconds = window_seconds or (cfg.clip_seconds if cfg is not None else 10.0)
    window = max(1, round(clip_seconds * sr))
    hop = max(1, round((hop_seconds or clip_seconds) * sr))
    min_len = model.min_samples
    pieces, owner = _windows(clips, window, hop, min_len)

    if max_rows is None:
        max_rows = _default_rows(model.method, device)
    model.eval()
    s_logits = torch.empty(num_samples, len(pieces), model.num_classes, device=device, dtype=param.dtype)
    batches = _batches(pieces, batch_size)
    iterator = batches
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(batches, desc=f"predict S={num_samples}", unit="batch")
    for wave, index in iterator:
        wave = wave.to(device=device, dtype=param.dtype)
        s_logits[:, index] = _sample_logits(model, wave, num_samples, generator, max_rows)
    if temperature is not None:
        from vipann.calibration import apply_temperature

        s_logits = apply_temperature(s_logits, temperature)
    probs = torch.sigmoid(s_logits) if multilabel else torch.softmax(s_logits, dim=-1)
    owner_t = torch.as_tensor(owner, device=device)
    num_clips = len(clips)
    if len(pieces) == num_clips:
        clip_probs = probs
    else:
        index = owner_t[None, :, None].expand_as(probs)
        clip_probs = torch.zeros(num_samples, num_clips, probs.shape[-1], device=device, dtype=probs.dtype)
        reduce = "mean" if aggregate == "mean" else "amax"
        clip_probs = clip_probs.scatter_reduce(1, index, probs, reduce=reduce, include_self=False)
    labels = cfg.labels if cfg is not None and len(cfg.labels) == model.num_classes else None
    return Prediction(clip_probs, multilabel, labels)
