"""Evaluation: from Monte-Carlo predictions to the paper's evidence, as numbers, files and figures.

* :mod:`~vipann.evaluation.runs`: :func:`evaluate_runs` (metrics, calibration, decompositions,
  retention curves with intervals, OOD detection) and :func:`write_evaluation` (JSON, CSV, PNG,
  the raw predictions as safetensors).
* :mod:`~vipann.evaluation.plots`: the figures (retention curves, reliability diagrams, box plots), one
  size and style.
* :mod:`~vipann.evaluation.claims`: claims decided by paired bootstrap intervals (retention gain over
  random discarding, OOD AUROC - 0.5, paired differences) with three verdicts.

It consumes probabilities ``(R, S, N, C)``; it knows no model. The metrics themselves are
:mod:`vipann.metrics` and :mod:`vipann.uncertainty`.
"""

from vipann.evaluation.claims import Claim, Interval, auroc_gain, decide, paired_difference, retention_gain
from vipann.evaluation.runs import (
    MEASURES,
    Evaluation,
    evaluate_runs,
    figure_titles,
    write_evaluation,
    write_figures,
)
from vipann.utils.atomic import write_json_atomic

__all__ = [
    "MEASURES",
    "Claim",
    "Evaluation",
    "Interval",
    "auroc_gain",
    "decide",
    "evaluate_runs",
    "figure_titles",
    "paired_difference",
    "retention_gain",
    "write_evaluation",
    "write_figures",
    "write_json_atomic",
]
