"""vipann: uncertainty-aware audio classification with PANNs.

The public API, re-exported explicitly: building and loading models (``create_model``,
``from_pretrained``, ``save_pretrained``), Monte-Carlo prediction (``predict``), the
panns-inference drop-ins (``AudioTagging``, ``SoundEventDetection``), and the
sub-packages ``layers``, ``metrics``, ``uncertainty``, ``convert``.
"""

from vipann import calibration, layers
from vipann._checkpoint import CheckpointError
from vipann._hub import HubError, NotCachedError, push_to_hub
from vipann._registry import PretrainedCfg, get_pretrained_cfg, list_models
from vipann.cards import render_card
from vipann.ensemble import Ensemble
from vipann.factory import create_model, from_pretrained
from vipann.models import PANN
from vipann.sampling import Prediction, predict
from vipann.sed import SoundEventDetection
from vipann.serialization import load_pretrained_dir, save_pretrained
from vipann.tagging import AudioTagging, CheckpointNotFoundError

__version__ = "0.1.0"

__all__ = [
    "PANN",
    "AudioTagging",
    "CheckpointError",
    "CheckpointNotFoundError",
    "Ensemble",
    "HubError",
    "NotCachedError",
    "Prediction",
    "PretrainedCfg",
    "SoundEventDetection",
    "__version__",
    "calibration",
    "create_model",
    "from_pretrained",
    "get_pretrained_cfg",
    "layers",
    "list_models",
    "load_pretrained_dir",
    "predict",
    "push_to_hub",
    "render_card",
    "save_pretrained",
]
