"""Converting foreign checkpoints into vipann models, and MOPED.

* :func:`from_panns_checkpoint`: an original PANNs ``.pth`` (``ResNet54_mAP=0.429.pth``,
  ``Cnn14_mAP=0.431.pth``, ``Cnn14_DecisionLevelMax_mAP=0.385.pth``, ...) into any method;
  ``flip``/``detflip`` via MOPED.
* :func:`from_vipann_checkpoint`: the VI-PANN repository's ``deterministic.pth`` and
  ``flipout.pth`` (and its transfer-learning Flip layout with a Flipout head).
* :func:`from_efficientat_checkpoint`: an EfficientAT release ``.pt`` (``mn10_as_mAP_471.pt``,
  ``dymn10_as.pt``, ...) into any method (:mod:`vipann.zoo.efficientat`).
* :func:`moped`: a deterministic vipann model into its ``flip`` or ``detflip`` counterpart
  (:mod:`vipann.zoo.moped`, with :func:`load_deterministic_weights`).

Every conversion checks every key and shape, and compares the checkpoint's STFT and mel tensors
with the front end vipann computes from the config: a mismatch means the config is wrong and is
reported, never loaded silently. Pickled files are read with ``torch.load(weights_only=True)``.

The keys give the architecture, except where two PANNs classes share every tensor: ``Cnn14`` and
``Cnn14_DecisionLevelMax`` differ only in how the head is applied (per clip or per segment). There
the file name decides (``Cnn14_DecisionLevelMax_mAP=0.385.pth``, or ``Cnn14_DecisionLevelMax.pth``
as panns-inference saves it, is ``cnn14-dlmax``), or the vipann name the caller gives; a file whose
name says neither is refused with the names to choose from (:func:`resolve_architecture`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch

from vipann.layers import flipout_layers
from vipann.models.frontend import FrontendConfig, mel_filterbank, stft_kernels
from vipann.models.pann import PANN
from vipann.zoo.checkpoint import (
    CheckpointError,
    check_state_dict,
    read_torch_checkpoint,
    state_dict_from_object,
)
from vipann.zoo.create import create_model
from vipann.zoo.efficientat import from_efficientat_checkpoint, is_efficientat_state_dict
from vipann.zoo.identify import (
    FRONTEND_KEYS,
    _flipout_prefixes,
    architecture_from_filename,
    default_name,
    describe_conversion,
    detect_architecture,
    resolve_architecture,
)
from vipann.zoo.moped import load_deterministic_weights, moped
from vipann.zoo.registry import get_pretrained_cfg, split_model_name

__all__ = [
    "FRONTEND_KEYS",
    "FrontendMismatchError",
    "architecture_from_filename",
    "check_frontend",
    "default_name",
    "describe_conversion",
    "detect_architecture",
    "from_bayesian_torch",
    "from_efficientat_checkpoint",
    "from_panns_checkpoint",
    "from_vipann_checkpoint",
    "is_efficientat_state_dict",
    "load_deterministic_weights",
    "moped",
    "resolve_architecture",
]

logger = logging.getLogger(__name__)

_CANDIDATE_RATES = (8000, 16000, 22050, 32000, 44100, 48000)


class FrontendMismatchError(CheckpointError):
    """The checkpoint's STFT/mel tensors were made with other front-end parameters."""


def _as_state_dict(path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any]) -> tuple[dict, str]:
    if isinstance(path_or_state_dict, Mapping):
        sd, source = state_dict_from_object(path_or_state_dict), "state dict"
    else:
        sd, source = read_torch_checkpoint(path_or_state_dict), os.path.basename(str(path_or_state_dict))
    if sd and all(k.startswith("module.") for k in sd):  # saved from a DataParallel wrapper
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd, source


def _guess_frontend(melw: torch.Tensor, n_fft: int) -> str:
    n_mels = melw.shape[1]
    for sr in _CANDIDATE_RATES:
        for fmin in (50.0, 0.0, 20.0):
            for fmax in sorted({sr / 2, 14000.0, 8000.0, 11025.0}):
                if not fmin < fmax <= sr / 2:
                    continue
                ref = mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
                if torch.allclose(ref, melw.float(), atol=1e-6 * float(ref.abs().max()) + 1e-9):
                    return f"sample_rate={sr}, fmin={fmin:g}, fmax={fmax:g}"
    return ""


