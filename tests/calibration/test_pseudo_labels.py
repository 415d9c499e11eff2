import math

import pytest
import torch

from vipann.calibration import select_pseudo_labels


def _logits_from_probs(p):
    """Logits whose softmax (at T = 1) is exactly ``p``."""
    return torch.tensor(p, dtype=torch.float64).log()


# (S=2, B=4, C=2) probabilities at T = 1; top-class mean / population std per clip:
#   clip 0: 0.98, 0.96 -> 0.97 / 0.01   clip 1: 0.99, 0.81 -> 0.90 / 0.09
#   clip 2: 0.78, 0.72 (class 1) -> 0.75 / 0.03   clip 3: 0.70, 0.58 -> 0.64 / 0.06
PROBS = [
    [[0.98, 0.02], [0.99, 0.01], [0.22, 0.78], [0.70, 0.30]],
    [[0.96, 0.04], [0.81, 0.19], [0.28, 0.72], [0.58, 0.42]],
]


def test_fmuc_without_temperature_matches_hand_computed_masks():
    z = _logits_from_probs(PROBS)
    mask, labels = select_pseudo_labels(z, temperature=None, threshold=0.9)
    # mean - std: 0.96, 0.81, 0.72, 0.58
    assert mask.tolist() == [True, False, False, False]
    assert labels.tolist() == [0, 0, 1, 0]
    assert mask.dtype == torch.bool and labels.dtype == torch.int64
    mask, _ = select_pseudo_labels(z, temperature=None, threshold=0.7)
    assert mask.tolist() == [True, True, True, False]


def test_two_thresholds_as_in_ups():
    z = _logits_from_probs(PROBS)
    mask, labels = select_pseudo_labels(z, temperature=None, threshold=0.7, std_threshold=0.05)
    # mean > 0.7: clips 0, 1, 2; std < 0.05: clips 0 and 2
    assert mask.tolist() == [True, False, True, False]
    assert labels.tolist() == [0, 0, 1, 0]


def test_default_temperature_two_is_applied():
    # For two classes, softmax(log p / 2) = sqrt(p) / (sqrt(p) + sqrt(1 - p)).
    def soft(p):
        return math.sqrt(p) / (math.sqrt(p) + math.sqrt(1 - p))

    z = _logits_from_probs([[[0.999, 0.001]], [[0.997, 0.003]]])
    a, b = soft(0.999), soft(0.997)  # 0.9693, 0.9476
    mean, std = (a + b) / 2, abs(a - b) / 2
    expected = mean - std > 0.9  # 0.9476 > 0.9
    mask, labels = select_pseudo_labels(z)
    assert mask.tolist() == [expected] == [True] and labels.tolist() == [0]
    mask, _ = select_pseudo_labels(z, temperature=4.0)  # 0.85 / 0.81: rejected
    assert mask.tolist() == [False]
    # the same clip without temperature is kept easily
    assert select_pseudo_labels(z, temperature=None, threshold=0.99)[0].tolist() == [True]


def test_without_mc_is_a_confidence_threshold():
    z = _logits_from_probs([[0.95, 0.05], [0.5, 0.5], [0.05, 0.95], [0.12, 0.88]])
    mask, labels = select_pseudo_labels(z, temperature=None, threshold=0.9)
    assert mask.tolist() == [True, False, True, False]
    assert labels.tolist()[::2] == [0, 1]
    # (B, C) and (1, B, C) are the same single pass
    m1, l1 = select_pseudo_labels(z[None], temperature=None, threshold=0.9)
    assert torch.equal(m1, mask) and torch.equal(l1, labels)


def test_per_class_temperature_and_float32():
    z = torch.tensor([[[4.0, 0.0, 0.0]]])
    mask, labels = select_pseudo_labels(z, temperature=torch.tensor([1.0, 1.0, 1.0]), threshold=0.9)
    assert mask.tolist() == [True] and labels.tolist() == [0]


