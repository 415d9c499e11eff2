"""A drop-in replacement for ``panns_inference.AudioTagging``, with Monte-Carlo uncertainty.

Code written for `panns-inference <https://pypi.org/project/panns-inference/>`_ changes in two
lines::

    from vipann import AudioTagging                       # was: from panns_inference import AudioTagging
    tagger = AudioTagging(checkpoint_path=None, device="cuda")
    clipwise_output, embedding = tagger.inference(audio)  # audio: (batch, samples) at 32 kHz

and gains ``tagger.inference(audio, num_samples=30, return_uncertainty=True)``.

Weights are found as :mod:`vipann.tagging.weights` describes, and never downloaded silently:

1. ``checkpoint_path``: a PANNs ``.pth`` (as panns-inference downloads it) or a directory written
   by :func:`vipann.save_pretrained` / ``vipann convert``;
2. the PANNs release file in ``~/panns_data`` where panns-inference keeps it
   (``Cnn14_mAP=0.431.pth`` for the ``*-cnn14`` names; ``Cnn14_DecisionLevelMax.pth`` or
   ``Cnn14_DecisionLevelMax_mAP=0.385.pth`` for ``*-cnn14-dlmax``), converted in memory;
3. :func:`vipann.from_pretrained` (the Hugging Face Hub, or ``local-dir:``/``hf-hub:`` sources).

When none holds the weights, :class:`CheckpointNotFoundError` says how to get them.

The decision-level ``Cnn14_DecisionLevelMax`` checkpoint (panns-inference's sound event detection
model) works here too, as ``*-cnn14-dlmax``: its clipwise output is the maximum of its framewise
output. Its framewise output is :class:`vipann.SoundEventDetection` (:mod:`vipann.tagging.sed`).
"""

from __future__ import annotations

import os
from typing import Literal, overload

import numpy as np
import torch
from numpy.typing import ArrayLike

from vipann.inference.predict import Prediction, predict
from vipann.layers.stochastic import check_draws
from vipann.models.pann import PANN
from vipann.tagging._base import PannsInference
from vipann.tagging.weights import DEFAULT_MODEL, CheckpointNotFoundError, panns_data_dir

__all__ = ["DEFAULT_MODEL", "AudioTagging", "CheckpointNotFoundError", "panns_data_dir"]


