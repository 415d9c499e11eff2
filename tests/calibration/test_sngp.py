import math

import pytest
import torch
from torch import nn

import vipann
from vipann.calibration import (
    RandomFeatureGP,
    SNGPHead,
    SpectralNormMLP,
    all_reduce_sngp_precision,
    attach_sngp_head,
    bounded_spectral_norm,
    mean_field_logits,
    reset_sngp_precision,
)


def _blobs(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[2.0, 0.0], [-2.0, 0.0]])
    x = torch.cat([0.5 * torch.randn(n, 2, generator=g) + c for c in centres])
    y = torch.arange(2).repeat_interleave(n)
    return x, y


def _train(head, x, y, epochs=20, lr=2e-2, seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(epochs):
        head.train()
        reset_sngp_precision(head)  # the precision of the last epoch is what remains
        for index in torch.randperm(len(x)).split(50):
            loss = nn.functional.cross_entropy(head(x[index]), y[index])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head.eval()


@pytest.mark.parametrize("hidden", [(), (32, 32)])
def test_variance_grows_away_from_the_training_data(hidden):
    torch.manual_seed(0)
    head = SNGPHead(2, 2, hidden=hidden, num_features=256, lengthscale=1.0 if not hidden else 2.0)
    x, y = _blobs()
    _train(head, x, y)
    near = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [2.3, 0.4], [-1.7, -0.3]])
    far = torch.tensor([[0.0, 8.0], [10.0, 10.0], [-8.0, -8.0], [0.0, -12.0]])
    with torch.no_grad():
        assert (head(x).argmax(1) == y).float().mean() > 0.99
        _, v_near = head.posterior(near)
        _, v_far = head.posterior(far)
        assert v_near.shape == (4,)
        assert v_near.max() < 0.05 and v_far.min() > 0.3
        # mean-field logits: confident near the data, pulled towards uniform far from it
        p_near, p_far = head(near).softmax(-1).amax(-1), head(far).softmax(-1).amax(-1)
        assert p_near.min() > 0.99 and p_far.max() < 0.9


def test_mean_field_logits_shrink_as_variance_grows():
    logits = torch.tensor([[3.0, -1.0, 0.5]]).expand(4, 3)
    variance = torch.tensor([0.0, 1.0, 10.0, 100.0])
    out = mean_field_logits(logits, variance)
    torch.testing.assert_close(out[0], logits[0])
    torch.testing.assert_close(out[1], logits[1] / math.sqrt(1 + math.pi / 8))
    assert (out.abs().diff(dim=0) <= 0).all() and out[-1].abs().max() < 0.6
    torch.testing.assert_close(mean_field_logits(logits, variance, 0.0), logits)
    per_class = torch.full((4, 3), 2.0)
    torch.testing.assert_close(mean_field_logits(logits, per_class, 1.0), logits / math.sqrt(3))
    with pytest.raises(ValueError, match="mean_field_factor"):
        mean_field_logits(logits, variance, -1.0)
    with pytest.raises(ValueError, match="does not fit"):
        mean_field_logits(logits, torch.ones(3))


@pytest.mark.parametrize("multilabel", [False, True])
def test_laplace_precision_matches_the_hand_computed_sum(multilabel):
    torch.manual_seed(0)
    gp = RandomFeatureGP(3, 4, num_features=8, ridge=2.0, likelihood="laplace", multilabel=multilabel).train()
    x = torch.randn(5, 3)
    logits = gp(x)
    phi = gp.features(x)
    if multilabel:
        p = logits.detach().sigmoid()
        w = (p * (1 - p)).mean(-1)
    else:
        p = logits.detach().softmax(-1).amax(-1)
        w = p * (1 - p)
    expected = 2.0 * torch.eye(8) + (w[:, None, None] * phi[:, :, None] * phi[:, None, :]).sum(0).detach()
    torch.testing.assert_close(gp.precision, expected)
    torch.testing.assert_close(gp.covariance(), 2.0 * torch.linalg.inv(expected), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="logits"):
        gp.update_precision(phi)


def test_precision_accumulates_only_in_training():
    torch.manual_seed(0)
    gp = RandomFeatureGP(3, 2, num_features=16)
    x = torch.randn(10, 3)
    eye = torch.eye(16)
    gp.eval()
    gp(x)
    torch.testing.assert_close(gp.precision, eye)
    _, v0 = gp.posterior(x)
    gp.train()
    gp.accumulate = False
    gp(x)
    torch.testing.assert_close(gp.precision, eye)
    gp.accumulate = True
    gp(x)
    phi = gp.features(x)
    torch.testing.assert_close(gp.precision, eye + phi.T @ phi)
    _, v1 = gp.posterior(x)  # the cached covariance was refreshed
    assert (v1 < v0).all()
    state = {k: v.clone() for k, v in gp.state_dict().items()}
    gp.reset_precision()
    torch.testing.assert_close(gp.posterior(x)[1], v0)
    gp.load_state_dict(state)
    torch.testing.assert_close(gp.posterior(x)[1], v1)


def test_training_mode_gives_plain_logits_and_eval_mode_mean_field_logits():
    torch.manual_seed(0)
    gp = RandomFeatureGP(3, 2, num_features=32)
    x = torch.randn(6, 3)
    mean, var = gp.posterior(x)
    torch.testing.assert_close(gp.eval()(x), mean_field_logits(mean, var))
    torch.testing.assert_close(gp.train()(x), mean)
    gp.mean_field_factor = None
    torch.testing.assert_close(gp.eval()(x), mean)


