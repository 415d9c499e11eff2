"""vipann: uncertainty-aware audio classification with PANNs.

The public API, re-exported explicitly: building and loading models (``create_model``,
``from_pretrained``, ``save_pretrained``), Monte-Carlo prediction (``predict``, ``Ensemble``), the
panns-inference drop-ins (``AudioTagging``, ``SoundEventDetection``), and the sub-packages
``layers``, ``models``, ``uncertainty``, ``metrics``, ``convert``, ``calibration`` (and, imported on
use, ``datasets``, ``evaluation``, ``train``, ``recipes``).

The package is layered: each layer imports only from the layers below it. The layers are listed
once, in :data:`vipann.utils.layering.LAYERS`; ``tests/test_layering.py`` enforces them and the
README's "Architecture" section is generated from them.
"""

from vipann import calibration, layers, metrics, models, uncertainty
from vipann._version import __version__
from vipann.inference import Ensemble, Prediction, predict
from vipann.models import PANN, EfficientAT
from vipann.tagging import AudioTagging, CheckpointNotFoundError, SoundEventDetection
from vipann.utils.aliases import install as _install_aliases
from vipann.zoo import (
    CheckpointError,
    HubError,
    NotCachedError,
    PretrainedCfg,
    convert,
    create_model,
    from_pretrained,
    get_pretrained_cfg,
    list_models,
    load_pretrained_dir,
    push_to_hub,
    render_card,
    save_pretrained,
)

# Module paths of vipann 0.1 before the package was layered: they still import, with a FutureWarning.
_MOVED = {
    "vipann.cards": ("vipann.zoo.cards",),
    "vipann.ensemble": ("vipann.inference.ensemble",),
    "vipann.factory": ("vipann.zoo.factory",),
    "vipann.frontend": ("vipann.models.frontend", "vipann.models.augment"),
    "vipann.labels": ("vipann.datasets.labels",),
    "vipann.plots": ("vipann.evaluation.plots",),
    "vipann.profile": ("vipann.models.profile",),
    "vipann.sampling": ("vipann.inference.predict", "vipann.inference.sampler"),
    "vipann.sed": ("vipann.tagging.sed",),
    "vipann.serialization": ("vipann.zoo.serialization", "vipann.zoo.config"),
}
# Short public paths, kept for good.
_PUBLIC = {"vipann.convert": ("vipann.zoo.convert",)}
_install_aliases(_MOVED, _PUBLIC)


def __getattr__(name: str) -> object:
    # ``vipann.sampling`` etc. as attributes, like the submodules they were (import warns once).
    if f"vipann.{name}" in _MOVED:
        import importlib

        return importlib.import_module(f"vipann.{name}")
    raise AttributeError(f"module 'vipann' has no attribute {name!r}")


__all__ = [
    "PANN",
    "AudioTagging",
    "CheckpointError",
    "CheckpointNotFoundError",
    "EfficientAT",
    "Ensemble",
    "HubError",
    "NotCachedError",
    "Prediction",
    "PretrainedCfg",
    "SoundEventDetection",
    "__version__",
    "calibration",
    "convert",
    "create_model",
    "from_pretrained",
    "get_pretrained_cfg",
    "layers",
    "list_models",
    "load_pretrained_dir",
    "metrics",
    "models",
    "predict",
    "push_to_hub",
    "render_card",
    "save_pretrained",
    "uncertainty",
]