class AudioTagging(PannsInference):
    """Clip-level audio tagging with the interface of ``panns_inference.AudioTagging``.

    ``inference(audio)`` returns what panns-inference returns: sigmoid probabilities
    ``(B, 527)`` and the 2048-d embedding ``(B, 2048)``, NumPy float32. For the default Cnn14 the
    numbers equal panns-inference's to float32 rounding (the test suite checks it against
    ``panns_inference`` itself). Monte-Carlo sampling adds the mean probabilities of ``S``
    stochastic passes and their uncertainty.

    Attributes:
        model: The vipann network (:class:`vipann.PANN`), in ``eval()`` mode.
        name: Its vipann name, e.g. ``"drop-cnn14"``.
        source: Where the weights came from (a file, ``local-dir:...``, ``hf-hub:...``).
        labels: The class names, in output order (a list, like panns-inference's ``labels``).
        classes_num: The number of classes.
        device: The device the model runs on.
        multilabel: True for sigmoid outputs (AudioSet), False for a softmax classifier.
        num_samples: The default number of Monte-Carlo samples, or None (see :meth:`inference`).

    Example:
        >>> from vipann import AudioTagging
        >>> tagger = AudioTagging(checkpoint_path=None, device="cuda")  # doctest: +SKIP
        >>> clipwise_output, embedding = tagger.inference(audio[None, :])  # doctest: +SKIP
        >>> mean, embedding, unc = tagger.inference(audio[None], 30, return_uncertainty=True)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | PANN | None = None,
        checkpoint_path: str | os.PathLike[str] | None = None,
        device: str | torch.device | None = None,
        num_samples: int | None = None,
    ) -> None:
        """Load the model.

        Args:
            model: A registry name (``"drop-cnn14"``, ``"det-cnn14"``, ``"flip-resnet54"``, ...), a
                source (``"local-dir:PATH"``, ``"hf-hub:org/name"``), or a :class:`vipann.PANN`
                instance (used as it is: moved to ``device`` and put in ``eval()`` mode). ``None``
                (as in panns-inference) means :data:`DEFAULT_MODEL`, or with a PANNs
                ``checkpoint_path`` the ``drop`` flavour of that checkpoint's architecture.
            checkpoint_path: A PANNs ``.pth`` file (``~/panns_data/Cnn14_mAP=0.431.pth``, any
                release file from Zenodo record 3987831, including
                ``Cnn14_DecisionLevelMax_mAP=0.385.pth``, which becomes ``drop-cnn14-dlmax``), a
                VI-PANN/bayesian-torch ``.pth``, or a vipann model directory. It becomes ``model``
                when that is a registry name.
            device: ``"cpu"``, ``"cuda"``, ... Default: CUDA when available. ``"cuda"`` without a
                GPU falls back to the CPU, as in panns-inference.
            num_samples: Default number of Monte-Carlo samples for :meth:`inference`.

        Raises:
            CheckpointNotFoundError: When no weights are available locally; the message names the
                checkpoint file (Zenodo record 3987831) and the ``vipann convert`` command.
            vipann.CheckpointError: For a checkpoint vipann cannot use: an unimplemented PANNs
                variant (``Cnn14_DecisionLevelAtt``, Wavegram, 16 kHz), a checkpoint of another
                architecture than ``model`` or than its file name says, a renamed Cnn14-shaped file
                with no ``model`` (Cnn14 or Cnn14_DecisionLevelMax?), or a corrupt file.
            ValueError: For contradictory arguments or an unknown model name.
        """
        self._setup(model, checkpoint_path, device, num_samples, DEFAULT_MODEL)

    @overload
    def inference(
        self,
        audio: ArrayLike | torch.Tensor,
        num_samples: int | None = ...,
        return_uncertainty: Literal[False] = ...,
        *,
        generator: torch.Generator | int | None = ...,
        sample_rate: int | None = ...,
        draws: str | None = ...,
    ) -> tuple[np.ndarray, np.ndarray]: ...

    @overload
    def inference(
        self,
        audio: ArrayLike | torch.Tensor,
        num_samples: int | None,
        return_uncertainty: Literal[True],
        *,
        generator: torch.Generator | int | None = ...,
        sample_rate: int | None = ...,
        draws: str | None = ...,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]: ...

    @overload
    def inference(
        self,
        audio: ArrayLike | torch.Tensor,
        num_samples: int | None = ...,
        *,
        return_uncertainty: Literal[True],
        generator: torch.Generator | int | None = ...,
        sample_rate: int | None = ...,
        draws: str | None = ...,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]: ...

    @overload
    def inference(
        self,
        audio: ArrayLike | torch.Tensor,
        num_samples: int | None = ...,
        return_uncertainty: bool = ...,
        *,
        generator: torch.Generator | int | None = ...,
        sample_rate: int | None = ...,
        draws: str | None = ...,
    ) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]: ...

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
    ) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Tag a batch of clips.

        Each clip goes through the network whole, as in panns-inference (no windowing: the
        global pooling covers the entire clip).

        With ``S = 1`` (the default without ``return_uncertainty``) the network runs once with
        every stochastic module off, which is panns-inference's computation. With ``S > 1`` the
        probabilities are the mean of ``S`` Monte-Carlo passes (:func:`vipann.predict`). ``S`` is
        ``num_samples``, else the instance's ``num_samples``, else 1, or with
        ``return_uncertainty=True`` the model's recommended number (30 for ``drop``/``flip``/
        ``detflip``). ``det`` models always make one pass.

        The embedding is always the deterministic one (stochastic modules off, Flipout layers at
        their posterior mean): ``relu(fc1(pooled))``, panns-inference's ``embedding`` in eval
        mode; for an EfficientAT model, EfficientAT's embedding, the pooled last feature map
        (384 / 960 / 1920 values for mn04 / mn10 / mn20). It is a feature vector, so it is not
        averaged over Monte-Carlo samples. For a decision-level model (``*-cnn14-dlmax``), whose
        PANNs original returns no embedding, it is the maximum over segments of
        ``relu(fc1(segment))`` (:meth:`vipann.PANN.embed`), and ``clipwise_output`` is the maximum
        over time of its framewise output, as in PANNs.

        Args:
            audio: ``(B, T)`` float waveforms at the model's sample rate (32 kHz for the AudioSet
                models), NumPy or torch, as panns-inference takes them; ``(T,)`` is one clip.
            num_samples: Monte-Carlo samples ``S`` (see above).
            return_uncertainty: Also return the uncertainty of the prediction.
            generator: Seed or :class:`torch.Generator` for reproducible Monte-Carlo sampling.
            sample_rate: The audio's sample rate when known; it must equal the model's.
            draws: How Flipout layers draw weight noise for ``S > 1`` (``"independent"`` or
                ``"shared"``; default: the model's, see :func:`vipann.predict`).

        Returns:
            ``(clipwise_output, embedding)``: NumPy float32 arrays ``(B, classes_num)`` and
            ``(B, embedding_dim)``. With ``return_uncertainty=True``, a third element, a dict of
            NumPy float32 arrays computed from the ``(S, B, C)`` Monte-Carlo probabilities:

            * ``"total"`` ``(B,)``: predictive entropy, in nats;
            * ``"aleatoric"`` ``(B,)``: expected entropy of the samples;
            * ``"epistemic"`` ``(B,)``: mutual information, ``total - aleatoric`` (0 when ``S = 1``);
            * ``"std"`` ``(B, C)``: standard deviation of each class probability over the samples.

            For multi-label (sigmoid) models the entropies are sums over classes of binary
            entropies (:func:`vipann.uncertainty.decompose`).

        Raises:
            TypeError: For integer audio (pass float in [-1, 1]).
            ValueError: For a wrong shape (a ``(samples, channels)`` array included), clips that are too
                short, a sample-rate mismatch, or samples :func:`vipann.predict` refuses too (NaN,
                infinite, far too loud, or on the ``meta`` device).
        """
        samples = self._samples(num_samples, return_uncertainty)
        if draws is not None:
            check_draws(draws)
        wave = self.model.check_waveform(self._waveform(audio), sample_rate)
        net = self.model.eval()
        head = net.stage_names.index("act_fc1") + 1
        pooled = net.pooled(wave)
        hidden = net.run_stages(pooled, len(net.trunk_names), head)
        # EfficientAT's embedding is the pooled feature map; PANNs' is relu(fc1(pooled)).
        embedding = pooled if getattr(net, "embedding_is_pooled", False) else net.clip_embedding(hidden)
        if samples == 1:
            logits = net.run_stages(hidden, head)
            probs = (torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=-1))[None]
            prediction = Prediction(probs, self.multilabel)
        else:
            prediction = predict(
                net,
                wave,
                num_samples=samples,
                batch_size=wave.shape[0],
                generator=generator,
                multilabel=self.multilabel,
                window_seconds=wave.shape[-1] / net.sample_rate,
                draws=draws,
            )
        clipwise = prediction.mean.float().cpu().numpy()
        embedding_np = embedding.float().cpu().numpy()
        if not return_uncertainty:
            return clipwise, embedding_np
        uncertainty = {
            "total": prediction.total,
            "aleatoric": prediction.aleatoric,
            "epistemic": prediction.epistemic,
            "std": prediction.std,
        }
        return clipwise, embedding_np, {k: v.float().cpu().numpy() for k, v in uncertainty.items()}