def test_bad_gp_arguments():
    with pytest.raises(ValueError, match="likelihood"):
        RandomFeatureGP(3, 2, likelihood="poisson")
    with pytest.raises(ValueError, match="positive"):
        RandomFeatureGP(3, 0)
    with pytest.raises(ValueError, match="lengthscale"):
        RandomFeatureGP(3, 2, lengthscale=0.0)


def test_spectral_norm_is_bounded_and_small_weights_are_untouched():
    torch.manual_seed(0)
    big = bounded_spectral_norm(nn.Linear(6, 5), bound=0.9)
    with torch.no_grad():
        big.parametrizations.weight.original.mul_(20)
    opt = torch.optim.SGD(big.parameters(), lr=0.5)
    for _ in range(20):
        big.train()
        loss = big(torch.randn(8, 6)).pow(2).mean() - big.weight.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    big.eval()
    assert torch.linalg.matrix_norm(big.weight.detach(), 2) <= 0.9 * 1.01
    small = bounded_spectral_norm(nn.Linear(6, 5), bound=0.9)
    with torch.no_grad():
        small.parametrizations.weight.original.mul_(0.01)
        torch.testing.assert_close(small.weight, small.parametrizations.weight.original)


def test_residual_hidden_layers_are_bi_lipschitz():
    torch.manual_seed(0)
    mlp = SpectralNormMLP(8, (8, 8), bound=0.5).eval()
    assert mlp.residual == (True, True) and mlp.out_features == 8
    a, b = torch.randn(100, 8), torch.randn(100, 8)
    with torch.no_grad():
        ratio = (mlp(a) - mlp(b)).norm(dim=1) / (a - b).norm(dim=1)
    assert ratio.min() >= 0.5**2 - 1e-4 and ratio.max() <= 1.5**2 + 1e-4
    assert SpectralNormMLP(4, (8, 3)).residual == (False, False)
    with pytest.raises(ValueError, match="positive"):
        SpectralNormMLP(4, (0,))


@pytest.mark.parametrize("name", ["det-tiny", "drop-tiny", "flip-tiny"])
def test_attach_to_a_pann(name):
    torch.manual_seed(0)
    model = attach_sngp_head(vipann.create_model(name, num_classes=5))
    assert model.head_type == "sngp" and model.method == name.split("-")[0]
    assert isinstance(model.fc_audioset, RandomFeatureGP) and isinstance(model.fc1, SpectralNormMLP)
    x = 0.1 * torch.randn(4, 16000)
    model.train()
    model(x).sum().backward()
    assert not torch.equal(model.fc_audioset.precision, torch.eye(1024))
    assert reset_sngp_precision(model) == 1
    model.eval()
    with torch.no_grad():
        pooled = model.pooled(x)
        mean, var = model.fc_audioset.posterior(model.fc1(pooled))
        torch.testing.assert_close(model(x), mean_field_logits(mean, var))
    result = vipann.predict(model, x, num_samples=1 if name == "det-tiny" else 3, generator=0)
    assert result.probs.shape == (result.probs.shape[0], 4, 5)
    if name != "det-tiny":
        assert (result.epistemic > 0).all()
    # the head is rebuilt from head_config and loads strictly
    rebuilt = vipann.create_model(name, num_classes=5)
    attach_sngp_head(rebuilt, **{k: v for k, v in model.head_config.items() if k != "type"})
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), model(x))


def test_attach_without_hidden_layers_and_errors():
    model = attach_sngp_head(vipann.create_model("drop-tiny"), hidden=(), num_features=64)
    assert isinstance(model.fc1, nn.Identity) and isinstance(model.dropout_head, nn.Identity)
    assert model.fc_audioset.in_features == model.embed_dim and model.fc_audioset.num_features == 64
    assert model.head_config["hidden"] == [] and model.head_config["num_features"] == 64
    assert model.eval()(0.1 * torch.randn(2, 16000)).shape == (2, 10)
    with pytest.raises(TypeError, match="PANN"):
        attach_sngp_head(nn.Linear(3, 3))


def test_all_reduce_sums_the_data_terms_once(monkeypatch):
    import vipann.calibration.sngp as sngp

    assert all_reduce_sngp_precision(RandomFeatureGP(3, 2, num_features=8)) == 0  # not distributed
    torch.manual_seed(0)
    gp = RandomFeatureGP(3, 2, num_features=8, ridge=0.5).train()
    gp(torch.randn(4, 3))
    data = gp.precision - 0.5 * torch.eye(8)
    _ = gp.covariance()
    # two processes holding the same shard: all_reduce doubles the data term, the prior is kept once
    monkeypatch.setattr(sngp.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(sngp.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(sngp.dist, "all_reduce", lambda t: t.mul_(2))
    assert all_reduce_sngp_precision(gp) == 1
    torch.testing.assert_close(gp.precision, 0.5 * torch.eye(8) + 2 * data)
    torch.testing.assert_close(gp.covariance(), 0.5 * torch.linalg.inv(gp.precision), rtol=1e-4, atol=1e-5)
