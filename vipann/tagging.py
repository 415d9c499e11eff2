"""A drop-in replacement for ``panns_inference.AudioTagging``, with Monte-Carlo uncertainty.

Code written for `panns-inference <https://pypi.org/project/panns-inference/>`_ changes in two
lines::

    from vipann import AudioTagging                       # was: from panns_inference import AudioTagging
    tagger = AudioTagging(checkpoint_path=None, device="cuda")
    clipwise_output, embedding = tagger.inference(audio)  # audio: (batch, samples) at 32 kHz

and gains ``tagger.inference(audio, num_samples=30, return_uncertainty=True)``.

Weights are found, in this order, and never downloaded silently:

1. ``checkpoint_path``: a PANNs ``.pth`` (as panns-inference downloads it) or a directory written
   by :func:`vipann.save_pretrained` / ``vipann convert``;
2. the PANNs release file in ``~/panns_data`` where panns-inference keeps it
   (``Cnn14_mAP=0.431.pth`` for the ``*-cnn14`` names; ``Cnn14_DecisionLevelMax.pth`` or
   ``Cnn14_DecisionLevelMax_mAP=0.385.pth`` for ``*-cnn14-dlmax``), converted in memory;
3. :func:`vipann.from_pretrained` (the Hugging Face Hub, or ``local-dir:``/``hf-hub:`` sources).

When none holds the weights, :class:`CheckpointNotFoundError` says how to get them.

The decision-level ``Cnn14_DecisionLevelMax`` checkpoint (panns-inference's sound event detection
model) works here too, as ``*-cnn14-dlmax``: its clipwise output is the maximum of its framewise
output. Its framewise output is :class:`vipann.SoundEventDetection` (:mod:`vipann.sed`).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Literal, overload

import numpy as np
import torch
from numpy.typing import ArrayLike

from vipann._checkpoint import CheckpointError, read_torch_checkpoint
from vipann._hub import HubError, NotCachedError
from vipann._registry import (
    PANNS_INFERENCE_FILES,
    PANNS_RELEASE,
    PANNS_ZENODO,
    get_pretrained_cfg,
    is_model,
    split_model_name,
)
from vipann.convert import (
    default_name,
    describe_conversion,
    from_bayesian_torch,
    from_panns_checkpoint,
    resolve_architecture,
)
from vipann.factory import from_pretrained
from vipann.models.pann import ARCHITECTURES, PANN
from vipann.sampling import Prediction, predict

__all__ = ["DEFAULT_MODEL", "AudioTagging", "CheckpointNotFoundError", "panns_data_dir"]

logger = logging.getLogger(__name__)

#: The model :class:`AudioTagging` builds when none is named: Cnn14 with MC dropout, whose
#: deterministic output (``num_samples=1``) is exactly panns-inference's.
DEFAULT_MODEL = "drop-cnn14"
# The flavour a PANNs checkpoint becomes when no model is named: same weights, uncertainty available.
_DEFAULT_METHOD = "drop"

_RELEASE_FILES = frozenset(filename for filename, _ in PANNS_RELEASE.values())


class CheckpointNotFoundError(FileNotFoundError):
    """No weights for the requested model are available locally; the message says how to get them."""


def panns_data_dir() -> Path:
    """Where panns-inference keeps its files: ``~/panns_data`` (``HOME`` is honoured)."""
    return Path.home() / "panns_data"


def _zenodo_url(filename: str) -> str:
    return f"{PANNS_ZENODO}/files/{filename.replace('=', '%3D')}?download=1"


def _local_names(cfg) -> list[str]:
    """File names the PANNs checkpoint of an entry may have in ``~/panns_data`` (panns-inference's first)."""
    return [n for n in (PANNS_INFERENCE_FILES.get(cfg.arch), cfg.source_checkpoint) if n]


def _in_place_file(name: str) -> Path | None:
    """The PANNs release file of an AudioSet registry name, if panns-inference's folder has it."""
    cfg = get_pretrained_cfg(name)
    if cfg.tag is not None or cfg.source_checkpoint not in _RELEASE_FILES:
        return None
    for filename in _local_names(cfg):
        path = panns_data_dir() / filename
        if path.is_file():
            return path
    return None


def _how_to_get(name: str) -> str:
    cfg = get_pretrained_cfg(name)
    if cfg.weights == "none":
        return f"{name!r} is an architecture without pretrained weights; build it with vipann.create_model({name!r})"
    # The decision-level (framewise) models are what SoundEventDetection loads.
    user = "AudioTagging" if ARCHITECTURES[cfg.arch].pooling == "clip" else "SoundEventDetection"
    lines = [f"no weights for {name!r} are available locally, and vipann never downloads a checkpoint silently."]
    source = cfg.source_checkpoint
    if source in _RELEASE_FILES:
        here = panns_data_dir() / _local_names(cfg)[0]
        lines += [
            f"Its weights come from the PANNs checkpoint {source} (Zenodo record 3987831). Either:",
            f"  1. download it to where panns-inference keeps it ({here}), and {user} uses it in place:",
            f'       mkdir -p "{here.parent}" && wget -O "{here}" "{_zenodo_url(source)}"',
            f"     (or pass checkpoint_path=... to {user}); or",
            "  2. convert it once into a vipann model directory and load that:",
            f"       {cfg.convert_command()}",
            f"       {user}(model='local-dir:./{name}')",
        ]
    elif cfg.convert_command():
        lines += [
            f"Build it from {source} and load the result:",
            f"  {cfg.convert_command()}",
            f"  {user}(model='local-dir:./{name}')",
        ]
    if cfg.hf_hub_id and not cfg.published:
        lines.append(f"(Its Hub repository {cfg.hf_hub_id!r} is not published yet.)")
    return "\n".join(lines)


def _from_file(path: Path, model: str | None) -> tuple[PANN, str]:
    """Convert a foreign ``.pth`` (PANNs release, VI-PANN or bayesian-torch layout) in memory."""
    try:
        state = read_torch_checkpoint(path)
    except CheckpointError as exc:
        raise CheckpointError(
            f"{exc}\nIf {path} was downloaded by panns-inference or wget, the download may be incomplete: "
            "delete it and download it again."
        ) from exc
    flipout = any(k.endswith((".mu_kernel", ".mu_weight")) for k in state)
    if model is None:
        # default_name refuses the PANNs variants vipann does not implement (Wavegram, 16 kHz, ...)
        # and a Cnn14-shaped file whose name does not say Cnn14 or Cnn14_DecisionLevelMax.
        detected = default_name(path, state, "bayesian-torch" if flipout else "panns")
        name = detected if flipout else f"{_DEFAULT_METHOD}-{split_model_name(detected)[1]}"
    else:
        # The requested model must agree with the tensors and with the file name.
        resolve_architecture(state, path, model)
        name = model
    logger.info("%s", describe_conversion(path, name))
    if flipout:
        return from_bayesian_torch(state, name, source=path.name), name
    return from_panns_checkpoint({"model": state}, name), name


def _load(
    model: str | PANN | None,
    checkpoint_path: str | os.PathLike[str] | None,
    default: str = DEFAULT_MODEL,
) -> tuple[PANN, str, str]:
    """Resolve ``(model, checkpoint_path)`` to ``(network, vipann name, where the weights came from)``.

    ``default`` is the model used when none is named (and the one the messages suggest).
    """
    if isinstance(model, PANN):
        if checkpoint_path is not None:
            raise ValueError(
                "pass either a vipann model instance or checkpoint_path, not both; to load a PANNs checkpoint, "
                f"name the model instead: model={default!r}, checkpoint_path=..."
            )
        cfg = getattr(model, "pretrained_cfg", None)
        return model, cfg.name if cfg is not None else f"{model.method}-{model.arch}", "the given model"
    if model is not None and not isinstance(model, str):
        raise TypeError(
            f"model must be a vipann model name or source, a vipann.PANN, or None; got {type(model).__name__} "
            "(panns_inference models cannot be used: vipann runs its own implementation)"
        )
    if checkpoint_path is not None:
        path = Path(checkpoint_path).expanduser()
        if model is not None and not is_model(model):
            raise ValueError(
                f"model={model!r} is a source, and checkpoint_path={str(checkpoint_path)!r} another; give one of them"
            )
        if path.is_dir():
            net = from_pretrained(f"local-dir:{path}")
            name = net.pretrained_cfg.name
            if model is not None and split_model_name(model)[:2] != (net.method, net.arch):
                raise CheckpointError(f"{path} holds a {net.method}-{net.arch} model, not the requested {model!r}")
            return net, name, f"local-dir:{path}"
        if not path.is_file():
            raise CheckpointNotFoundError(
                f"checkpoint_path {str(path)!r} does not exist\n" + _how_to_get(model or default)
            )
        net, name = _from_file(path, model)
        logger.info("loaded %s as vipann model %r (converted in memory)", path, name)
        return net, name, str(path)

    name = model or default
    if not is_model(name):
        net = from_pretrained(name)  # an explicit hf-hub:/local-dir: source
        return net, net.pretrained_cfg.name, getattr(net, "pretrained_source", name)
    local = _in_place_file(name)
    if local is not None:
        net, _ = _from_file(local, name)
        logger.info("using panns-inference's checkpoint %s in place as vipann model %r", local, name)
        return net, name, str(local)
    try:
        net = from_pretrained(name)
    except NotCachedError as exc:
        raise CheckpointNotFoundError(f"{exc}\n" + _how_to_get(name)) from exc
    except HubError:
        raise
    except RuntimeError as exc:  # the registry entry's weights are not published
        raise CheckpointNotFoundError(_how_to_get(name)) from exc
    return net, name, getattr(net, "pretrained_source", name)


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        # panns-inference's default is device='cuda' with a fall-back to the CPU; keep scripts working.
        logger.warning("CUDA is not available; the model runs on the CPU")
        return torch.device("cpu")
    return device


class _PannsInference:
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
        net, self.name, self.source = _load(model, checkpoint_path, default)
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
        if wave.is_floating_point():
            wave = wave.to(torch.float32)  # panns-inference also computes in float32
        return wave.to(self.device)


class AudioTagging(_PannsInference):
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
        mode. It is a feature vector, so it is not averaged over Monte-Carlo samples. For a
        decision-level model (``*-cnn14-dlmax``), whose PANNs original returns no embedding, it
        is the maximum over segments of ``relu(fc1(segment))`` (:meth:`vipann.PANN.embed`), and
        ``clipwise_output`` is the maximum over time of its framewise output, as in PANNs.

        Args:
            audio: ``(B, T)`` float waveforms at the model's sample rate (32 kHz for the AudioSet
                models), NumPy or torch, as panns-inference takes them; ``(T,)`` is one clip.
            num_samples: Monte-Carlo samples ``S`` (see above).
            return_uncertainty: Also return the uncertainty of the prediction.
            generator: Seed or :class:`torch.Generator` for reproducible Monte-Carlo sampling.
            sample_rate: The audio's sample rate when known; it must equal the model's.

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
            ValueError: For a wrong shape, clips that are too short, or a sample-rate mismatch.
        """
        samples = self._samples(num_samples, return_uncertainty)
        wave = self.model.check_waveform(self._waveform(audio), sample_rate)
        net = self.model.eval()
        head = net.stage_names.index("act_fc1") + 1
        hidden = net.run_stages(net.pooled(wave), len(net.trunk_names), head)
        embedding = net.clip_embedding(hidden)
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
