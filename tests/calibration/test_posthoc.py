import dataclasses
from typing import Any

import pytest
import torch

import vipann
from vipann import PretrainedCfg
from vipann.calibration import (
    calibrate,
    collect_logits,
    fit_temperature,
    get_temperature,
    set_temperature,
    with_temperature,
)
from vipann.inference.ensemble import Ensemble


def _with_temperature_field(model):
    """Give the model metadata that can hold a temperature (a no-op once PretrainedCfg has the field)."""
    cfg = model.pretrained_cfg
    if "temperature" not in {f.name for f in dataclasses.fields(cfg)}:
        cls = dataclasses.make_dataclass(
            "CfgWithTemperature", [("temperature", Any, None)], bases=(PretrainedCfg,), frozen=True
        )
        model.pretrained_cfg = cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)})
    return model


def _model(name="drop-tiny", seed=0):
    torch.manual_seed(seed)
    return _with_temperature_field(vipann.create_model(name).eval())


def _audio(batch=4, seed=0, seconds=1.0):
    return 0.1 * torch.randn(batch, int(16000 * seconds), generator=torch.Generator().manual_seed(seed))


def _labels(model, x):
    """The model's own predictions with every third one wrong: a finite optimal temperature."""
    y = collect_logits(model, x, 3, generator=5).mean(0).argmax(-1)
    y[::3] = (y[::3] + 1) % model.num_classes
    return y


def test_collect_logits_matches_predict_before_scaling():
    model = _model()
    x = _audio()
    z = collect_logits(model, x, 5, generator=3)
    assert z.shape == (5, 4, 10)
    torch.testing.assert_close(z.softmax(-1), vipann.predict(model, x, num_samples=5, generator=3).probs)
    # default S is the model's; a det model gives one pass
    assert collect_logits(_model("det-tiny"), x).shape == (1, 4, 10)


def test_collect_logits_takes_whole_clips_of_any_length():
    model = _model("det-tiny")
    clips = [_audio(1, seconds=0.5)[0], _audio(1, seed=1, seconds=2.5)[0], _audio(1, seed=2, seconds=0.01)[0]]
    z = collect_logits(model, clips)
    assert z.shape == (1, 3, 10)
    with torch.no_grad():
        torch.testing.assert_close(z[0, 1], model(clips[1][None])[0])  # not windowed
    with pytest.raises(ValueError, match="num_samples"):
        collect_logits(model, clips, 0)


def test_set_and_get_temperature():
    model = _model()
    assert get_temperature(model) is None
    set_temperature(model, torch.tensor(1.75))
    assert get_temperature(model) == 1.75 and isinstance(get_temperature(model), float)
    set_temperature(model, torch.linspace(1, 2, 10))
    assert isinstance(get_temperature(model), tuple) and len(get_temperature(model)) == 10
    set_temperature(model, None)
    assert get_temperature(model) is None
    with pytest.raises(ValueError, match="positive"):
        set_temperature(model, -1.0)
    with pytest.raises(ValueError, match="10 values"):
        set_temperature(model, [1.0, 2.0])
    bare = vipann.models.PANN("tiny", "det", 10)
    with pytest.raises(ValueError, match="pretrained_cfg"):
        set_temperature(bare, 2.0)


def test_with_temperature_needs_the_field():
    cfg = vipann.get_pretrained_cfg("det-tiny")
    if "temperature" in {f.name for f in dataclasses.fields(cfg)}:
        assert with_temperature(cfg, 2.0).temperature == 2.0
    else:
        with pytest.raises(TypeError, match="temperature"):
            with_temperature(cfg, 2.0)


def test_calibrate_from_logits_and_from_waveforms():
    model = _model()
    g = torch.Generator().manual_seed(0)
    z = 3 * torch.randn(4, 3000, 10, generator=g)
    y = torch.multinomial(torch.softmax(z / 2.0, -1).mean(0), 1, generator=g)[:, 0]
    t = calibrate(model, y, logits=z)
    assert float(t) == pytest.approx(2.0, rel=0.1)
    assert get_temperature(model) == pytest.approx(float(t))

    x = _audio(16)
    y = _labels(model, x)
    t = calibrate(model, y, waveforms=x, num_samples=3, generator=1)
    expected = fit_temperature(collect_logits(model, x, 3, generator=1), y)
    assert float(t) == pytest.approx(float(expected), rel=1e-4)
    assert get_temperature(model) == pytest.approx(float(t))


def test_calibrate_an_ensemble_stores_the_temperature_on_the_ensemble():
    members = [_model(seed=s) for s in range(2)]
    ensemble = Ensemble(members)
    assert get_temperature(ensemble) is None
    x = _audio(8)
    y = _labels(members[0], x)
    t = calibrate(ensemble, y, waveforms=x, num_samples=2, generator=0)
    assert get_temperature(ensemble) == pytest.approx(float(t))
    assert all(get_temperature(m) is None for m in members)


def test_calibrate_errors():
    model = _model()
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="exactly one"):
        calibrate(model, y)
    with pytest.raises(ValueError, match="exactly one"):
        calibrate(model, y, waveforms=_audio(), logits=torch.zeros(4, 10))
    with pytest.raises(ValueError, match="multilabel"):
        calibrate(model, y, logits=torch.randn(4, 10), per_class=True)


def test_predict_applies_the_stored_temperature():
    model = _model()
    if "temperature" not in {f.name for f in dataclasses.fields(PretrainedCfg)}:
        pytest.skip("PretrainedCfg has no temperature field yet; vipann.predict cannot apply one")
    x = _audio()
    z = collect_logits(model, x, 4, generator=0)
    set_temperature(model, 2.5)
    torch.testing.assert_close(vipann.predict(model, x, num_samples=4, generator=0).probs, (z / 2.5).softmax(-1))
