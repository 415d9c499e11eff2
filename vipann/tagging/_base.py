"""What :class:`~vipann.tagging.AudioTagging` and :class:`~vipann.tagging.SoundEventDetection` share."""

from __future__ import annotations

import logging
import os
import warnings

import numpy as np
import torch
from numpy.typing import ArrayLike

from vipann.models.pann import PANN
from vipann.models.waveform import check_audio_values
from vipann.tagging.weights import load_model

__all__ = ["PannsInference"]

logger = logging.getLogger("vipann.tagging")


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        # panns-inference's default is device='cuda' with a fall-back to the CPU; keep scripts working.
        logger.warning("CUDA is not available; the model runs on the CPU")
        return torch.device("cpu")
    return device


class PannsInference:
    """What :class:`AudioTagging` and :class:`vipann.SoundEventDetection` share: loading, device, labels, S."""

    model: PANN
    name: str
    source: str

    def _setup(
        self,
        model: str | PANN | None,
        checkpoint_path: str | os.PathLike[str] | None,
        device: str | torch.device | None,
        num_samples: int | None,
        default: str,
    ) -> None:
        net, self.name, self.source = load_model(model, checkpoint_path, default)
        self.device = _device(device)
        self.model = net.to(self.device).eval()
        cfg = getattr(net, "pretrained_cfg", None)
        self.multilabel: bool = bool(cfg.multilabel) if cfg is not None else True
        labels = cfg.labels if cfg is not None and len(cfg.labels) == net.num_classes else ()
        self.labels: list[str] = list(labels) or [f"class_{i}" for i in range(net.num_classes)]
        self.classes_num: int = net.num_classes
        self._default_samples = cfg.default_num_samples if cfg is not None else (1 if net.method == "det" else 30)
        if num_samples is not None and int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.num_samples = None if num_samples is None else int(num_samples)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.name!r}, source={self.source!r}, device={str(self.device)!r})"

    def _samples(self, num_samples: int | None, return_uncertainty: bool) -> int:
        if num_samples is None:
            num_samples = self.num_samples
        if num_samples is None:
            num_samples = self._default_samples if return_uncertainty else 1
        num_samples = int(num_samples)
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if num_samples > 1 and self.model.method == "det":
            warnings.warn(
                f"{self.name} is deterministic: num_samples={num_samples} is ignored (one pass); use a drop, flip "
                "or detflip model for Monte-Carlo uncertainty",
                stacklevel=3,
            )
            num_samples = 1
        return num_samples

    def _waveform(self, audio: ArrayLike | torch.Tensor) -> torch.Tensor:
        if isinstance(audio, torch.Tensor):
            wave = audio
        else:
            wave = torch.from_numpy(np.require(np.asarray(audio), requirements=("C_CONTIGUOUS", "WRITEABLE")))
        if wave.dim() == 1:
            wave = wave[None]
        if wave.is_floating_point() or wave.device.type == "meta":
            check_audio_values(wave)  # the same rule as vipann.predict: no NaN, inf or overflowing samples
        if wave.is_floating_point():
            wave = wave.to(torch.float32)  # panns-inference also computes in float32
        return wave.to(self.device)