def test_label_is_the_argmax_of_the_mean_not_of_a_sample():
    z = _logits_from_probs([[[0.6, 0.4]], [[0.6, 0.4]], [[0.1, 0.9]]])  # mean: 0.433 / 0.567
    _, labels = select_pseudo_labels(z, temperature=None)
    assert labels.tolist() == [1]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"logits": torch.zeros(5)}, ValueError, "shape"),
        ({"logits": torch.zeros(2, 2, 2, 2)}, ValueError, "shape"),
        ({"logits": torch.full((2, 3), math.nan)}, ValueError, "NaN"),
        ({"logits": torch.zeros(2, 3, dtype=torch.long)}, ValueError, "floating"),
        ({"logits": [[0.0, 1.0]]}, TypeError, "Tensor"),
        ({"logits": torch.zeros(2, 3), "temperature": 0.0}, ValueError, "temperature"),
        ({"logits": torch.zeros(2, 3), "temperature": -2.0}, ValueError, "temperature"),
        ({"logits": torch.zeros(2, 3), "threshold": 1.5}, ValueError, "threshold"),
        ({"logits": torch.zeros(2, 3), "std_threshold": -0.1}, ValueError, "std_threshold"),
    ],
)
def test_bad_inputs(kwargs, error, match):
    with pytest.raises(error, match=match):
        select_pseudo_labels(**kwargs)


def test_inclusive_keeps_a_clip_exactly_at_the_threshold():
    z = torch.tensor([[2.0, 0.0, -1.0]], dtype=torch.float64)
    top = float(torch.softmax(z, -1).max())  # one pass: mean - std is the top probability itself
    assert select_pseudo_labels(z, temperature=None, threshold=top)[0].tolist() == [False]
    assert select_pseudo_labels(z, temperature=None, threshold=top, inclusive=True)[0].tolist() == [True]
    # two thresholds: the std of one pass is 0, so std_threshold=0 passes only inclusively
    kw = {"temperature": None, "threshold": 0.5, "std_threshold": 0.0}
    assert select_pseudo_labels(z, **kw)[0].tolist() == [False]
    assert select_pseudo_labels(z, **kw, inclusive=True)[0].tolist() == [True]


def test_rule_selects_like_the_function_and_checks_its_settings():
    from vipann.calibration import PseudoLabelRule

    z = _logits_from_probs(PROBS)
    rule = PseudoLabelRule(temperature=None, threshold=0.7, std_threshold=0.05)
    mask, labels = rule.select(z)
    assert mask.tolist() == [True, False, True, False] and labels.tolist() == [0, 0, 1, 0]
    assert PseudoLabelRule(passes=5).num_passes == 5 and PseudoLabelRule(mc=False, passes=5).num_passes == 1
    for kwargs, match in (
        ({"passes": 0}, "passes"),
        ({"temperature": 0.0}, "temperature"),
        ({"threshold": 2.0}, "threshold"),
        ({"std_threshold": -1.0}, "std_threshold"),
    ):
        with pytest.raises(ValueError, match=match):
            PseudoLabelRule(**kwargs)


def test_stats_equal_a_direct_count():
    from vipann.calibration import PseudoLabelStats

    g = torch.Generator().manual_seed(0)
    stats = PseudoLabelStats()
    batches = []
    for _ in range(4):
        mask = torch.rand(20, generator=g) < 0.6
        labels = torch.randint(0, 3, (20,), generator=g)
        truth = torch.randint(-1, 3, (20,), generator=g)  # -1: truth unknown
        batches.append((mask, labels, truth))
        stats.add(mask, labels, truth)
    selected = scored = correct = 0
    for mask, labels, truth in batches:
        for m, y, t in zip(mask.tolist(), labels.tolist(), truth.tolist()):
            selected += m
            scored += m and t >= 0
            correct += m and t >= 0 and y == t
    assert (stats.candidates, stats.selected, stats.scored, stats.correct) == (80, selected, scored, correct)
    assert stats.quantity == selected / 80 and stats.quality == correct / scored
    assert PseudoLabelStats.from_tensor(stats.as_tensor()) == stats
    assert stats.merge(stats).selected == 2 * selected
    empty = PseudoLabelStats()
    assert math.isnan(empty.quantity) and math.isnan(empty.quality)
    with pytest.raises(ValueError, match="one shape"):
        stats.add(torch.ones(3, dtype=torch.bool), torch.zeros(2, dtype=torch.long), torch.zeros(3))
