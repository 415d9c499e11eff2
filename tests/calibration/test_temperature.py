import json
import math

import pytest
import torch

from vipann.calibration import (
    apply_temperature,
    fit_temperature,
    scaled_probs,
    temperature_report,
    temperature_sweep,
)


def _multiclass(n=10000, c=10, t_true=2.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = 3.0 * torch.randn(n, c, generator=g)
    y = torch.multinomial(torch.softmax(z / t_true, -1), 1, generator=g)[:, 0]
    return z, y


def _multilabel(t_true, n=8000, c=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    z = 3.0 * torch.randn(n, c, generator=g)
    y = torch.bernoulli(torch.sigmoid(z / t_true), generator=g).bool()
    return z, y


def test_recovers_a_known_temperature_multiclass():
    z, y = _multiclass()
    t = fit_temperature(z, y)
    assert t.shape == () and t.dtype == z.dtype
    assert float(t) == pytest.approx(2.5, rel=0.05)


@pytest.mark.parametrize("t_true", [0.5, 4.0])
def test_recovers_sharpening_and_softening_temperatures(t_true):
    z, y = _multiclass(n=10000, t_true=t_true, seed=3)
    assert float(fit_temperature(z, y)) == pytest.approx(t_true, rel=0.08)


def test_recovers_a_shared_multilabel_temperature():
    z, y = _multilabel(2.5)
    assert float(fit_temperature(z, y, multilabel=True)) == pytest.approx(2.5, rel=0.05)
    # float 0/1 targets work the same as bool ones
    assert float(fit_temperature(z, y.float(), multilabel=True)) == pytest.approx(2.5, rel=0.05)


def test_recovers_per_class_multilabel_temperatures():
    t_true = torch.tensor([0.5, 1.0, 1.5, 2.5, 3.0, 4.0])
    z, y = _multilabel(t_true, n=20000)
    t = fit_temperature(z, y, multilabel=True, per_class=True)
    assert t.shape == (6,)
    torch.testing.assert_close(t, t_true, rtol=0.1, atol=0.0)


def test_mc_logits_fit_the_temperature_of_the_averaged_probabilities():
    g = torch.Generator().manual_seed(4)
    s, n, c, t_true = 4, 10000, 10, 2.5
    z = 3.0 * torch.randn(n, c, generator=g)[None] + torch.randn(s, n, c, generator=g)
    p = torch.softmax(z / t_true, -1).mean(0)
    y = torch.multinomial(p, 1, generator=g)[:, 0]
    assert float(fit_temperature(z, y)) == pytest.approx(t_true, rel=0.05)
    # fitting on the averaged logits instead is a different (wrong) model of these labels
    assert abs(float(fit_temperature(z.mean(0), y)) - t_true) > abs(float(fit_temperature(z, y)) - t_true)


def test_a_single_sample_equals_2d_logits():
    z, y = _multiclass(n=2000)
    torch.testing.assert_close(fit_temperature(z[None], y), fit_temperature(z, y))


def test_warns_when_the_optimum_is_beyond_the_bounds():
    z, _ = _multiclass(n=2000)
    with pytest.warns(UserWarning, match="bounds"):
        t = fit_temperature(z, z.argmax(1), bounds=(0.5, 20.0))  # always right: wants T -> 0
    assert float(t) == pytest.approx(0.5, rel=0.02)


def test_bad_inputs():
    z, y = _multiclass(n=100)
    with pytest.raises(ValueError, match="multilabel"):
        fit_temperature(z, y, per_class=True)
    with pytest.raises(ValueError, match="class indices"):
        fit_temperature(z, y.clamp(max=20) + 10)
    with pytest.raises(ValueError, match="shape"):
        fit_temperature(z[0], y)
    with pytest.raises(ValueError, match="NaN"):
        fit_temperature(torch.full_like(z, math.nan), y)
    with pytest.raises(ValueError, match="multi-hot"):
        fit_temperature(z, torch.full_like(z, 0.5), multilabel=True)
    with pytest.raises(ValueError, match="bounds"):
        fit_temperature(z, y, bounds=(2.0, 1.0))
    with pytest.raises(TypeError):
        fit_temperature(z, y.tolist())


def test_apply_temperature_and_scaled_probs():
    z = torch.randn(2, 5, 3)
    torch.testing.assert_close(apply_temperature(z, 2.0), z / 2)
    t = torch.tensor([1.0, 2.0, 4.0])
    torch.testing.assert_close(apply_temperature(z, t), z / t)
    torch.testing.assert_close(scaled_probs(z, 2.0), torch.softmax(z / 2, -1).mean(0))
    torch.testing.assert_close(scaled_probs(z, t, multilabel=True), torch.sigmoid(z / t).mean(0))
    for bad in (0.0, -1.0, math.inf, torch.ones(4)):
        with pytest.raises(ValueError, match="temperature"):
            apply_temperature(z, bad)


def test_sweep_finds_the_fitted_temperature_and_reports_both_splits():
    z_val, y_val = _multiclass(n=5000, seed=5)
    z_test, y_test = _multiclass(n=3000, t_true=1.5, seed=6)  # a shifted test split
    t = float(fit_temperature(z_val, y_val))
    grid = torch.linspace(1.0, 4.0, 31)
    sweep = temperature_sweep(z_val, y_val, z_test, y_test, temperatures=grid)
    assert set(sweep.metrics) == {"val", "test"}
    assert set(sweep.metrics["val"]) == {"ece", "nll", "reliability_mae", "brier"}
    assert sweep.metrics["test"]["ece"].shape == (31,)
    assert sweep.best("nll") == pytest.approx(t, abs=0.1)  # grid step 0.1
    assert sweep.best("nll", "test") == pytest.approx(1.5, abs=0.15)  # the optima differ between splits
    out = sweep.to_dict()
    json.dumps(out)
    assert out["best"]["val"]["nll"] == sweep.best("nll")
    with pytest.raises(KeyError):
        sweep.best("nll", "train")


def test_sweep_defaults_and_errors():
    z, y = _multilabel(2.0, n=300, c=3)
    sweep = temperature_sweep(z, y, multilabel=True)
    assert sweep.temperatures[0] == pytest.approx(0.25) and sweep.temperatures[-1] == pytest.approx(8.0)
    assert set(sweep.metrics) == {"val"}
    with pytest.raises(ValueError, match="both"):
        temperature_sweep(z, y, z, multilabel=True)
    with pytest.raises(ValueError, match="temperature"):
        temperature_sweep(z, y, temperatures=[1.0, -1.0], multilabel=True)


def test_report_before_and_after():
    z, y = _multiclass(n=5000)
    t = fit_temperature(z, y)
    report = temperature_report(z, y, t)
    assert report["after"]["nll"] < report["before"]["nll"]
    assert report["after"]["ece"] < report["before"]["ece"]
    assert report["after"]["accuracy"] == report["before"]["accuracy"]  # a shared T keeps the arg-max
    zl, yl = _multilabel(2.0, n=2000)
    report = temperature_report(zl, yl, fit_temperature(zl, yl, multilabel=True), multilabel=True)
    assert "accuracy" not in report["after"] and report["after"]["nll"] < report["before"]["nll"]