def check_frontend(state_dict: Mapping[str, torch.Tensor], config: FrontendConfig, source: str = "checkpoint") -> bool:
    """Check a PANNs-layout checkpoint's front-end tensors against ``config``.

    The STFT kernels give the window size; the mel matrix gives the number of mels and, through
    its values, the sample rate, fmin and fmax. The hop size is not stored in a checkpoint and
    cannot be checked.

    Args:
        state_dict: Checkpoint tensors (may or may not hold the three front-end keys).
        config: The front end the model will compute.
        source: Name of the checkpoint in messages.

    Returns:
        True when the checkpoint holds front-end tensors (and they match), False when it has none.

    Raises:
        FrontendMismatchError: Saying which parameter differs and, when it can tell, which
            parameters the checkpoint was made with.
    """
    present = [k for k in FRONTEND_KEYS if k in state_dict]
    if not present:
        return False
    if len(present) != len(FRONTEND_KEYS):
        missing = sorted(set(FRONTEND_KEYS) - set(present))
        raise FrontendMismatchError(f"{source} holds part of the PANNs front end; missing {missing}")
    real = state_dict[FRONTEND_KEYS[0]]
    imag = state_dict[FRONTEND_KEYS[1]]
    melw = state_dict[FRONTEND_KEYS[2]]
    n_fft = real.shape[-1]
    if n_fft != config.window_size or real.shape != (n_fft // 2 + 1, 1, n_fft) or imag.shape != real.shape:
        raise FrontendMismatchError(
            f"{source} has an STFT of window {n_fft} (kernel shape {tuple(real.shape)}) but the config says "
            f"window_size={config.window_size}; build the model with "
            f"frontend=FrontendConfig(window_size={n_fft}, ...)"
        )
    exp_real, exp_imag = stft_kernels(n_fft)
    if not (torch.allclose(real.float(), exp_real, atol=1e-5) and torch.allclose(imag.float(), exp_imag, atol=1e-5)):
        raise FrontendMismatchError(
            f"{source}'s STFT kernels are not the periodic-Hann DFT of size {n_fft} that vipann computes; "
            "the checkpoint was made with another window and cannot be converted exactly"
        )
    if melw.shape != (n_fft // 2 + 1, config.mel_bins):
        raise FrontendMismatchError(
            f"{source} has {melw.shape[-1]} mel bins but the config says mel_bins={config.mel_bins}; "
            f"build the model with frontend=FrontendConfig(mel_bins={melw.shape[-1]}, ...)"
        )
    expected = mel_filterbank(config.sample_rate, n_fft, config.mel_bins, config.fmin, config.fmax)
    if not torch.allclose(melw.float(), expected, atol=1e-6 * float(expected.abs().max()) + 1e-9):
        guess = _guess_frontend(melw, n_fft)
        made = f" It matches {guess}." if guess else ""
        raise FrontendMismatchError(
            f"{source}'s mel filterbank was not made with sample_rate={config.sample_rate}, "
            f"fmin={config.fmin:g}, fmax={config.fmax:g}.{made} Pass the checkpoint's parameters as "
            "frontend=... (e.g. a 16 kHz checkpoint such as Cnn14_16k needs sample_rate=16000, "
            "window_size=512, hop_size=160, fmax=8000)."
        )
    return True


def _target_for(name: str, arch_hint: str | None, num_classes: int, frontend: FrontendConfig | None) -> PANN:
    _, arch, _ = split_model_name(name)
    if arch_hint is not None and arch != arch_hint:
        raise CheckpointError(f"the checkpoint is a {arch_hint} but {name!r} is a {arch}; pick a {arch_hint} name")
    cfg = get_pretrained_cfg(name)
    kwargs: dict[str, Any] = {}
    if frontend is not None:
        kwargs["frontend"] = frontend.to_dict()
    model = create_model(name, num_classes=num_classes, **kwargs)
    if num_classes == cfg.num_classes:
        model.pretrained_cfg = cfg
    return model


def _classes_of(sd: Mapping[str, torch.Tensor], source: str) -> int:
    for key in ("fc_audioset.weight", "fc_audioset.mu_weight"):
        if key in sd:
            return int(sd[key].shape[0])
    raise CheckpointError(f"{source} has no classifier ('fc_audioset.weight'); is it a PANN checkpoint?")


def from_panns_checkpoint(
    path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any],
    name: str | None = None,
    *,
    moped_delta: float = 0.5,
    moped_prior: str = "zero",
    frontend: FrontendConfig | None = None,
) -> PANN:
    """Build a vipann model from an original PANNs checkpoint.

    Args:
        path_or_state_dict: A PANNs ``.pth`` file (``{'iteration', 'model', 'sampler'}``), or the
            loaded dict / state dict.
        name: Registry name of the result; any method: ``det-resnet54``, ``drop-cnn14``,
            ``flip-cnn10`` (MOPED), ``detflip-resnet54`` (MOPED head), ``drop-cnn14-dlmax``, ...
            Default: ``det-<arch>`` of the checkpoint (:func:`default_name`). A file's name must
            agree with it: ``Cnn14_DecisionLevelMax_mAP=0.385.pth`` converts to ``*-cnn14-dlmax``
            names only, ``Cnn14_mAP=0.431.pth`` to ``*-cnn14`` names.
        moped_delta: MOPED delta for Flipout layers.
        moped_prior: ``"zero"`` or ``"weights"`` (see :func:`load_deterministic_weights`).
        frontend: Front-end parameters of the checkpoint when they are not the registry entry's
            (e.g. the 16 kHz Cnn14).

    Returns:
        The model in ``eval()`` mode, ``pretrained_cfg`` attached. Its number of classes is the
        checkpoint's.

    Raises:
        CheckpointError: Missing/unexpected/mis-shaped keys, an unreadable file, a front end
            made with other parameters (:class:`FrontendMismatchError`), a file name that
            contradicts ``name`` or the tensors, or a Cnn14-shaped state dict without a name that
            says whether it is Cnn14 or Cnn14_DecisionLevelMax.

    Example:
        >>> model = from_panns_checkpoint("ResNet54_mAP=0.429.pth", "flip-resnet54")  # doctest: +SKIP
        >>> sed = from_panns_checkpoint("Cnn14_DecisionLevelMax_mAP=0.385.pth")  # doctest: +SKIP
    """
    sd, source = _as_state_dict(path_or_state_dict)
    path = None if isinstance(path_or_state_dict, Mapping) else path_or_state_dict
    arch = resolve_architecture(sd, path, name)
    name = name or f"det-{arch}"
    if path is not None:
        logger.info("%s", describe_conversion(path, name))
    model = _target_for(name, None, _classes_of(sd, source), frontend)
    check_frontend(sd, model.frontend_config, source)
    body = {k: v for k, v in sd.items() if k not in FRONTEND_KEYS}
    load_deterministic_weights(
        model, body, moped_delta=moped_delta, moped_prior=moped_prior, source=source, target=name
    )
    return model.eval()


def from_vipann_checkpoint(
    path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any],
    name: str | None = None,
    *,
    head_delta: float | None = None,
    moped_delta: float = 0.5,
) -> PANN:
    """Build a vipann model from a VI-PANN repository checkpoint.

    Layouts understood (REFERENCE: VI-PANN ``models.py`` / ``transfer_learning.py``):

    * ``deterministic.pth``: the PANNs ResNet54 keys; converted like :func:`from_panns_checkpoint`
      (default name ``det-resnet54``).
    * ``flipout.pth``: Flipout convolutions (``mu_kernel``/``rho_kernel``) with a deterministic
      fc1 and classifier (default name ``flip-resnet54``). The head becomes Flipout: with
      ``head_delta=None`` its sigma is ~1e-20 (bayesian-torch's zero-sigma rho), so the predictive
      distribution is exactly the published model's; with ``head_delta=d`` it is MOPED with delta d.
    * the transfer-learning Flip layout, whose head is already Flipout (``fc1.mu_weight``).

    bayesian-torch does not store priors; the converted layers get the prior of the registry
    entry (N(0, 1), VI-PANN's ``BNN_PRIOR_PARAMS``).

    Args:
        path_or_state_dict: The ``.pth`` file or its loaded content.
        name: Registry name of the result (default: from the layout).
        head_delta: See above.
        moped_delta: MOPED delta when ``deterministic.pth`` is converted to a Bayesian method.

    Returns:
        The model in ``eval()`` mode with ``pretrained_cfg`` attached.

    Raises:
        CheckpointError: For an unknown layout, a name whose method the layout cannot give, or
            missing/unexpected/mis-shaped keys.
    """
    sd, source = _as_state_dict(path_or_state_dict)
    if not any(k.endswith(".mu_kernel") for k in sd):
        return from_panns_checkpoint(sd, name or "det-resnet54", moped_delta=moped_delta)
    return from_bayesian_torch(sd, name or "flip-resnet54", head_delta=head_delta, source=source)


