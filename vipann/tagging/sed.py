"""A drop-in replacement for ``panns_inference.SoundEventDetection``, with Monte-Carlo uncertainty per frame.

Code written for `panns-inference <https://pypi.org/project/panns-inference/>`_ changes in two
lines::

    from vipann import SoundEventDetection        # was: from panns_inference import SoundEventDetection
    sed = SoundEventDetection(checkpoint_path=None, device="cuda")
    framewise_output = sed.inference(audio)        # audio: (batch, samples) at 32 kHz

and gains ``sed.inference(audio, num_samples=30, return_uncertainty=True)``: the mean framewise
probabilities of 30 Monte-Carlo passes with their total, aleatoric and epistemic uncertainty per
frame.

The model is PANNs ``Cnn14_DecisionLevelMax`` (vipann ``*-cnn14-dlmax``); by default
``drop-cnn14-dlmax``, whose single deterministic pass is panns-inference's computation. Its
weights are found as :class:`vipann.AudioTagging` finds them (:mod:`vipann.tagging`), first in
panns-inference's own file ``~/panns_data/Cnn14_DecisionLevelMax.pth`` (or the Zenodo name
``Cnn14_DecisionLevelMax_mAP=0.385.pth``), and are never downloaded: a missing file raises
:class:`~vipann.tagging.CheckpointNotFoundError`, which names the Zenodo URL and the
``vipann convert`` command.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from numpy.typing import ArrayLike

from vipann.inference.sampler import default_draws, default_rows, sample_logits
from vipann.inference.temperature import apply_temperature
from vipann.layers.stochastic import check_draws
from vipann.models.pann import ARCHITECTURES, PANN
from vipann.tagging._base import PannsInference
from vipann.uncertainty import decompose

__all__ = ["DEFAULT_SED_MODEL", "SoundEventDetection"]

#: The model :class:`SoundEventDetection` builds when none is named: Cnn14_DecisionLevelMax with MC
#: dropout, whose deterministic output (``num_samples=1``) is exactly panns-inference's.
DEFAULT_SED_MODEL = "drop-cnn14-dlmax"


class SoundEventDetection(PannsInference):
    """Framewise sound event detection with the interface of ``panns_inference.SoundEventDetection``.

    ``inference(audio)`` returns what panns-inference returns: sigmoid probabilities per log-mel
    frame, ``(B, frames, 527)`` NumPy float32 with ``frames = 1 + samples // 320`` (100 frames per
    second at 32 kHz). For the default model the numbers equal panns-inference's to float32
    rounding (the test suite checks it against ``panns_inference`` itself).

    Attributes:
        model: The vipann network (:class:`vipann.PANN` with a decision-level head), in ``eval()``.
        name: Its vipann name, e.g. ``"drop-cnn14-dlmax"``.
        source: Where the weights came from (a file, ``local-dir:...``, ``hf-hub:...``).
        labels: The class names, in output order (a list, like panns-inference's ``labels``).
        classes_num: The number of classes.
        device: The device the model runs on.
        multilabel: True for sigmoid outputs (AudioSet), False for a softmax classifier.
        num_samples: The default number of Monte-Carlo samples, or None (see :meth:`inference`).

    Example:
        >>> from vipann import SoundEventDetection
        >>> sed = SoundEventDetection(checkpoint_path=None, device="cuda")  # doctest: +SKIP
        >>> framewise_output = sed.inference(audio[None, :])  # doctest: +SKIP
        >>> mean, unc = sed.inference(audio[None, :], num_samples=30, return_uncertainty=True)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | PANN | None = None,
        checkpoint_path: str | os.PathLike[str] | None = None,
        device: str | torch.device | None = None,
        interpolate_mode: str = "nearest",
        num_samples: int | None = None,
    ) -> None:
        """Load the model.

        Args:
            model: A registry name of a decision-level model (``"drop-cnn14-dlmax"``,
                ``"det-cnn14-dlmax"``, ``"flip-cnn14-dlmax"``, ``"detflip-cnn14-dlmax"``), a source
                (``"local-dir:PATH"``, ``"hf-hub:org/name"``), or a :class:`vipann.PANN` instance
                with a decision-level head. ``None`` (as in panns-inference) means
                :data:`DEFAULT_SED_MODEL`, or with a PANNs ``checkpoint_path`` the ``drop`` flavour.
            checkpoint_path: ``~/panns_data/Cnn14_DecisionLevelMax.pth`` as panns-inference keeps
                it, ``Cnn14_DecisionLevelMax_mAP=0.385.pth`` from Zenodo record 3987831, or a
                vipann model directory. It becomes ``model`` when that is a registry name.
            device: ``"cpu"``, ``"cuda"``, ... Default: CUDA when available. ``"cuda"`` without a
                GPU falls back to the CPU, as in panns-inference.
            interpolate_mode: ``"nearest"``, the only mode panns-inference implements: each
                segment's output is repeated over its 32 frames.
            num_samples: Default number of Monte-Carlo samples for :meth:`inference`.

        Raises:
            CheckpointNotFoundError: When no weights are available locally; the message names the
                checkpoint file, its Zenodo URL and the ``vipann convert`` command.
            vipann.CheckpointError: For a checkpoint vipann cannot use (an unimplemented variant,
                another architecture than ``model`` or than its file name says, a corrupt file).
            ValueError: For a clip-level model (it has no framewise output), another
                ``interpolate_mode``, contradictory arguments or an unknown model name.
        """
        if interpolate_mode != "nearest":
            raise ValueError(
                f"interpolate_mode={interpolate_mode!r} is not supported; panns-inference and vipann implement "
                "'nearest' only (each segment's output repeated over its frames)"
            )
        self._setup(model, checkpoint_path, device, num_samples, DEFAULT_SED_MODEL)
        if self.model.pooling == "clip":
            framewise = [a for a, spec in ARCHITECTURES.items() if spec.pooling != "clip"]
            raise ValueError(
                f"{self.name} (from {self.source}) is a clip-level model without framewise output; "
                f"SoundEventDetection needs a decision-level one ({', '.join(framewise)}), e.g. "
                f"{DEFAULT_SED_MODEL!r} from the PANNs checkpoint Cnn14_DecisionLevelMax_mAP=0.385.pth. "
                "For clip-level tags use vipann.AudioTagging."
            )

    @torch.no_grad()
    def _segment_probs(
        self, wave: torch.Tensor, samples: int, generator: torch.Generator | int | None, draws: str | None = None
    ):
        if draws is not None:
            check_draws(draws)
        net = self.model.eval()
        stop = net.segment_stop
        if samples == 1:
            logits = net.run_stages(net.normalize(net.logmel(wave)), 0, stop)[None]
        else:
            if isinstance(generator, int):
                generator = torch.Generator(device=self.device).manual_seed(generator)
            draws = draws or default_draws(net)
            rows = default_rows(net.method, self.device, draws)
            logits = sample_logits(net, wave, samples, generator, rows, stop=stop, draws=draws)
        cfg = getattr(net, "pretrained_cfg", None)
        if getattr(cfg, "temperature", None) is not None:
            logits = apply_temperature(logits, cfg.temperature)
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=-1)

    @torch.no_grad()
    def inference(
        self,
        audio: ArrayLike | torch.Tensor,
        num_samples: int | None = None,
        return_uncertainty: bool = False,
        *,
        generator: torch.Generator | int | None = None,
        sample_rate: int | None = None,
        draws: str | None = None,
    ) -> np.ndarray | tuple[np.ndarray, dict[str, np.ndarray]]:
        """Detect sound events frame by frame in a batch of clips.

        The network scores segments of 32 frames (0.32 s at 32 kHz); every frame of a segment gets
        its segment's value and the frames after the last full segment get the last one
        (PANNs' nearest interpolation and padding). With ``S = 1`` (the default without
        ``return_uncertainty``) the network runs once with every stochastic module off, which is
        panns-inference's computation; with ``S > 1`` the probabilities are the mean of ``S``
        Monte-Carlo passes. ``S`` is ``num_samples``, else the instance's ``num_samples``, else 1,
        or with ``return_uncertainty=True`` the model's recommended number (30 for ``drop``/
        ``flip``/``detflip``). ``det`` models always make one pass. A calibrated model's
        temperature (``pretrained_cfg.temperature``) divides the logits of every pass.

        Args:
            audio: ``(B, T)`` float waveforms at the model's sample rate (32 kHz for the AudioSet
                models), NumPy or torch, as panns-inference takes them; ``(T,)`` is one clip.
            num_samples: Monte-Carlo samples ``S`` (see above).
            return_uncertainty: Also return the uncertainty of every frame.
            generator: Seed or :class:`torch.Generator` for reproducible Monte-Carlo sampling.
            sample_rate: The audio's sample rate when known; it must equal the model's.
            draws: How Flipout layers draw weight noise for ``S > 1``: ``"independent"`` or
                ``"shared"`` (one draw per pass, sign vectors per clip and sample: each sample is
                one weight draw for all segments of a clip); default
                :func:`vipann.inference.default_draws`.

        Returns:
            ``framewise_output``: NumPy float32 ``(B, frames, classes_num)``. With
            ``return_uncertainty=True``, ``(framewise_output, uncertainty)`` where
            ``framewise_output`` is the mean over the ``S`` samples and ``uncertainty`` a dict of
            NumPy float32 arrays computed per frame from the ``(S, B, frames, C)`` probabilities
            (:func:`vipann.uncertainty.decompose`):

            * ``"total"`` ``(B, frames)``: predictive entropy, in nats (for multi-label models a
              sum over classes of binary entropies);
            * ``"aleatoric"`` ``(B, frames)``: expected entropy of the samples;
            * ``"epistemic"`` ``(B, frames)``: mutual information, ``total - aleatoric`` (0 when
              ``S = 1``);
            * ``"std"`` ``(B, frames, C)``: standard deviation of each probability over the samples.

        Raises:
            TypeError: For integer audio (pass float in [-1, 1]).
            ValueError: For a wrong shape, clips that are too short, or a sample-rate mismatch.
        """
        samples = self._samples(num_samples, return_uncertainty)
        wave = self.model.check_waveform(self._waveform(audio), sample_rate)
        frames = self.model.frontend_config.num_frames(wave.shape[-1])
        probs = self._segment_probs(wave, samples, generator, draws)  # (S, B, segments, C)
        framewise = self.model.upsample_segments(probs.mean(0), frames).float().cpu().numpy()
        if not return_uncertainty:
            return framewise
        s, b, t, c = probs.shape
        parts = decompose(probs.reshape(s, b * t, c), self.multilabel)
        std = probs.std(0) if s > 1 else torch.zeros_like(probs[0])
        per_frame = {
            "total": parts.total.reshape(b, t, 1),
            "aleatoric": parts.aleatoric.reshape(b, t, 1),
            "epistemic": parts.epistemic.reshape(b, t, 1),
            "std": std,
        }
        uncertainty = {}
        for key, value in per_frame.items():
            value = self.model.upsample_segments(value, frames)
            uncertainty[key] = (value if key == "std" else value[..., 0]).float().cpu().numpy()
        return framewise, uncertainty
