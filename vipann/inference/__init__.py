"""Inference: Monte-Carlo prediction of single models and ensembles, with their uncertainty.

* :mod:`~vipann.inference.predict`: :func:`predict` and its :class:`Prediction` (probabilities
  ``(S, B, C)`` and the decompositions of :mod:`vipann.uncertainty`).
* :mod:`~vipann.inference.sampler`: the one protocol a model meets to be predicted
  (:class:`MonteCarloModel`), and the staged sampler of the PANN networks.
* :mod:`~vipann.inference.windows`: checking audio, windows of long clips, batches.
* :mod:`~vipann.inference.ensemble`: deep ensembles (:class:`Ensemble`), one more sampler.
* :mod:`~vipann.inference.temperature`: applying a temperature to logits.
* :mod:`~vipann.inference.precision`: float32 or bfloat16 (channels-last) arithmetic for a call.

Inference sits on the networks, the uncertainty maths and the zoo (an ensemble loads its members by
name); calibration, training and the applications build on it.
"""

from vipann.inference.ensemble import Ensemble, member_seeds, predict_ensemble
from vipann.inference.predict import Prediction, predict
from vipann.inference.sampler import (
    LogitSampler,
    MonteCarloModel,
    default_draws,
    default_rows,
    make_sampler,
    sample_logits,
)
from vipann.inference.temperature import apply_temperature
from vipann.inference.windows import window_starts

__all__ = [
    "Ensemble",
    "LogitSampler",
    "MonteCarloModel",
    "Prediction",
    "apply_temperature",
    "default_draws",
    "default_rows",
    "make_sampler",
    "member_seeds",
    "predict",
    "predict_ensemble",
    "sample_logits",
    "window_starts",
]
