"""The model zoo: names, metadata, weights on disk and on the Hub, model cards, converters.

* :mod:`~vipann.zoo.registry`: model names and their :class:`PretrainedCfg` metadata (the entries
  are data in :mod:`~vipann.zoo.entries`; where their original files are published, with URLs,
  sizes and checksums, in :mod:`~vipann.zoo.sources`).
* :mod:`~vipann.zoo.factory`: :func:`create_model` (architecture) and :func:`from_pretrained` (weights).
* :mod:`~vipann.zoo.release` and :mod:`~vipann.zoo.download`: entries built from their original
  release files on first use (download with progress and resume, checksum, conversion, cache).
* :mod:`~vipann.zoo.build`: ``vipann zoo build`` / ``publish`` / ``import``.
* :mod:`~vipann.zoo.serialization` and :mod:`~vipann.zoo.config`: model directories
  (``config.json`` + ``model.safetensors`` + ``README.md``), checked on load.
* :mod:`~vipann.zoo.heads`: head types (SNGP, ...) that other layers register for saving and loading.
* :mod:`~vipann.zoo.hub`: the only module that talks to the Hugging Face Hub.
* :mod:`~vipann.zoo.cards`: model cards.
* :mod:`~vipann.zoo.convert`, :mod:`~vipann.zoo.identify`, :mod:`~vipann.zoo.checkpoint`: original
  PANNs / VI-PANN / bayesian-torch checkpoints into vipann models; :mod:`~vipann.zoo.efficientat`:
  EfficientAT release files; :mod:`~vipann.zoo.moped`: MOPED.
* :mod:`~vipann.zoo.entries_efficientat`: the EfficientAT release files and registry entries (data).

The zoo sits on the networks (:mod:`vipann.models`, :mod:`vipann.layers`) and the label sets
(:mod:`vipann.datasets.labels`); it knows nothing of prediction, calibration or training.
"""

from vipann.zoo import convert
from vipann.zoo.cards import render_card, write_card
from vipann.zoo.checkpoint import CheckpointError
from vipann.zoo.download import ChecksumMismatchError, DownloadError
from vipann.zoo.factory import create_model, from_pretrained, package_weights_dir
from vipann.zoo.heads import register_head, registered_heads
from vipann.zoo.hub import HubError, NotCachedError, push_to_hub
from vipann.zoo.registry import PretrainedCfg, get_pretrained_cfg, list_models, register_model
from vipann.zoo.serialization import load_pretrained_dir, save_pretrained, verify_pretrained_dir

__all__ = [
    "CheckpointError",
    "ChecksumMismatchError",
    "DownloadError",
    "HubError",
    "NotCachedError",
    "PretrainedCfg",
    "convert",
    "create_model",
    "from_pretrained",
    "get_pretrained_cfg",
    "list_models",
    "load_pretrained_dir",
    "package_weights_dir",
    "push_to_hub",
    "register_head",
    "register_model",
    "registered_heads",
    "render_card",
    "save_pretrained",
    "verify_pretrained_dir",
    "write_card",
]
