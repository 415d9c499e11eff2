import copy
import dataclasses
import warnings

import pytest
import torch

import vipann
from vipann.calibration import collect_logits
from vipann.inference.ensemble import Ensemble, member_seeds, predict_ensemble
from vipann.uncertainty import decompose


def _audio(batch=3, seed=0):
    return 0.1 * torch.randn(batch, 16000, generator=torch.Generator().manual_seed(seed))


def _members(name="drop-tiny", m=3, **kwargs):
    out = []
    for seed in range(m):
        torch.manual_seed(seed)
        out.append(vipann.create_model(name, **kwargs).eval())
    return out


def test_identical_members_have_zero_epistemic_uncertainty():
    member = _members("det-tiny", 1)[0]
    ensemble = Ensemble([member, copy.deepcopy(member), copy.deepcopy(member), copy.deepcopy(member)])
    result = predict_ensemble(ensemble, _audio(), num_samples=1, generator=0)
    assert result.probs.shape == (4, 3, 10)
    torch.testing.assert_close(result.epistemic, torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(result.total, result.aleatoric, atol=1e-6, rtol=0)


def test_different_members_disagree():
    ensemble = Ensemble(_members("det-tiny", 3))
    result = predict_ensemble(ensemble, _audio(), generator=0)  # default S = 1 for det members
    assert result.probs.shape == (3, 3, 10)
    assert (result.epistemic > 0).all()
    torch.testing.assert_close(result.total, result.aleatoric + result.epistemic)


def test_mc_members_give_member_major_samples():
    members = _members("drop-tiny", 3)
    ensemble = Ensemble(members)
    x = _audio()
    result = predict_ensemble(ensemble, x, num_samples=4, generator=7)
    assert result.probs.shape == (12, 3, 10)
    assert result.labels == members[0].pretrained_cfg.labels and result.multilabel is False
    for i, (member, seed) in enumerate(zip(members, member_seeds(7, 3))):
        own = vipann.predict(member, x, num_samples=4, generator=seed).probs
        torch.testing.assert_close(result.probs[4 * i : 4 * (i + 1)], own)
    # every decomposition works unchanged on the (M·S, B, C) tensor
    d = decompose(result.probs, multilabel=False)
    torch.testing.assert_close(d.epistemic, result.epistemic)
    again = predict_ensemble(ensemble, x, num_samples=4, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(again.probs, result.probs)


def test_vipann_predict_dispatches_to_the_ensemble():
    ensemble = Ensemble(_members("drop-tiny", 2))
    try:
        result = vipann.predict(ensemble, _audio(), num_samples=3, generator=0)
    except AttributeError:  # pragma: no cover - until vipann.predict dispatches on Ensemble
        pytest.skip("vipann.predict does not dispatch to predict_ensemble yet")
    torch.testing.assert_close(result.probs, predict_ensemble(ensemble, _audio(), num_samples=3, generator=0).probs)


def test_metadata_and_forward():
    members = _members("drop-tiny", 3)
    ensemble = Ensemble(members).eval()
    assert len(ensemble) == 3 and ensemble.method == "ensemble-drop" and ensemble.member_method == "drop"
    assert (ensemble.num_classes, ensemble.sample_rate, ensemble.arch) == (10, 16000, "tiny")
    assert ensemble.pretrained_cfg.default_num_samples == members[0].pretrained_cfg.default_num_samples
    assert ensemble.min_samples == members[0].min_samples and not ensemble.multilabel
    x = _audio()
    with torch.no_grad():
        expected = torch.stack([m(x).softmax(-1) for m in members]).mean(0)
        torch.testing.assert_close(ensemble(x).softmax(-1), expected)
    assert "members=3" in repr(ensemble)


def test_multilabel_forward_is_the_logit_of_the_mean_probability():
    members = _members("det-tiny", 2)
    for m in members:
        m.pretrained_cfg = dataclasses.replace(m.pretrained_cfg, multilabel=True)
    ensemble = Ensemble(members)
    x = _audio()
    with torch.no_grad():
        expected = torch.stack([m(x).sigmoid() for m in members]).mean(0)
        torch.testing.assert_close(ensemble(x).sigmoid(), expected)
    assert ensemble.multilabel and predict_ensemble(ensemble, x).multilabel


def test_collect_logits_concatenates_members():
    ensemble = Ensemble(_members("drop-tiny", 2))
    z = collect_logits(ensemble, _audio(2), num_samples=3, generator=0)
    assert z.shape == (6, 2, 10)
    probs = predict_ensemble(ensemble, _audio(2), num_samples=3, generator=0).probs
    torch.testing.assert_close(z.softmax(-1), probs)


@pytest.mark.parametrize(
    ("other", "field"),
    [
        (lambda: vipann.create_model("drop-tiny", num_classes=5), "num_classes"),
        (lambda: vipann.create_model("flip-tiny"), "method"),
        (lambda: vipann.create_model("drop-tiny", frontend={"sample_rate": 8000, "fmax": 4000.0}), "sample_rate"),
    ],
)
def test_mismatched_members_are_refused(other, field):
    with pytest.raises(ValueError, match=f"agree on {field}: member 0 has"):
        Ensemble([vipann.create_model("drop-tiny"), other()])


def test_bad_member_lists():
    with pytest.raises(ValueError, match="at least one"):
        Ensemble([])
    inner = Ensemble(_members("det-tiny", 1))
    with pytest.raises(TypeError, match="itself an Ensemble"):
        Ensemble([inner])
    with pytest.raises(TypeError, match=r"nn\.Module"):
        Ensemble(["det-tiny"])
    with pytest.raises(TypeError, match="sequence"):
        Ensemble.from_pretrained("det-tiny")
    with pytest.raises(TypeError, match="Ensemble"):
        predict_ensemble(inner.members[0], _audio())
    with pytest.raises(TypeError, match="generator"):
        member_seeds(1.5, 2)


def test_from_pretrained_local_dirs(tmp_path):
    members = _members("det-tiny", 2)
    sources = []
    for i, m in enumerate(members):
        vipann.save_pretrained(m, tmp_path / f"m{i}")
        sources.append(f"local-dir:{tmp_path / f'm{i}'}")
    ensemble = Ensemble.from_pretrained(sources)
    x = _audio()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = predict_ensemble(ensemble, x).probs
        b = predict_ensemble(Ensemble(members), x).probs
    torch.testing.assert_close(a, b)
