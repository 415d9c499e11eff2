"""Evaluation: from Monte-Carlo predictions to the paper's evidence, as numbers, files and figures.

* :mod:`~vipann.evaluation.runs`: :func:`evaluate_runs` (metrics, calibration, decompositions,
  retention curves with intervals, OOD detection) and :func:`write_evaluation` (JSON, CSV, PNG,
  the raw predictions as safetensors).
* :mod:`~vipann.evaluation.plots`: the figures (retention curves, reliability diagrams, box plots).

It consumes probabilities ``(R, S, N, C)``; it knows no model. The metrics themselves are
:mod:`vipann.metrics` and :mod:`vipann.uncertainty`.
"""

from vipann.evaluation.runs import MEASURES, Evaluation, evaluate_runs, write_evaluation
from vipann.utils.atomic import write_json_atomic

__all__ = ["MEASURES", "Evaluation", "evaluate_runs", "write_evaluation", "write_json_atomic"]
