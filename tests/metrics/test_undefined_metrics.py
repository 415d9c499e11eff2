"""mAP and ROC AUC name the classes they skip (no positive clip) instead of returning NaN without a word."""

import warnings

import pytest
import torch

from vipann.metrics import average_precision, macro_roc_auc, mean_average_precision, roc_auc
from vipann.metrics.classification import UndefinedMetricWarning


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(6, 4, generator=g, dtype=torch.float64)
    targets = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 1], [1, 0, 0, 1], [0, 1, 0, 1], [1, 1, 0, 1], [0, 0, 0, 1]])
    return scores, targets  # class 2: no positive; class 3: no negative


def test_map_names_the_skipped_classes(data):
    scores, targets = data
    with pytest.warns(UndefinedMetricWarning, match=r"mAP: 1 of 4 classes have no positive clip and are left out"):
        skipped = mean_average_precision(scores, targets)
    with pytest.warns(UndefinedMetricWarning, match=r"are counted as AP = 0: class indices 2"):
        zero = mean_average_precision(scores, targets, ignore_empty=False)
    ap = average_precision(scores[:, [0, 1, 3]], targets[:, [0, 1, 3]])
    assert torch.isclose(skipped, ap.mean()) and torch.isclose(zero, ap.sum() / 4)


def test_roc_auc_names_the_undefined_classes(data):
    scores, targets = data
    with pytest.warns(UndefinedMetricWarning, match=r"ROC AUC: 2 of 4 classes have no positive or no negative clip"):
        auc = roc_auc(scores, targets)
    assert torch.isnan(auc[2]) and torch.isnan(auc[3])
    with pytest.warns(UndefinedMetricWarning, match=r"class indices 2, 3"):
        macro_roc_auc(scores, targets)


def test_no_warning_when_every_class_is_defined(data):
    scores, targets = data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mean_average_precision(scores[:, :2], targets[:, :2])
        macro_roc_auc(scores[:, :2], targets[:, :2])
