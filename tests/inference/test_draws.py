"""``predict(..., draws=...)``: shared and independent weight draws through the sampling API."""

import copy

import pytest
import torch
import torch.nn.functional as F

import vipann
from vipann.inference import default_draws, default_rows, make_sampler
from vipann.layers import flipout_layers


def _audio(batch=2, seconds=1.0, seed=0, rate=16000):
    return 0.1 * torch.randn(batch, int(seconds * rate), generator=torch.Generator().manual_seed(seed))


def _model(name, seed=0):
    torch.manual_seed(seed)
    model = vipann.create_model(name)
    with torch.no_grad():  # a wider posterior than the default init: clearly non-zero uncertainty
        for _, layer in flipout_layers(model):
            layer.rho_w.fill_(-2.0)
    return model


def _z_test(a, b, limit=5.0):
    """Means and variances over the first axis agree within ``limit`` standard errors."""

    def moments(x):
        n = x.shape[0]
        mean, var = x.mean(0), x.var(0)
        fourth = ((x - mean) ** 4).mean(0)
        return mean, var, var / n, (fourth - var**2).clamp_min(0) / n

    m1, v1, se_m1, se_v1 = moments(a)
    m2, v2, se_m2, se_v2 = moments(b)
    assert ((m1 - m2).abs() <= limit * torch.sqrt(se_m1 + se_m2) + 1e-6).all()
    assert ((v1 - v2).abs() <= limit * torch.sqrt(se_v1 + se_v2) + 1e-7).all()


@pytest.mark.parametrize("method", ["flip", "detflip"])
def test_shared_draws_are_reproducible_and_differ_per_row(method):
    model = _model(f"{method}-tiny")
    x = _audio(batch=1).repeat(3, 1)  # identical clips
    a = vipann.predict(model, x, num_samples=6, generator=3, draws="shared")
    b = vipann.predict(model, x, num_samples=6, generator=torch.Generator().manual_seed(3), draws="shared")
    torch.testing.assert_close(a.probs, b.probs)
    assert not torch.allclose(a.probs, vipann.predict(model, x, num_samples=6, generator=4, draws="shared").probs)
    # one pass, one ΔW: still every (sample, clip) row differs
    assert not torch.allclose(a.probs[:, 0], a.probs[:, 1])
    assert not torch.allclose(a.probs[0], a.probs[1])
    assert not any(m.mc_active or m.draws != "independent" for m in vipann.layers.stochastic_modules(model))
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))  # eval() is deterministic again


def test_detflip_shared_and_independent_sample_the_same_distribution():
    model = _model("detflip-tiny")
    x = _audio()
    shared = vipann.predict(model, x, num_samples=300, generator=1, draws="shared").probs
    independent = vipann.predict(model, x, num_samples=300, generator=2, draws="independent").probs
    _z_test(shared, independent)


def test_flip_shared_draws_match_explicit_weight_samples():
    """Shared draws sample the weight posterior: as running the network on explicitly drawn weights.

    All samples share one pass (one ΔW per layer), the case where rows are most dependent.
    """
    model = _model("flip-tiny")
    x = _audio()
    samples = 200
    shared = vipann.predict(model, x, num_samples=samples, generator=1, draws="shared", max_rows=1024).probs
    reference = copy.deepcopy(model).eval()
    layers = [layer for _, layer in flipout_layers(reference)]
    params = [(layer.mu_w, layer.rho_w) for layer in layers]
    params += [(layer.mu_bias, layer.rho_bias) for layer in layers if layer.mu_bias is not None]
    means = [mu.detach().clone() for mu, _ in params]
    g = torch.Generator().manual_seed(2)
    probs = []
    with torch.no_grad():
        for _ in range(samples):  # one explicit weight draw per sample, run at the posterior "mean"
            for (mu, rho), mean in zip(params, means):
                mu.copy_(mean + F.softplus(rho) * torch.randn(mean.shape, generator=g))
            probs.append(reference(x).softmax(-1))
    _z_test(shared, torch.stack(probs))


def test_default_draws_follow_the_measured_choice():
    assert default_draws(vipann.create_model("detflip-tiny")) == "shared"
    for name in ("flip-tiny", "drop-tiny", "det-tiny"):
        assert default_draws(vipann.create_model(name)) == "independent"
    # a per-segment head: bayesian-torch's signs per segment are not one weight draw per clip
    dlmax = vipann.models.PANN("cnn14-dlmax", "detflip", num_classes=3)
    assert default_draws(dlmax) == "independent"
    cpu = torch.device("cpu")
    assert default_rows("flip", cpu, "shared") > default_rows("flip", cpu, "independent") == 1
    assert default_rows("detflip", cpu, "shared") >= 1024


def test_default_is_used_when_draws_is_none():
    model = _model("detflip-tiny")
    x = _audio()
    default = vipann.predict(model, x, num_samples=5, generator=0).probs
    torch.testing.assert_close(default, vipann.predict(model, x, num_samples=5, generator=0, draws="shared").probs)
    other = vipann.predict(model, x, num_samples=5, generator=0, draws="independent").probs
    assert not torch.allclose(default, other)


def test_bad_draws_are_refused_everywhere():
    model = vipann.create_model("flip-tiny")
    with pytest.raises(ValueError, match="draws must be one of"):
        vipann.predict(model, _audio(), num_samples=2, draws="per-row")
    with pytest.raises(ValueError, match="draws must be one of"):
        make_sampler(model, 2, draws="Shared")


def test_ensemble_members_use_the_requested_draws():
    members = [_model("detflip-tiny", seed=s) for s in (0, 1)]
    ensemble = vipann.Ensemble(members)
    x = _audio()
    a = vipann.predict(ensemble, x, num_samples=4, generator=5, draws="independent")
    b = vipann.predict(ensemble, x, num_samples=4, generator=5, draws="independent")
    c = vipann.predict(ensemble, x, num_samples=4, generator=5)  # default: shared for detflip members
    torch.testing.assert_close(a.probs, b.probs)
    assert a.probs.shape == c.probs.shape == (8, 2, 10)
    assert not torch.allclose(a.probs, c.probs)
    torch.testing.assert_close(c.probs, vipann.predict(ensemble, x, num_samples=4, generator=5, draws="shared").probs)
