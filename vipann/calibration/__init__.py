"""Calibration: temperature scaling, SNGP heads and uncertainty-aware pseudo-label selection.

Deep ensembles live in :mod:`vipann.inference.ensemble` (:class:`vipann.Ensemble`); focal loss in
:mod:`vipann.train.losses`.

* Temperature scaling (:func:`fit_temperature`, :func:`calibrate`, :func:`temperature_sweep`,
  :func:`temperature_report`): one ``T`` (or one per class for multi-label) fitted on validation
  logits by minimising the NLL of the Monte-Carlo-averaged predictions, stored in the model's metadata.
* SNGP (:class:`SNGPHead`, :func:`attach_sngp_head`): spectral-normalised hidden layers and a
  random-feature Gaussian-process output layer with a Laplace posterior and mean-field logits.
* Laplace (:func:`fit_laplace`, :class:`LaplaceModel`): a post-hoc last-layer (or fc1 + classifier)
  Laplace posterior of any trained deterministic tagger, Bernoulli (multi-label) or categorical, diagonal
  or K-FAC, prior precision by marginal likelihood; predicted through the linearised predictive.
* IVON (:class:`IVONModel`): the variational posterior learnt by the IVON optimizer
  (:class:`vipann.train.IVON`), sampled at prediction.
* FMUC pseudo-labels (:func:`select_pseudo_labels`, :class:`PseudoLabelRule`): keep a clip when
  ``mean - std`` of its temperature-scaled MC-dropout top-class probability exceeds a threshold;
  :class:`PseudoLabelStats` counts the quantity and quality of the selections.
"""

from vipann.calibration._posterior import PosteriorModel
from vipann.calibration.ivon import IVONModel, attach_ivon_posterior
from vipann.calibration.laplace import LaplaceModel
from vipann.calibration.laplace_fit import fit_laplace, fit_laplace_features
from vipann.calibration.posthoc import (
    calibrate,
    collect_logits,
    get_temperature,
    set_temperature,
    with_temperature,
)
from vipann.calibration.pseudo_labels import PseudoLabelRule, PseudoLabelStats, select_pseudo_labels
from vipann.calibration.sngp import (
    RandomFeatureGP,
    SNGPHead,
    all_reduce_sngp_precision,
    attach_sngp_head,
    mean_field_logits,
    reset_sngp_precision,
)
from vipann.calibration.spectral import SpectralNormBound, SpectralNormMLP, bounded_spectral_norm
from vipann.calibration.sweep import TemperatureSweep, calibration_metrics, temperature_report, temperature_sweep
from vipann.calibration.temperature import apply_temperature, fit_temperature, scaled_probs

__all__ = [
    "IVONModel",
    "LaplaceModel",
    "PosteriorModel",
    "PseudoLabelRule",
    "PseudoLabelStats",
    "RandomFeatureGP",
    "SNGPHead",
    "SpectralNormBound",
    "SpectralNormMLP",
    "TemperatureSweep",
    "all_reduce_sngp_precision",
    "apply_temperature",
    "attach_ivon_posterior",
    "attach_sngp_head",
    "bounded_spectral_norm",
    "calibrate",
    "calibration_metrics",
    "collect_logits",
    "fit_laplace",
    "fit_laplace_features",
    "fit_temperature",
    "get_temperature",
    "mean_field_logits",
    "reset_sngp_precision",
    "scaled_probs",
    "select_pseudo_labels",
    "set_temperature",
    "temperature_report",
    "temperature_sweep",
    "with_temperature",
]
