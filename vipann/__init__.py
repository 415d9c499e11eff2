"""vipann: uncertainty-aware audio classification with PANNs."""

from vipann import layers
from vipann._registry import PretrainedCfg, get_pretrained_cfg, list_models
from vipann.factory import create_model, from_pretrained
from vipann.models import PANN

__version__ = "0.1.0"

__all__ = [
    "PANN",
    "PretrainedCfg",
    "__version__",
    "create_model",
    "from_pretrained",
    "get_pretrained_cfg",
    "layers",
    "list_models",
]
