"""Batched Monte-Carlo prediction: :func:`predict` and its :class:`Prediction` result.

One convention: Monte-Carlo probabilities of shape ``(S, B, C)`` (samples, clips, classes).

How each flavour is sampled (``S = num_samples``):

* ``det``: one deterministic pass; asking for ``S > 1`` returns ``S`` identical samples and warns.
* ``drop``: dropout modules are active only inside the call. Everything before the first active
  dropout site (front end, ``bn0``, the first conv block) is computed once per clip and reused by
  all ``S`` samples.
* ``flip``: the samples are stacked through the network in chunks of at most ``max_rows`` rows;
  only the front end is shared. With ``draws="independent"`` (the default for ``flip``) every
  sample is its own weight draw (the clips of one sample share it, as in a plain forward pass).
  With ``draws="shared"`` each Flipout layer draws one weight perturbation per chunk and
  decorrelates the rows with per-row sign vectors (Flipout, Wen et al. 2018): every (sample, clip)
  row is an exact weight-posterior sample, rows are uncorrelated but not independent.
* ``detflip``: the deterministic backbone runs once per clip; only the Flipout head is sampled,
  with shared draws by default (the same distribution as independent ones, for a fraction of the
  cost).

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

from vipann.inference.precision import check_precision, low_precision
from vipann.inference.sampler import make_sampler
from vipann.inference.windows import as_clips, batch_windows, cut_windows, window_starts
from vipann.layers.stochastic import check_draws
from vipann.uncertainty import Decomposition, decompose, decompose_variance
from vipann.utils.devices import check_device

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
            For every clip, ``(label, mean probability, std)`` tuples, most probable first (all
            classes when ``k`` is larger than their number).

        Raises:
            ValueError: If ``k`` is not a positive integer.
        """
        if int(k) != k or k < 1:
            raise ValueError(f"k must be a positive number of classes, got {k}")
        k = min(int(k), self.probs.shape[-1])
        mean, std = self.mean, self.std
        values, index = mean.topk(k, dim=-1)
        names = self.labels or tuple(f"class_{i}" for i in range(self.probs.shape[-1]))
        return [
            [(names[j], float(values[b, i]), float(std[b, j])) for i, j in enumerate(index[b].tolist())]
            for b in range(mean.shape[0])
        ]


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
    draws: str | None = None,
    precision: str = "fp32",
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
        max_rows: Upper bound on rows (windows × stacked samples) per stochastic pass. Default
            (:func:`~vipann.inference.sampler.default_rows`): 64 on accelerators; on CPU 4 for
            ``drop``, 1024 for ``detflip`` with shared draws (32 with independent ones), 16 for
            ``flip`` with shared draws and one sample per pass for ``flip`` with independent
            draws (there stacking was measured slower than sampling one at a time); see
            ``benchmarks/bench_predict.py``.
        progress: Show a progress bar.
        temperature: Divide every sample's logits by this before the softmax/sigmoid (scalar or
            ``(C,)``); default: the model's ``pretrained_cfg.temperature`` (none if unset). Pass
            ``1.0`` for the raw probabilities of a calibrated model.
        draws: How Flipout layers draw weight noise. ``"shared"``: one perturbation per layer
            and pass serves all samples and clips of the pass through per-row sign vectors
            (Flipout, Wen et al. 2018): every sample is an exact draw of the weight posterior,
            samples are uncorrelated but not independent, and the costly weight sampling is paid
            once per pass instead of once per sample. ``"independent"``: one perturbation per
            sample, with bayesian-torch's element-wise signs (a plain forward pass's noise).
            Default (:func:`~vipann.inference.sampler.default_draws`): ``"shared"`` for clip-level
            ``detflip`` models, where both give the same distribution (and shared is the faster by
            far); ``"independent"`` for ``flip`` and per-segment heads, whose element-wise
            convolution noise is a narrower distribution than the weight posterior that
            ``"shared"`` samples. No effect on ``det`` and ``drop``. Measurements:
            ``benchmarks/RESULTS.md``.
        precision: ``"fp32"`` (default) or ``"bf16"``: the network after the front end runs under
            bfloat16 autocast with its 4-D weights channels-last for the call
            (:mod:`~vipann.inference.precision`; the log-mel front end and the probabilities stay
            float32, the model's strides are restored afterwards). On a 2-core CPU with AMX the
            ResNet54 forward runs 1.3-1.5x (B = 2) and 2.7-3.2x (B = 8) faster
            (``benchmarks/bench_det_forward.py``, ``benchmarks/RESULTS.md``), but probabilities
            move: by 2e-4 on random ResNet54 weights, by up to 4e-3 on the trained ``det-demo``
            (``tests/inference/test_precision.py``), so float32 stays the default.

    Returns:
        A :class:`Prediction` with ``probs`` of shape ``(S, B, C)`` (``(M·S, B, C)`` for an
        :class:`~vipann.Ensemble` of ``M`` members).

    Raises:
        ValueError: On empty, non-finite, far too loud or mis-shaped audio (including a
            ``(samples, channels)`` array), a sample-rate mismatch, a device this machine does not
            have, a model on the ``meta`` device, or bad arguments.
        TypeError: On integer audio.

    Example:
        >>> import torch, vipann
        >>> model = vipann.create_model("flip-tiny")
        >>> result = vipann.predict(model, torch.randn(2, 16000) * 0.1, num_samples=4, generator=0)
        >>> result.probs.shape, result.epistemic.shape
        (torch.Size([4, 2, 10]), torch.Size([2]))
    """
    cfg = getattr(model, "pretrained_cfg", None)
    if num_samples is None:
        num_samples = cfg.default_num_samples if cfg is not None else (1 if model.method == "det" else 30)
    num_samples = int(num_samples)
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if batch_size < 1 or (max_rows is not None and max_rows < 1):
        raise ValueError("batch_size and max_rows must be >= 1")
    if draws is not None:
        check_draws(draws)
    check_precision(precision)
    if multilabel is None:
        multilabel = bool(cfg.multilabel) if cfg is not None else False
    aggregate = aggregate or ("max" if multilabel else "mean")
    if aggregate not in ("mean", "max"):
        raise ValueError(f"aggregate must be 'mean' or 'max', got {aggregate!r}")
    if str(model.method).rpartition("-")[2] == "det" and num_samples > 1:  # det, ensemble-det
        warnings.warn(
            f"a det model is deterministic: the {num_samples} requested samples are identical "
            "(use a drop, flip or detflip model for Monte-Carlo uncertainty)",
            stacklevel=2,
        )
    if device is not None:
        model.to(check_device(device))
    param = next(model.parameters())
    device = param.device
    if device.type == "meta":
        raise ValueError(
            "the model is on the 'meta' device: it has shapes but no weights, so it cannot predict; load a "
            "trained model (vipann.from_pretrained) or create it on 'cpu' / 'cuda'"
        )
    if isinstance(generator, int):
        generator = torch.Generator(device=device).manual_seed(generator)
    for name, value in (("window_seconds", window_seconds), ("hop_seconds", hop_seconds)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")
    clips = as_clips(waveforms, sample_rate, model)
    sr = model.sample_rate
    clip_seconds = window_seconds or (cfg.clip_seconds if cfg is not None else 10.0)
    window = max(1, round(clip_seconds * sr))
    hop = max(1, round((hop_seconds or clip_seconds) * sr))
    min_len = model.min_samples
    pieces, owner = cut_windows(clips, window, hop, min_len)

    model.eval()
    sampler = make_sampler(
        model, num_samples, generator=generator, max_rows=max_rows, temperature=temperature, draws=draws
    )
    batches = batch_windows(pieces, batch_size)
    iterator = batches
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(batches, desc=f"predict S={num_samples}", unit="batch")
    s_logits: Tensor | None = None
    with low_precision(model, precision, device):
        for wave, index in iterator:
            logits = sampler(wave.to(device=device, dtype=param.dtype)).to(param.dtype)
            if s_logits is None:  # (S', windows, C); S' = M·S for an ensemble
                s_logits = logits.new_empty(logits.shape[0], len(pieces), *logits.shape[2:])
            s_logits[:, index] = logits
    assert s_logits is not None  # as_clips refuses an empty batch
    probs = torch.sigmoid(s_logits) if multilabel else torch.softmax(s_logits, dim=-1)
    owner_t = torch.as_tensor(owner, device=device)
    num_clips = len(clips)
    if len(pieces) == num_clips:
        clip_probs = probs
    else:
        index = owner_t[None, :, None].expand_as(probs)
        clip_probs = torch.zeros(probs.shape[0], num_clips, probs.shape[-1], device=device, dtype=probs.dtype)
        reduce = "mean" if aggregate == "mean" else "amax"
        clip_probs = clip_probs.scatter_reduce(1, index, probs, reduce=reduce, include_self=False)
    labels = cfg.labels if cfg is not None and len(cfg.labels) == model.num_classes else None
    return Prediction(clip_probs, multilabel, labels)
