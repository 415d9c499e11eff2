"""The EfficientAT family (``mn04``, ``mn10``, ``mn20``, ``dymn10``) in vipann's four methods.

One class, :class:`EfficientAT`, builds every architecture; the flavour is the ``method`` argument:

* ``det``: EfficientAT's network. Its only dropout (p=0.2 before the classifier) is training-only.
* ``drop``: the same weights; the classifier's dropout is an :class:`~vipann.layers.MCDropout`
  site kept active while sampling. EfficientAT trains no dropout in its backbone, and Monte-Carlo
  dropout approximates a posterior only where the network was trained with dropout, so the released
  weights get no backbone site. ``conv_dropout > 0`` adds sites (p=conv_dropout) at the end of each
  resolution stage (after blocks 3, 6, 12 and 15 of the 15), for networks trained or fine-tuned with
  them; ``fc_dropout > 0`` adds one before fc1 (the transfer recipe's Drop head uses both head sites).
* ``flip``: every weight after the front end is Flipout: every convolution (the stem, the 1x1 and
  depthwise convolutions, the last 1x1 convolution), both linear layers of every squeeze-excitation
  block, and in ``dymn`` the dynamic convolutions' kernel banks
  (:class:`~vipann.models.efficientat.dynamic.DynamicConvFlipout`), the attention and Dy-ReLU
  coefficient layers and the context generator's convolutions. Squeeze-excitation and the dynamic
  layers compute weights *from* the input; making them Bayesian too keeps "every weight has a
  posterior" true, so the epistemic uncertainty covers the input-dependent recalibration and kernel
  selection that distinguishes these networks. BatchNorm, the Dy-Conv temperature and Dy-ReLU's
  constants stay deterministic, as does the front end.
* ``detflip``: deterministic backbone (squeeze-excitation and dynamic layers included), Flipout
  fc1 and classifier.

``forward`` maps a waveform ``(B, T)`` at 32 kHz to logits ``(B, C)``. The network is a list of
named stages (:attr:`EfficientAT.stage_names`: the trunk's modules, ``global_pool``, then the head
``dropout_fc1, fc1, act_fc1, dropout_head, fc_audioset``), so prediction code runs the deterministic
prefix once and only the stochastic suffix per Monte-Carlo sample: a ``drop`` or ``detflip``
model samples its head alone.

References:
    F. Schmid, K. Koutini, G. Widmer, "Efficient Large-Scale Audio Tagging via Transformer-to-CNN
    Knowledge Distillation", ICASSP 2023. F. Schmid, K. Koutini, G. Widmer, "Dynamic Convolutional
    Neural Networks as Efficient Pre-trained Audio Models", IEEE/ACM TASLP 32, 2024.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from vipann.layers import MCDropout, StochasticModule
from vipann.layers.bayesianize import to_flipout
from vipann.models.augment import SpecAugment, do_mixup
from vipann.models.efficientat.archs import ARCHITECTURES, EfficientATSpec, dymn_trunk, mn_trunk
from vipann.models.efficientat.blocks import RESOLUTION_STAGE_ENDS
from vipann.models.efficientat.dynamic import DynamicConv
from vipann.models.efficientat.frontend import EfficientATFrontendConfig, KaldiLogMelFrontend
from vipann.models.waveform import check_waveform_batch

__all__ = ["METHODS", "EfficientAT"]

METHODS = ("det", "drop", "flip", "detflip")
#: EfficientAT's training masks (``freqm=48``, ``timem=192``), as stripes of vipann's SpecAugment.
_MASKS = {"time_drop_width": 192, "time_stripes_num": 1, "freq_drop_width": 48, "freq_stripes_num": 1}


def _check_choice(kind: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {kind} {value!r}; choose one of: {', '.join(choices)}")


def bayesianize(parent: nn.Module, prior: dict[str, float]) -> None:
    """Replace every Conv2d, Linear and :class:`DynamicConv` below ``parent`` by its Flipout form, in place."""
    for name, child in parent.named_children():
        if isinstance(child, (nn.Conv2d, nn.Linear)):
            setattr(parent, name, to_flipout(child, prior))
            continue
        bayesianize(child, prior)
        if isinstance(child, DynamicConv):
            setattr(parent, name, child.to_flipout(**prior))


class _GlobalPool(nn.Module):
    """Mean over frequency and time: ``(B, C, F, T)`` -> ``(B, C)`` (EfficientAT's embedding)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class EfficientAT(nn.Module):
    """An EfficientAT audio tagger (MobileNetV3 or dynamic MobileNet) in one of four flavours.

    Args:
        arch: Architecture id: ``mn04``, ``mn10``, ``mn20`` or ``dymn10``.
        method: ``"det"``, ``"drop"``, ``"flip"`` or ``"detflip"``.
        num_classes: Number of output logits (527 for AudioSet).
        frontend: Front-end configuration (default: EfficientAT's; 32 kHz, 128 Kaldi mels).
        head_dropout: Dropout before the classifier (EfficientAT: 0.2); an MC site for ``drop``.
        fc_dropout: Dropout before fc1 (EfficientAT has none: 0).
        conv_dropout: Dropout at the end of each resolution stage (0: none, as EfficientAT).
        dyconv_temperature: Softmax temperature of the dynamic convolutions (``dymn``; 1 for the
            AudioSet-trained weights).
        prior_mean: Prior mean of new Flipout layers.
        prior_sigma: Prior standard deviation of new Flipout layers.
        posterior_mu_init: Initial posterior mean of new Flipout layers.
        posterior_rho_init: Initial posterior rho of new Flipout layers.
        spec_augment: Mask frequency and time stripes in training mode (EfficientAT's 48 bins and
            192 frames).

    Raises:
        ValueError: For an unknown architecture or method, or invalid sizes.

    Example:
        >>> import torch
        >>> from vipann.models import EfficientAT
        >>> model = EfficientAT("mn04", "drop", num_classes=10).eval()
        >>> model(torch.randn(2, 32000)).shape
        torch.Size([2, 10])
    """

    #: :class:`~vipann.tagging.AudioTagging` returns the pooled features as the embedding, as EfficientAT does.
    embedding_is_pooled = True

    def __init__(
        self,
        arch: str,
        method: str = "det",
        num_classes: int = 527,
        *,
        frontend: EfficientATFrontendConfig | dict[str, Any] | None = None,
        head_dropout: float = 0.2,
        fc_dropout: float = 0.0,
        conv_dropout: float = 0.0,
        dyconv_temperature: float = 1.0,
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
        for name, p in (("head_dropout", head_dropout), ("fc_dropout", fc_dropout), ("conv_dropout", conv_dropout)):
            if not 0.0 <= float(p) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p}")
        if float(dyconv_temperature) <= 0:
            raise ValueError(f"dyconv_temperature must be positive, got {dyconv_temperature}")
        spec: EfficientATSpec = ARCHITECTURES[arch]
        if frontend is None:
            frontend = spec.frontend
        elif isinstance(frontend, dict):
            frontend = EfficientATFrontendConfig.from_dict(frontend)
        self.arch, self.method, self.num_classes = arch, method, int(num_classes)
        self.kind = spec.kind
        self.frontend_config: EfficientATFrontendConfig = frontend
        self.model_args: dict[str, Any] = {
            "head_dropout": float(head_dropout),
            "fc_dropout": float(fc_dropout),
            "conv_dropout": float(conv_dropout),
            "dyconv_temperature": float(dyconv_temperature),
            "prior_mean": float(prior_mean),
            "prior_sigma": float(prior_sigma),
            "posterior_mu_init": float(posterior_mu_init),
            "posterior_rho_init": float(posterior_rho_init),
            "spec_augment": bool(spec_augment),
        }

        def dropout(p: float) -> nn.Module:
            if p == 0:
                return nn.Identity()
            return MCDropout(p) if method == "drop" else nn.Dropout(p)

        self.frontend = KaldiLogMelFrontend(frontend)
        self.spec_augmenter = SpecAugment(**_MASKS) if spec_augment else None
        if spec.kind == "mn":
            self.features = mn_trunk(spec.width_mult)
            blocks = [f"features.{i}" for i in range(len(self.features))]
        else:
            self.in_c, self.layers, self.out_c = dymn_trunk(spec.width_mult, dyconv_temperature)
            blocks = ["in_c", *(f"layers.{i}" for i in range(len(self.layers))), "out_c"]
        trunk: list[str] = []
        for index, name in enumerate(blocks):
            trunk.append(name)
            if conv_dropout > 0 and index - 1 in RESOLUTION_STAGE_ENDS:  # blocks[0] is the stem
                site = f"dropout{RESOLUTION_STAGE_ENDS.index(index - 1) + 1}"
                setattr(self, site, dropout(conv_dropout))
                trunk.append(site)
        self.global_pool = _GlobalPool()
        trunk.append("global_pool")
        self.embed_dim = spec.embed_dim
        self.hidden_dim = spec.hidden_dim
        self.dropout_fc1 = dropout(fc_dropout)
        self.fc1 = nn.Linear(self.embed_dim, self.hidden_dim)
        self.act_fc1 = nn.Hardswish()
        self.dropout_head = dropout(head_dropout)
        self.fc_audioset = nn.Linear(self.hidden_dim, self.num_classes)
        self.trunk_names: tuple[str, ...] = tuple(trunk)
        self.stage_names: tuple[str, ...] = (*trunk, "dropout_fc1", "fc1", "act_fc1", "dropout_head", "fc_audioset")
        #: Clip-level head (one pooled vector per clip), like the PANN ``"clip"`` layout.
        self.pooling = "clip"
        # Any clip the front end accepts passes the trunk (padded strided convolutions keep >= 1 frame).
        self.min_samples = self.frontend.min_samples
        self._init_weights()
        prior = {
            "prior_mean": float(prior_mean),
            "prior_sigma": float(prior_sigma),
            "posterior_mu_init": float(posterior_mu_init),
            "posterior_rho_init": float(posterior_rho_init),
        }
        if method == "flip":
            for name in ("features", "in_c", "layers", "out_c"):
                if hasattr(self, name):
                    bayesianize(getattr(self, name), prior)
        if method in ("flip", "detflip"):
            self.fc1 = to_flipout(self.fc1, prior)
            self.fc_audioset = to_flipout(self.fc_audioset, prior)

    def _init_weights(self) -> None:
        # EfficientAT's initialisation: He (fan-out) convolutions, N(0, 0.01) linear layers, unit BN.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

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

    def logmel_shape(self, num_samples: int, batch_size: int = 1) -> tuple[int, int, int, int]:
        """Shape of :meth:`logmel`'s output for ``batch_size`` clips of ``num_samples`` samples."""
        c = self.frontend_config
        return (batch_size, 1, c.mel_bins, c.num_frames(num_samples))

    # -- input checks -----------------------------------------------------------------------
    def check_waveform(self, waveform: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """Validate a waveform batch and return it.

        Args:
            waveform: ``(B, T)`` float tensor at :attr:`sample_rate`.
            sample_rate: The waveform's sample rate, when the caller knows it; it must equal the model's.

        Returns:
            The waveform.

        Raises:
            TypeError: If ``waveform`` is not a floating-point tensor.
            ValueError: On a wrong shape, a clip shorter than :attr:`min_samples` or a sample-rate mismatch.
        """
        return check_waveform_batch(
            waveform, arch=self.arch, min_samples=self.min_samples, model_rate=self.sample_rate, sample_rate=sample_rate
        )

    # -- forward ----------------------------------------------------------------------------
    def logmel(self, waveform: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """Normalised log-mel spectrogram ``(B, 1, mel_bins, frames)`` (EfficientAT's network input)."""
        return self.frontend(self.check_waveform(waveform, sample_rate))

    def normalize(self, logmel: torch.Tensor, mixup_lambda: torch.Tensor | None = None) -> torch.Tensor:
        """Training-time masking and mixup; the identity in ``eval()`` (the front end normalises already).

        EfficientAT masks the log-mel before its normalisation, so a masked bin reads
        ``shift / scale`` (0.9) afterwards; the stripes here are set to that value.
        """
        if not self.training:
            return logmel
        x = logmel
        if self.spec_augmenter is not None:
            keep = self.spec_augmenter(torch.ones_like(x).transpose(2, 3)).transpose(2, 3)
            x = torch.where(keep == 0, self.frontend_config.shift / self.frontend_config.scale, x)
        if mixup_lambda is not None:
            x = do_mixup(x, mixup_lambda)
        return x

    def run_stages(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Run ``stage_names[start:stop]`` on ``x`` (the stages after :meth:`normalize`)."""
        for name in self.stage_names[start:stop]:
            x = self.get_submodule(name)(x)
        return x

    def first_stochastic_stage(self) -> int:
        """Index of the first stage that contains a stochastic module (``len(stages)`` if none)."""
        for index, name in enumerate(self.stage_names):
            if any(isinstance(m, StochasticModule) for m in self.get_submodule(name).modules()):
                return index
        return len(self.stage_names)

    def pooled(self, waveform: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """Pooled features ``(B, embed_dim)``: the input of fc1, and EfficientAT's embedding."""
        x = self.normalize(self.logmel(waveform, sample_rate))
        return self.run_stages(x, 0, len(self.trunk_names))

    def clip_embedding(self, hidden: torch.Tensor) -> torch.Tensor:
        """The classifier's hidden activations per clip (``hardswish(fc1(pooled))``), unchanged."""
        return hidden

    def embed(self, waveform: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """EfficientAT's embedding: the pooled last feature map ``(B, embed_dim)`` (384 / 960 / 1920 values)."""
        return self.pooled(waveform, sample_rate)

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
            mixup_lambda: Mixup coefficients ``(B,)``; used in training mode only, where the output
                batch is ``B // 2`` (pairs are mixed).
            sample_rate: Optional sample rate of ``waveform``, checked against the model's.

        Returns:
            Logits ``(B, num_classes)``; no sigmoid/softmax is applied.
        """
        x = self.normalize(self.logmel(waveform, sample_rate), mixup_lambda)
        return self.run_stages(x)
