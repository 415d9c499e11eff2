"""Laplace over fc1 + classifier through a Hardswish (EfficientAT's head), against a direct GGN."""

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

import vipann
from vipann.calibration import fit_laplace, fit_laplace_features
from vipann.calibration.laplace_curvature import activation_derivative


def test_activation_derivatives_equal_autograd():
    z = torch.linspace(-5, 5, 1001, dtype=torch.float64)
    for act in (nn.ReLU(), nn.Hardswish()):
        zz = z.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(act(zz).sum(), zz)
        keep = (z.abs() - 3).abs() > 1e-6  # away from the kinks, where autograd picks a side
        keep &= z.abs() > 1e-6
        torch.testing.assert_close(activation_derivative(act, z)[keep], grad[keep])
    with pytest.raises(TypeError, match="ReLU, Hardswish"):
        activation_derivative(nn.GELU(), z)


def test_head_diag_posterior_through_hardswish_equals_the_direct_ggn():
    torch.manual_seed(0)
    model = vipann.create_model("det-tiny", num_classes=3).double().eval()
    model.act_fc1 = nn.Hardswish()
    model.fc1.weight.data.mul_(20.0)  # pre-activations across all three pieces of the Hardswish
    g = torch.Generator().manual_seed(1)
    pooled = torch.randn(10, model.fc1.in_features, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 3, (10,), generator=g)
    lam = 0.5
    laplace = fit_laplace_features(model, pooled, targets, subset="head", hessian="diag", prior_precision=lam)
    z1 = model.fc1(pooled)
    assert (z1 < -3).any() and (z1 > 3).any() and ((z1 > -3) & (z1 < 3)).any()

    head = nn.Sequential(model.fc1, model.act_fc1, model.fc_audioset)
    params = {k: v.detach() for k, v in head.named_parameters()}

    def f(p, x):
        return functional_call(head, p, (x[None],))[0]

    ggn = {k: torch.zeros_like(v) for k, v in params.items()}
    jac_star = []
    for n in range(len(pooled)):
        jac = jacrev(f)(params, pooled[n])  # {name: (C, *shape)}
        p = torch.softmax(f(params, pooled[n]), -1)
        h = torch.diag(p) - torch.outer(p, p)
        for k, j in jac.items():
            flat = j.reshape(j.shape[0], -1)
            ggn[k] += torch.einsum("ci,cd,di->i", flat, h, flat).reshape(j.shape[1:])
        jac_star.append(jac)
    variance = {k: 1.0 / (v + lam) for k, v in ggn.items()}
    for n in range(3):
        direct = sum(
            j.reshape(j.shape[0], -1) @ torch.diag(variance[k].flatten()) @ j.reshape(j.shape[0], -1).T
            for k, j in jac_star[n].items()
        )
        _, cov = laplace.predictive_from_pooled(pooled[n : n + 1])
        torch.testing.assert_close(cov[0], direct, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("subset", ["last_layer", "head"])
def test_efficientat_taggers_become_laplace_models(subset, tmp_path):
    torch.manual_seed(0)
    model = vipann.create_model("det-mn04", num_classes=5).eval()
    g = torch.Generator().manual_seed(2)
    waves = 0.1 * torch.randn(8, 16000, generator=g)
    targets = (torch.rand(8, 5, generator=g) < 0.3).float()
    laplace = fit_laplace(model, (waves, targets), subset=subset, hessian="kron")
    assert laplace.likelihood == "bernoulli"
    pred = vipann.predict(laplace, waves[:2], num_samples=6)
    assert pred.probs.shape == (6, 2, 5) and float(pred.epistemic.min()) > 0
    loaded = vipann.from_pretrained(f"local-dir:{vipann.save_pretrained(laplace, tmp_path / subset)}")
    assert loaded.method == "laplace" and loaded.network.arch == "mn04"
    torch.testing.assert_close(
        loaded.predictive_distribution(waves[:2])[1], laplace.predictive_distribution(waves[:2])[1]
    )
