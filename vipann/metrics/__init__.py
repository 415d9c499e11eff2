"""Evaluation metrics: classification, calibration, selective prediction, OOD detection, retention curves.

Every function takes torch tensors and computes on their device.
"""

from vipann.metrics.bootstrap import bootstrap_interval, student_t_interval
from vipann.metrics.calibration import (
    BrierDecomposition,
    ReliabilityData,
    brier_decomposition,
    brier_score,
    expected_calibration_error,
    maximum_calibration_error,
    negative_log_likelihood,
    reliability_diagram,
    reliability_mae,
)
from vipann.metrics.calibration_multilabel import miscalibration_score, multilabel_calibration_error
from vipann.metrics.classification import (
    accuracy,
    average_precision,
    d_prime,
    macro_roc_auc,
    mean_average_precision,
    roc_auc,
)
from vipann.metrics.ood import ood_aupr, ood_auroc
from vipann.metrics.retention import (
    RetentionResult,
    oracle_curve,
    random_curve,
    retention_curve,
    retention_curves,
)
from vipann.metrics.selective import augrc, aurc, risk_coverage_curve

__all__ = [
    "BrierDecomposition",
    "ReliabilityData",
    "RetentionResult",
    "accuracy",
    "augrc",
    "aurc",
    "average_precision",
    "bootstrap_interval",
    "brier_decomposition",
    "brier_score",
    "d_prime",
    "expected_calibration_error",
    "macro_roc_auc",
    "maximum_calibration_error",
    "mean_average_precision",
    "miscalibration_score",
    "multilabel_calibration_error",
    "negative_log_likelihood",
    "ood_aupr",
    "ood_auroc",
    "oracle_curve",
    "random_curve",
    "reliability_diagram",
    "reliability_mae",
    "retention_curve",
    "retention_curves",
    "risk_coverage_curve",
    "roc_auc",
    "student_t_interval",
]