def from_bayesian_torch(
    path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any],
    name: str | None = None,
    *,
    head_delta: float | None = None,
    frontend: FrontendConfig | None = None,
    source: str | None = None,
) -> PANN:
    """Build a vipann model from a bayesian-torch state dict of a PANN (``dnn_to_bnn`` output).

    The method follows from which layers are Flipout (``mu_kernel``/``mu_weight`` keys): every
    convolution → ``flip``; only fc1 and the classifier → ``detflip``. A deterministic fc1 or
    classifier in a ``flip`` checkpoint (VI-PANN's ``flipout.pth``, where ``dnn_to_bnn`` skipped
    the leaf layers) becomes Flipout with sigma ~1e-20 (``head_delta=None``, the published
    predictive distribution) or by MOPED with ``head_delta``. bayesian-torch stores no priors; the
    layers get the registry prior N(0, 1) (VI-PANN's ``BNN_PRIOR_PARAMS``).

    Args:
        path_or_state_dict: A ``.pth`` file or its loaded content.
        name: Registry name of the result; default ``<method>-<detected arch>``.
        head_delta: See above.
        frontend: Front-end parameters when they are not the registry entry's.
        source: Name of the checkpoint in messages.

    Returns:
        The model in ``eval()`` mode.

    Raises:
        CheckpointError: No Flipout layer, an architecture or method that does not match ``name``,
            or missing/unexpected/mis-shaped keys.
    """
    sd, default_source = _as_state_dict(path_or_state_dict)
    source = source or default_source
    flip = _flipout_prefixes(sd)
    if not flip:
        raise CheckpointError(f"{source} has no Flipout layers; convert it with from_panns_checkpoint instead")
    method = "detflip" if flip <= {"fc1", "fc_audioset"} else "flip"
    if name is not None and split_model_name(name)[0] != method:
        raise CheckpointError(
            f"{source} is a {method} checkpoint (Flipout layers: {len(flip)}) and converts only to a {method} "
            f"model, not {name!r}" + ("; use deterministic.pth for det, drop or detflip" if method == "flip" else "")
        )
    path = None if isinstance(path_or_state_dict, Mapping) else path_or_state_dict
    arch = resolve_architecture(sd, path, name)
    name = name or f"{method}-{arch}"
    model = _target_for(name, arch, _classes_of(sd, source), frontend)
    check_frontend(sd, model.frontend_config, source)
    body = {k: v for k, v in sd.items() if k not in FRONTEND_KEYS}
    layers = dict(flipout_layers(model))
    head = {}
    for prefix in layers:
        if prefix not in flip and prefix + ".weight" in body:
            head[prefix] = (body.pop(prefix + ".weight"), body.pop(prefix + ".bias", None))
    own = model.state_dict()
    priors = [k for k in own if ".prior_" in k]
    expected = {k: v for k, v in own.items() if not any(k.startswith(p + ".") for p in head)}
    check_state_dict(expected, body, source=source, target=name, allow_missing=priors)
    full = dict(own)
    full.update(body)
    model.load_state_dict(full, strict=True)
    for prefix, (weight, bias) in head.items():
        layers[prefix].init_from_deterministic(weight, bias, head_delta or 0.0, "zero")
    missing_priors = [k for k in priors if k not in body]
    if missing_priors:
        logger.info(
            "%s stores no priors (bayesian-torch keeps them out of the state dict); %d prior buffers "
            "take the registry prior N(0, 1)",
            source,
            len(missing_priors),
        )
    return model.eval()
