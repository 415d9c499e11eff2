import copy

import pytest
import torch
import torch.nn.functional as F

from vipann.layers import Conv2dFlipout, LinearFlipout, kl_loss, mc_sampling, rho_from_sigma, set_mean_only

bt_linear = pytest.importorskip("bayesian_torch.layers.flipout_layers.linear_flipout")
bt_conv = pytest.importorskip("bayesian_torch.layers.flipout_layers.conv_flipout")


def _copy_params(src, dst, names):
    with torch.no_grad():
        for name in names:
            getattr(dst, name).copy_(getattr(src, name))


@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_bayesian_torch(bias):
    torch.manual_seed(0)
    ref = bt_linear.LinearFlipout(7, 5, prior_mean=0.1, prior_variance=0.7, bias=bias)
    ours = LinearFlipout(7, 5, bias=bias, prior_mean=0.1, prior_sigma=0.7)
    names = ["mu_weight", "rho_weight"] + (["mu_bias", "rho_bias"] if bias else [])
    _copy_params(ref, ours, names)
    x = torch.randn(4, 7)
    torch.manual_seed(123)
    out_ref, kl_ref = ref(x)  # a directly built bayesian-torch layer returns (out, kl)
    torch.manual_seed(123)
    out = ours.train()(x)
    torch.testing.assert_close(out, out_ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ours.kl_divergence("mean"), kl_ref, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(ours.kl_divergence("mean"), ref.kl_loss(), atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize(
    "geometry",
    [
        dict(kernel_size=3, padding=1),
        dict(kernel_size=(3, 1), stride=2),
        dict(kernel_size=3, padding=1, groups=2),
    ],
)
@pytest.mark.parametrize("bias", [True, False])
def test_conv_matches_bayesian_torch(geometry, bias):
    torch.manual_seed(1)
    ref = bt_conv.Conv2dFlipout(4, 6, bias=bias, **geometry)
    ours = Conv2dFlipout(4, 6, bias=bias, **geometry)
    names = ["mu_kernel", "rho_kernel"] + (["mu_bias", "rho_bias"] if bias else [])
    _copy_params(ref, ours, names)
    x = torch.randn(3, 4, 9, 8)
    torch.manual_seed(7)
    out_ref, kl_ref = ref(x)
    torch.manual_seed(7)
    out = ours.train()(x)
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.kl_divergence(), kl_ref, atol=1e-5, rtol=1e-6)


def test_state_dict_names_match_bayesian_torch():
    ref = bt_conv.Conv2dFlipout(2, 3, 3)
    ours = Conv2dFlipout(2, 3, 3)
    ref_keys = set(ref.state_dict())
    ours_keys = set(ours.state_dict())
    assert ref_keys == {"mu_kernel", "rho_kernel", "mu_bias", "rho_bias"}
    # vipann adds the persistent priors and nothing else.
    assert ours_keys - ref_keys == {
        "prior_weight_mu",
        "prior_weight_sigma",
        "prior_bias_mu",
        "prior_bias_sigma",
    }
    lin = LinearFlipout(3, 2)
    assert {"mu_weight", "rho_weight", "mu_bias", "rho_bias"} <= set(lin.state_dict())


def test_default_init_follows_bayesian_torch():
    torch.manual_seed(0)
    layer = LinearFlipout(400, 300)
    assert abs(layer.mu_weight.mean().item()) < 0.01
    assert layer.mu_weight.std().item() == pytest.approx(0.1, rel=0.02)
    assert layer.rho_weight.mean().item() == pytest.approx(-3.0, abs=0.01)
    assert layer.rho_weight.std().item() == pytest.approx(0.1, rel=0.02)


def test_eval_is_mean_and_sampling_is_opt_in():
    torch.manual_seed(0)
    layer = Conv2dFlipout(2, 3, 3, padding=1).eval()
    x = torch.randn(2, 2, 5, 5)
    mean = F.conv2d(x, layer.mu_kernel, layer.mu_bias, padding=1)
    torch.testing.assert_close(layer(x), mean)
    torch.testing.assert_close(layer(x), layer(x))
    with mc_sampling(layer):
        a, b = layer(x), layer(x)
    assert not torch.allclose(a, b)
    assert not layer.mc_active  # restored on exit
    set_mean_only(layer, True)
    with mc_sampling(layer):
        torch.testing.assert_close(layer(x), mean)
    layer.train()
    torch.testing.assert_close(layer(x), mean)


def test_generator_makes_sampling_reproducible():
    layer = LinearFlipout(5, 4).eval()
    x = torch.randn(3, 5)
    outs = []
    for _ in range(2):
        with mc_sampling(layer, generator=torch.Generator().manual_seed(3)):
            outs.append(layer(x))
    torch.testing.assert_close(outs[0], outs[1])


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_grouped_draws_are_independent_per_group(kind):
    torch.manual_seed(0)
    groups, batch = 3, 2
    if kind == "conv":
        layer = Conv2dFlipout(4, 6, 3, padding=1, groups=2).eval()
        x = torch.randn(groups * batch, 4, 5, 7)
        op = lambda inp, w, b: F.conv2d(inp, w, b, padding=1, groups=2)  # noqa: E731
        w_mu, w_rho = layer.mu_kernel, layer.rho_kernel
    else:
        layer = LinearFlipout(5, 4).eval()
        x = torch.randn(groups * batch, 5)
        op = F.linear
        w_mu, w_rho = layer.mu_weight, layer.rho_weight
    with torch.no_grad(), mc_sampling(layer, generator=torch.Generator().manual_seed(11), num_draws=groups):
        out = layer(x)
    # Re-draw the same noise by hand in the layer's documented order (signs, then eps per group).
    g = torch.Generator().manual_seed(11)
    mean = op(x, w_mu, layer.mu_bias)
    # grouped path, both kinds: the signs first, then one eps per group
    s_in = torch.empty_like(x).uniform_(-1, 1, generator=g).sign()
    s_out = torch.empty_like(mean).uniform_(-1, 1, generator=g).sign()
    eps_w = torch.empty((groups, *w_mu.shape)).normal_(generator=g)
    eps_b = torch.empty((groups, *layer.mu_bias.shape)).normal_(generator=g)
    expected = []
    with torch.no_grad():
        for i in range(groups):
            sl = slice(i * batch, (i + 1) * batch)
            delta = F.softplus(w_rho) * eps_w[i]
            delta_b = F.softplus(layer.rho_bias) * eps_b[i]
            expected.append(mean[sl] + op(x[sl] * s_in[sl], delta, delta_b) * s_out[sl])
    torch.testing.assert_close(out, torch.cat(expected), atol=1e-5, rtol=1e-5)
    # different groups saw different weights: identical inputs give different outputs
    assert not torch.allclose(out[:batch], out[batch : 2 * batch])


def test_grouped_draws_reject_uneven_batch():
    layer = LinearFlipout(3, 2).eval()
    with mc_sampling(layer, num_draws=2), pytest.raises(ValueError, match="equal groups"):
        layer(torch.randn(3, 3))


def test_kl_reductions_and_model_sum():
    torch.manual_seed(0)
    model = torch.nn.Sequential(Conv2dFlipout(2, 3, 3), torch.nn.Flatten(), LinearFlipout(3, 2))
    conv, lin = model[0], model[2]
    mean_total = conv.kl_divergence("mean") + lin.kl_divergence("mean")
    torch.testing.assert_close(kl_loss(model), mean_total)
    # "sum" is the element-wise sum: mean * numel, separately for weight and bias.
    sigma = F.softplus(lin.rho_weight)
    kl_w = (torch.log(1 / sigma) + (sigma**2 + lin.mu_weight**2) / 2 - 0.5).sum()
    sigma_b = F.softplus(lin.rho_bias)
    kl_b = (torch.log(1 / sigma_b) + (sigma_b**2 + lin.mu_bias**2) / 2 - 0.5).sum()
    torch.testing.assert_close(lin.kl_divergence("sum"), kl_w + kl_b)
    assert kl_loss(model, "sum") > kl_loss(model, "mean")
    with pytest.raises(ValueError, match="reduction"):
        lin.kl_divergence("max")
    assert kl_loss(torch.nn.Linear(2, 2)).item() == 0.0


def test_moped_init_and_prior_roundtrip():
    torch.manual_seed(0)
    det = torch.nn.Linear(6, 4)
    with torch.no_grad():
        det.bias[0] = 0.0  # a zero weight gets bayesian-torch's rho = log(1e-20)
    layer = LinearFlipout(6, 4)
    layer.init_from_deterministic(det.weight, det.bias, delta=0.5, prior="weights")
    torch.testing.assert_close(layer.mu_weight, det.weight)
    torch.testing.assert_close(F.softplus(layer.rho_weight), 0.5 * det.weight.abs(), atol=1e-7, rtol=1e-5)
    assert layer.rho_bias[0].item() == pytest.approx(float(torch.log(torch.tensor(1e-20))), rel=1e-6)
    assert layer.prior_weight_mu.shape == det.weight.shape
    sd = copy.deepcopy(layer.state_dict())
    fresh = LinearFlipout(6, 4)
    assert fresh.prior_weight_mu.dim() == 0
    fresh.load_state_dict(sd)
    torch.testing.assert_close(fresh.prior_weight_mu, det.weight)
    torch.testing.assert_close(fresh.kl_divergence(), layer.kl_divergence())
    # and back to a scalar prior
    fresh.load_state_dict(LinearFlipout(6, 4).state_dict())
    assert fresh.prior_weight_mu.dim() == 0


def test_moped_rejects_bad_input():
    layer = LinearFlipout(3, 2)
    with pytest.raises(ValueError, match="shape"):
        layer.init_from_deterministic(torch.zeros(3, 3), torch.zeros(2))
    with pytest.raises(ValueError, match="bias"):
        layer.init_from_deterministic(torch.zeros(2, 3), None)
    with pytest.raises(ValueError, match="prior"):
        layer.init_from_deterministic(torch.zeros(2, 3), torch.zeros(2), prior="laplace")
    with pytest.raises(ValueError, match="delta"):
        layer.init_from_deterministic(torch.zeros(2, 3), torch.zeros(2), delta=-1)


def test_rho_from_sigma_inverts_softplus():
    sigma = torch.tensor([1e-3, 0.1, 1.0, 5.0])
    torch.testing.assert_close(F.softplus(rho_from_sigma(sigma)), sigma, rtol=1e-5, atol=0)


def test_backward_reaches_mu_and_rho():
    layer = Conv2dFlipout(1, 2, 3).train()
    out = layer(torch.randn(2, 1, 5, 5)).sum() + layer.kl_divergence()
    out.backward()
    assert layer.mu_kernel.grad is not None and layer.rho_kernel.grad.abs().sum() > 0
