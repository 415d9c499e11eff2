"""The training engine: losses (ELBO, focal), the epoch loop with atomic checkpoints, IVON, distributed helpers."""

from vipann.train.distributed import DistContext, all_gather_rows, init_distributed, shutdown
from vipann.train.engine import EpochResult, FitConfig, ddp_wrap, fit, iterate_tensors, shuffled_batches
from vipann.train.ivon import IVON, IVONConfig, store_ivon_posterior
from vipann.train.losses import LossConfig, classification_loss, elbo_loss, focal_loss
from vipann.train.state import capture_rng_state, load_state, restore_rng_state, save_state

__all__ = [
    "IVON",
    "DistContext",
    "EpochResult",
    "FitConfig",
    "IVONConfig",
    "LossConfig",
    "all_gather_rows",
    "capture_rng_state",
    "classification_loss",
    "ddp_wrap",
    "elbo_loss",
    "fit",
    "focal_loss",
    "init_distributed",
    "iterate_tensors",
    "load_state",
    "restore_rng_state",
    "save_state",
    "shuffled_batches",
    "shutdown",
    "store_ivon_posterior",
]
