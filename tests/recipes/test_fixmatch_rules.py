"""The pseudo-label rule of every FixMatch / FMUC method against hand-computed cases, and the config checks."""

import math

import pytest
import torch

from vipann.recipes.fixmatch import labelled_split
from vipann.recipes.fixmatch_config import METHODS, FixMatchConfig


def _soft(p, t):
    """Two classes: softmax(log([p, 1 - p]) / T)[0] = p^(1/T) / (p^(1/T) + (1 - p)^(1/T))."""
    if t is None:
        return p
    a, b = p ** (1 / t), (1 - p) ** (1 / t)
    return a / (a + b)


def _logits(passes):
    """(S, B, 2) logits whose softmax at T = 1 gives class-0 probabilities ``passes[s][b]``."""
    p = torch.tensor(passes, dtype=torch.float64)
    return torch.stack([p, 1 - p], -1).log()


# Class-0 probability of each clip (columns) in each of two passes (rows), at T = 1:
#   A: confident and stable; B: confident once, unsure once; C: moderately sure, stable;
#   D: class 1, confident and stable.
MC = [[0.999, 0.99, 0.93, 0.02], [0.997, 0.81, 0.91, 0.03]]


def _expected(passes, t, threshold, std_threshold=None):
    keep = []
    for b in range(len(passes[0])):
        top = [max(_soft(passes[s][b], t), 1 - _soft(passes[s][b], t)) for s in range(len(passes))]
        mean = sum(top) / len(top)
        std = math.sqrt(sum((v - mean) ** 2 for v in top) / len(top))
        keep.append(
            mean >= threshold and std <= std_threshold if std_threshold is not None else mean - std >= threshold
        )
    return keep


@pytest.mark.parametrize(
    ("method", "settings", "hand"),
    [
        # T = 2: A 0.969 / 0.948 -> mean - std 0.948; B 0.909 / 0.674 -> 0.674; C 0.785 / 0.761 -> 0.761;
        # D (class 1) 0.875 / 0.850 -> 0.850
        ("fmuc", (2.0, 0.9, None), [True, False, False, False]),
        ("fmuc-threshold-0.95", (2.0, 0.95, None), [False, False, False, False]),
        # T = 2, mean >= 0.7 and std <= 0.05: A (0.958, 0.011), C (0.773, 0.012), D (0.863, 0.012)
        ("fmuc-two-thresholds", (2.0, 0.7, 0.05), [True, False, True, True]),
        # T = 1: mean - std 0.997, 0.81, 0.91, 0.97
        ("fmuc-no-temperature", (None, 0.9, None), [True, False, True, True]),
        # T = 4: A 0.849 / 0.810 -> 0.810
        ("fmuc-temperature-4", (4.0, 0.9, None), [False, False, False, False]),
    ],
)
def test_fmuc_variants_by_hand(method, settings, hand):
    rule = FixMatchConfig(data_root="x").rule(method)
    assert rule.mc and rule.passes == 5 and rule.inclusive
    assert (rule.temperature, rule.threshold, rule.std_threshold) == settings
    mask, labels = rule.select(_logits(MC))
    assert mask.tolist() == hand == _expected(MC, *settings)
    assert labels.tolist() == [0, 0, 0, 1]


def test_single_pass_variants_by_hand():
    config = FixMatchConfig(data_root="x")
    one = _logits([[0.996, 0.97, 0.94, 0.02, 0.91]])  # one pass, class-0 probabilities
    fm = config.rule("fm")
    assert not fm.mc and fm.num_passes == 1 and fm.temperature is None and fm.threshold == 0.95
    assert fm.select(one)[0].tolist() == [True, True, False, True, False]
    assert config.rule("fm-threshold-0.99").select(one)[0].tolist() == [True, False, False, False, False]
    # no MC dropout, T = 2, threshold 0.9: sqrt-softened 0.941, 0.850, 0.798, 0.875 (class 1), 0.761
    no_mc = config.rule("fmuc-no-mc-dropout")
    assert not no_mc.mc and no_mc.temperature == 2.0
    assert (
        no_mc.select(one)[0].tolist()
        == [True, False, False, False, False]
        == _expected([[0.996, 0.97, 0.94, 0.02, 0.91]], 2.0, 0.9)
    )
    # the FM threshold is inclusive: a clip exactly at it is kept
    exact = torch.tensor([[[2.0, 0.0]]], dtype=torch.float64)
    top = float(torch.softmax(exact, -1).max())
    assert FixMatchConfig(data_root="x", fm_threshold=top).rule("fm").select(exact)[0].tolist() == [True]


def test_settings_reach_the_rules():
    config = FixMatchConfig(
        data_root="x", mc_passes=7, temperature=3.0, fmuc_threshold=0.8, ups_mean_threshold=0.6, ups_std_threshold=0.1
    )
    assert (config.rule("fmuc").passes, config.rule("fmuc").temperature, config.rule("fmuc").threshold) == (7, 3.0, 0.8)
    two = config.rule("fmuc-two-thresholds")
    assert (two.threshold, two.std_threshold, two.temperature) == (0.6, 0.1, 3.0)
    assert config.rule("supervised") is None and config.rule("labelled-only") is None
    assert METHODS["supervised"].all_labels and not METHODS["labelled-only"].all_labels


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"methods": ["fmuc", "ups"]}, "unknown or no methods"),
        ({"methods": ["fm", "fm"]}, "twice"),
        ({"weak_pass": "joint", "methods": ["fmuc-no-mc-dropout"]}, "weak_pass='separate'"),
        ({"strategy": "det", "methods": ["fmuc"]}, "det network has no dropout"),
        ({"labelled_fraction": 0.0}, "labelled_fraction"),
        ({"noise_std": 0.0}, "noise_std must be > 0"),
        ({"shift_fill": "mirror"}, "shift_fill"),
        ({"fmuc_threshold": 1.2}, "fmuc_threshold"),
        ({"mu": 0}, "mu must be >= 1"),
        ({"weak_pass": "twice"}, "weak_pass must be one of"),
        ({"data_root": ""}, "data_root is required"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FixMatchConfig(**{"data_root": "x", **kwargs})


def test_det_networks_work_where_their_dropout_samples():
    FixMatchConfig(data_root="x", strategy="det", methods=["fm", "fmuc-no-mc-dropout", "supervised"])
    FixMatchConfig(data_root="x", strategy="det", methods=["fmuc"], weak_pass="joint")  # training-mode dropout


def test_labelled_split_is_stratified_seeded_and_a_partition():
    targets = torch.tensor([0] * 20 + [1] * 10 + [2] * 3)
    lab, unl = labelled_split(targets, 0.1, 0, seed=4)
    assert sorted(torch.cat([lab, unl]).tolist()) == list(range(33))
    assert torch.bincount(targets[lab], minlength=3).tolist() == [2, 1, 1]  # round(0.3) -> at least one
    assert torch.equal(lab, labelled_split(targets, 0.1, 0, seed=4)[0])
    assert not torch.equal(lab, labelled_split(targets, 0.1, 0, seed=5)[0])
    lab, unl = labelled_split(targets, 0.1, 5, seed=0)  # a count per class wins over the fraction
    assert torch.bincount(targets[lab], minlength=3).tolist() == [5, 5, 3] and len(unl) == 20
