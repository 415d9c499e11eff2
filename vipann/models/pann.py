"""The PANN family (Cnn6/10/14, Cnn14_DecisionLevelMax, ResNet22/38/54, MobileNetV1, a tiny test net).

One class, :class:`PANN`, builds every architecture; the flavour is the ``method`` argument:

* ``det``: the PANN network; every dropout is training-only.
* ``drop``: the same weights and layout, but the dropout sites after the conv blocks (p=0.2) and
  before fc1 and the classifier (p=0.5) are :class:`~vipann.layers.MCDropout` modules that the
  sampling API can keep active at inference. The p=0.1 dropout inside residual blocks stays
  training-only, as in VI-PANN.
* ``flip``: every Conv2d and Linear after the front end is a Flipout layer; BatchNorm stays
  deterministic and the STFT/mel front end is never Bayesian.
* ``detflip``: deterministic backbone, Flipout fc1 and classifier.

``forward`` maps a waveform ``(B, T)`` at the model's sample rate to logits ``(B, C)``; sigmoid
or softmax belong to prediction code. The network is a list of named stages
(:attr:`PANN.stage_names`), so prediction code can run the deterministic prefix once and only
the stochastic suffix once per Monte-Carlo sample.

Each architecture has one of two head layouts (:attr:`ArchSpec.pooling`):

* ``"clip"``: the trunk's feature maps are pooled over time into one vector per clip
  (:class:`~vipann.models.blocks.GlobalPool`), and fc1 and the classifier act on it.
* ``"decision_max"`` (``cnn14-dlmax``, PANNs ``Cnn14_DecisionLevelMax``): the feature maps are
  pooled into one vector per segment of 32 frames (:class:`~vipann.models.blocks.SegmentPool`),
  fc1 and the classifier act on every segment, and the clip's logits are the maximum over
  segments (stage ``clip_max``). :meth:`PANN.framewise` gives the segment logits at the input
  frame rate, interpolated and padded as PANNs' ``framewise_output``. Dropout and Flipout in the
  head draw their noise per segment and element, as ``F.dropout`` and bayesian-torch's
  ``LinearFlipout`` do for a 3-d input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from vipann.layers import MCDropout, StochasticModule
from vipann.layers.bayesianize import to_flipout
from vipann.models.archs import ARCHITECTURES, METHODS, POOLINGS, ArchSpec
from vipann.models.augment import SpecAugment, do_mixup
from vipann.models.blocks import (
    ConvBlock,
    ConvBlock5x5,
    GlobalPool,
    ResNetTrunk,
    SegmentMax,
    SegmentPool,
    init_pann_weights,
    mobilenet_v1_features,
)
from vipann.models.frontend import FrontendConfig, LogMelFrontend
from vipann.models.waveform import check_waveform_batch

__all__ = ["ARCHITECTURES", "METHODS", "PANN", "POOLINGS", "ArchSpec"]


def _check_choice(kind: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {kind} {value!r}; choose one of: {', '.join(choices)}")


def _bayesianize(parent: nn.Module, prior: dict[str, float]) -> None:
    for name, child in parent.named_children():
        if isinstance(child, (nn.Conv2d, nn.Linear)):
            setattr(parent, name, to_flipout(child, prior))
        else:
            _bayesianize(child, prior)


class PANN(nn.Module):
    """A PANN-family audio tagger in one of four flavours.

    Args:
        arch: Architecture id (see :data:`ARCHITECTURES`): ``cnn6``, ``cnn10``, ``cnn14``,
            ``cnn14-dlmax``, ``resnet22``, ``resnet38``, ``resnet54``, ``mobilenetv1``, ``demo``
            or ``tiny``.
        method: ``"det"``, ``"drop"``, ``"flip"`` or ``"detflip"``.
        num_classes: Number of output logits (527 for AudioSet).
        frontend: Front-end configuration (defaults to the architecture's; PANNs: 32 kHz, window
            1024, hop 320, 64 mels from 50 to 14000 Hz).
        conv_dropout: Dropout after the conv stages (default: the architecture's, 0.2).
        fc_dropout: Dropout before fc1 (0.5).
        head_dropout: Dropout before the classifier (0.5).
        block_dropout: Training-only dropout inside residual blocks (0.1).
        prior_mean: Prior mean of new Flipout layers.
        prior_sigma: Prior standard deviation of new Flipout layers.
        posterior_mu_init: Initial posterior mean of new Flipout layers (bayesian-torch: 0).
        posterior_rho_init: Initial posterior rho of new Flipout layers (bayesian-torch: -3).
        spec_augment: Apply SpecAugment in training mode.

    Raises:
        ValueError: For an unknown architecture or method, or invalid sizes.

    Example:
        >>> import torch
        >>> from vipann.models import PANN
        >>> model = PANN("tiny", "flip", num_classes=10).eval()
        >>> model(torch.randn(2, 16000)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        arch: str,
        method: str = "det",
        num_classes: int = 527,
        *,
        frontend: FrontendConfig | dict[str, Any] | None = None,
        conv_dropout: float | None = None,
        fc_dropout: float = 0.5,
        head_dropout: float = 0.5,
        block_dropout: float = 0.1,
        prior_mean: float = 0.0,
        prior_sigma: float = 1.0,
        posterior_mu_init: float = 0.0,
        posterior_rho_init: float = -3.0,
        spec_augment: bool = True,
    ) -> None:
        super().__init__()
        _check_choice("architecture", arch, tuple(ARCHITECTURES))
        _check_choice("method", method, METHODS)
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        spec = ARCHITECTURES[arch]
        _check_choice("pooling", spec.pooling, POOLINGS)
        if frontend is None:
            frontend = spec.frontend
        elif isinstance(frontend, dict):
            frontend = FrontendConfig.from_dict(frontend)
        self.arch, self.method, self.num_classes = arch, method, int(num_classes)
        self.frontend_config: FrontendConfig = frontend
        conv_dropout = spec.conv_dropout if conv_dropout is None else float(conv_dropout)
        self.model_args: dict[str, Any] = {
            "conv_dropout": conv_dropout,
            "fc_dropout": float(fc_dropout),
            "head_dropout": float(head_dropout),
            "block_dropout": float(block_dropout),
            "prior_mean": float(prior_mean),
            "prior_sigma": float(prior_sigma),
            "posterior_mu_init": float(posterior_mu_init),
            "posterior_rho_init": float(posterior_rho_init),
            "spec_augment": bool(spec_augment),
        }

        def dropout(p: float) -> nn.Module:
            return MCDropout(p) if method == "drop" else nn.Dropout(p)

        self.frontend = LogMelFrontend(frontend)
        self.spec_augmenter = SpecAugment() if spec_augment else None
        self.bn0 = nn.BatchNorm2d(frontend.mel_bins)

        trunk: list[str] = []

        def add(name: str, module: nn.Module) -> None:
            setattr(self, name, module)
            trunk.append(name)

        n_drop = 0

        def add_dropout() -> None:
            nonlocal n_drop
            if conv_dropout > 0:
                n_drop += 1
                add(f"dropout{n_drop}", dropout(conv_dropout))

        if spec.family in ("cnn", "cnn5x5"):
            block_cls = ConvBlock if spec.family == "cnn" else ConvBlock5x5
            channels = 1
            for i, (width, pool) in enumerate(zip(spec.widths, spec.pools), start=1):
                add(f"conv_block{i}", block_cls(channels, width, pool))
                add_dropout()
                channels = width
        elif spec.family == "resnet":
            add("conv_block1", ConvBlock(1, 64, (2, 2)))
            add_dropout()
            add("resnet", ResNetTrunk(spec.block, spec.layers, 64, block_dropout))
            add("resnet_pool", nn.AvgPool2d(2))
            add_dropout()
            add("conv_block_after1", ConvBlock(self.resnet.out_channels, spec.embed_dim, (1, 1)))
            add_dropout()
        else:
            add("features", mobilenet_v1_features())
        head = ["dropout_fc1", "fc1", "act_fc1", "dropout_head", "fc_audioset"]
        #: ``"clip"`` or ``"decision_max"`` (see :class:`ArchSpec`).
        self.pooling: str = spec.pooling
        #: Input frames per output segment of the trunk (32 for Cnn14).
        self.frame_ratio: int = spec.time_reduction
        if spec.pooling == "clip":
            add("global_pool", GlobalPool())
        else:
            add("segment_pool", SegmentPool())
            head.append("clip_max")
        self.dropout_fc1 = dropout(fc_dropout)
        self.fc1 = nn.Linear(spec.embed_dim, spec.embed_dim)
        self.act_fc1 = nn.ReLU()
        self.dropout_head = dropout(head_dropout)
        self.fc_audioset = nn.Linear(spec.embed_dim, self.num_classes)
        if spec.pooling == "decision_max":
            self.clip_max = SegmentMax()
        self.embed_dim = spec.embed_dim
        # The shortest clip the network accepts: enough frames to survive every pooling step, and
        # more than half a window for the reflect padding of the STFT.
        self.min_samples = max(self.frontend.min_samples, (spec.time_reduction - 1) * frontend.hop_size + 1)
        self.stage_names: tuple[str, ...] = (*trunk, *head)
        self.trunk_names: tuple[str, ...] = tuple(trunk)

        init_pann_weights(self)
        prior = {
            "prior_mean": prior_mean,
            "prior_sigma": prior_sigma,
            "posterior_mu_init": posterior_mu_init,
            "posterior_rho_init": posterior_rho_init,
        }
        if method == "flip":
            for name in trunk:
                _bayesianize(getattr(self, name), prior)
        if method in ("flip", "detflip"):
            self.fc1 = to_flipout(self.fc1, prior)
            self.fc_audioset = to_flipout(self.fc_audioset, prior)

    # -- metadata ---------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        """Sample rate (Hz) the model expects its waveforms at."""
        return self.frontend_config.sample_rate

    def config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this network (architecture, method, sizes)."""
        return {
            "arch": self.arch,
            "method": self.method,
            "num_classes": self.num_classes,
            "frontend": self.frontend_config.to_dict(),
            **self.model_args,
        }

    def extra_repr(self) -> str:
        """Summary shown by ``repr(module)``."""
        return f"arch={self.arch!r}, method={self.method!r}, num_classes={self.num_classes}"

    # -- input checks -----------------------------------------------------------------------
    def check_waveform(self, waveform: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """Validate a waveform batch and return it as a float tensor on the model's device.

        Args:
            waveform: ``(B, T)`` float tensor at :attr:`sample_rate`.
            sample_rate: The waveform's sample rate, when the caller knows it; it must equal the
                model's.

        Returns:
            The waveform.

        Raises:
            TypeError: If ``waveform`` is not a floating-point tensor.
            ValueError: On a wrong shape, a clip shorter than :attr:`min_samples` or a sample-rate
                mismatch.
        """
        return check_waveform_batch(
            waveform, arch=self.arch, min_samples=self.min_samples, model_rate=self.sample_rate, sample_rate=sample_rate
        )

    # -- forward ----------------------------------------------------------------------------
    def logmel(self, waveform: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """Log-mel spectrogram ``(B, 1, frames, mel_bins)`` before ``bn0`` (PANNs' logmel)."""
        return self.frontend(self.check_waveform(waveform, sample_rate))

    def normalize(self, logmel: torch.Tensor, mixup_lambda: torch.Tensor | None = None) -> torch.Tensor:
        """``bn0`` over mel bins, then SpecAugment and mixup in training mode only."""
        x = self.bn0(logmel.transpose(1, 3)).transpose(1, 3)
        if self.training:
            if self.spec_augmenter is not None:
                x = self.spec_augmenter(x)
            if mixup_lambda is not None:
                x = do_mixup(x, mixup_lambda)
        return x

    def run_stages(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Run ``stage_names[start:stop]`` on ``x`` (the stages after :meth:`normalize`)."""
        for name in self.stage_names[start:stop]:
            x = getattr(self, name)(x)
        return x

    def first_stochastic_stage(self) -> int:
        """Index of the first stage that contains a stochastic module (``len(stages)`` if none)."""
        for index, name in enumerate(self.stage_names):
            module = getattr(self, name)
            if any(isinstance(m, StochasticModule) for m in module.modules()):
                return index
        return len(self.stage_names)

    def pooled(self, waveform: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """Pooled features, the input of fc1: ``(B, D)`` per clip, or ``(B, segments, D)`` for a decision-level head."""
        x = self.normalize(self.logmel(waveform, sample_rate))
        return self.run_stages(x, 0, len(self.trunk_names))

    def clip_embedding(self, hidden: torch.Tensor) -> torch.Tensor:
        """One embedding per clip from the fc1 output: ``hidden`` itself, or its maximum over segments.

        Args:
            hidden: ``relu(fc1(pooled))``, ``(B, D)`` or ``(B, segments, D)`` for a decision-level head.

        Returns:
            ``(B, D)``.
        """
        return hidden if self.pooling == "clip" else torch.amax(hidden, dim=1)

    def embed(self, waveform: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """The fc1 embedding ``relu(fc1(pooled))`` of shape ``(B, D)`` (PANNs' ``embedding``).

        For a decision-level head (``cnn14-dlmax``), whose PANNs original returns no embedding,
        it is the maximum over segments of the per-segment embeddings.
        """
        x = self.pooled(waveform, sample_rate)
        n = len(self.trunk_names)
        return self.clip_embedding(self.run_stages(x, n, n + 3))

    # -- framewise output (decision-level heads) --------------------------------------------
    def _require_framewise(self) -> None:
        if self.pooling == "clip":
            framewise = ", ".join(a for a, s in ARCHITECTURES.items() if s.pooling != "clip")
            raise ValueError(
                f"{self.method}-{self.arch} has a clip-level head and no framewise output; sound event "
                f"detection needs a decision-level architecture ({framewise}), e.g. "
                f"vipann.create_model('{self.method}-cnn14-dlmax') or the PANNs checkpoint "
                "Cnn14_DecisionLevelMax_mAP=0.385.pth"
            )

    @property
    def segment_stop(self) -> int:
        """Index of the first stage after the segment logits ``(B, segments, C)`` (decision-level heads).

        ``run_stages(x, 0, model.segment_stop)`` gives the segment logits;
        :meth:`upsample_segments` turns them into framewise logits.

        Raises:
            ValueError: For a clip-level architecture.
        """
        self._require_framewise()
        return self.stage_names.index("clip_max")

    def upsample_segments(self, segments: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Segment outputs at the input frame rate, as PANNs' ``Interpolator`` and ``pad_framewise_output``.

        Each segment is repeated :attr:`frame_ratio` times (nearest interpolation) and the last
        value is repeated to ``num_frames``. Works on logits or probabilities alike (the sigmoid is
        element-wise), with any leading axes.

        Args:
            segments: ``(..., segments, C)``.
            num_frames: Frames of the log-mel input (``frontend_config.num_frames(samples)``).

        Returns:
            ``(..., num_frames, C)``.

        Raises:
            ValueError: If ``num_frames`` is shorter than the upsampled segments.
        """
        up = torch.repeat_interleave(segments, self.frame_ratio, dim=-2)
        missing = num_frames - up.shape[-2]
        if missing < 0:
            raise ValueError(f"{segments.shape[-2]} segments cover more than num_frames={num_frames} frames")
        if missing == 0:
            return up
        pad = up[..., -1:, :].expand(*up.shape[:-2], missing, up.shape[-1])
        return torch.cat((up, pad), dim=-2)

    def framewise(self, waveform: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """Framewise logits of a decision-level model (PANNs' ``framewise_output`` before the sigmoid).

        ``torch.sigmoid(model.framewise(x))`` is panns-inference's ``framewise_output``; its maximum
        over frames is ``torch.sigmoid(model(x))``. Stochastic modules follow the model's mode
        (off in ``eval()``, sampling inside :func:`vipann.layers.mc_sampling`).

        Args:
            waveform: ``(B, T)`` float waveform at :attr:`sample_rate`.
            sample_rate: Optional sample rate of ``waveform``, checked against the model's.

        Returns:
            Logits ``(B, frames, num_classes)``, one row per log-mel frame
            (``frames = 1 + T // hop_size``).

        Raises:
            ValueError: For a clip-level architecture (every one but ``cnn14-dlmax``), or a bad
                waveform.
        """
        self._require_framewise()
        x = self.normalize(self.logmel(waveform, sample_rate))
        return self.upsample_segments(self.run_stages(x, 0, self.segment_stop), x.shape[2])

    def forward(
        self,
        waveform: torch.Tensor,
        mixup_lambda: torch.Tensor | None = None,
        *,
        sample_rate: int | None = None,
    ) -> torch.Tensor:
        """Logits for a batch of waveforms.

        Args:
            waveform: ``(B, T)`` float waveform at :attr:`sample_rate`.
            mixup_lambda: PANNs-style mixup coefficients ``(B,)``; used in training mode only,
                where the output batch is ``B // 2`` (pairs are mixed).
            sample_rate: Optional sample rate of ``waveform``, checked against the model's.

        Returns:
            Logits ``(B, num_classes)``; no sigmoid/softmax is applied.
        """
        x = self.normalize(self.logmel(waveform, sample_rate), mixup_lambda)
        return self.run_stages(x)
