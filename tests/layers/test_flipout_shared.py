"""Shared weight draws (``draws="shared"``): one ΔW per pass, sign vectors per row and channel."""

import pytest
import torch
import torch.nn.functional as F

from vipann.layers import Conv2dFlipout, LinearFlipout, MCDropout, mc_sampling, set_mc_sampling
from vipann.layers.stochastic import DRAWS, check_draws


def _layer(kind, seed=0, path="flip"):
    """A small layer; ``path="flip"`` forces one shared ΔW with sign flips, ``"rows"`` a draw per row."""
    torch.manual_seed(seed)
    if kind == "conv":
        layer = Conv2dFlipout(3, 4, 3, padding=1).eval()
        op = lambda inp, w, b: F.conv2d(inp, w, b, padding=1)  # noqa: E731
    else:
        layer = LinearFlipout(6, 4).eval()
        op = F.linear
    with torch.no_grad():  # a wider posterior than the default init, so moments are clearly > 0
        layer.rho_w.fill_(-1.0)
        layer.rho_bias.fill_(-1.5)
    # Below shared_min_elements weights a layer draws per row; these layers are small, so the
    # sign-flip path is forced by lowering the threshold on the instance.
    layer.shared_min_elements = 0 if path == "flip" else 1 << 30
    return layer, op


def _input(kind, rows, seed=1):
    g = torch.Generator().manual_seed(seed)
    one = torch.randn(1, 3, 5, 6, generator=g) if kind == "conv" else torch.randn(1, 6, generator=g)
    return one.repeat(rows, *([1] * (one.dim() - 1)))  # identical rows: only the noise differs


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_shared_pass_reproduces_by_hand_one_weight_draw_per_row(kind):
    layer, op = _layer(kind)
    rows = 5
    x = _input(kind, rows)
    with torch.no_grad(), mc_sampling(layer, generator=torch.Generator().manual_seed(3), draws="shared"):
        out = layer(x)
    # The documented order: eps of the weight, the input signs, the output signs, then one bias
    # draw per row.
    g = torch.Generator().manual_seed(3)
    w, b = layer.mu_w.detach(), layer.mu_bias.detach()
    delta_w = F.softplus(layer.rho_w.detach()) * torch.empty_like(w).normal_(generator=g)
    channel_shape = (rows, -1, 1, 1) if kind == "conv" else (rows, -1)
    s_in = (torch.randint(0, 2, (rows, x.shape[1]), generator=g) * 2 - 1).float()
    s_out = (torch.randint(0, 2, (rows, w.shape[0]), generator=g) * 2 - 1).float()
    eps_b = torch.empty(rows, w.shape[0]).normal_(generator=g)
    for n in range(rows):
        # Row n is the layer with the weight mu + ΔW ∘ r_n s_nᵀ and its own bias draw: an exact
        # posterior sample, since the flipped ΔW has the distribution of ΔW.
        flip = s_out[n].reshape(-1, *([1] * (w.dim() - 1))) * s_in[n].reshape(1, -1, *([1] * (w.dim() - 2)))
        bias = b + F.softplus(layer.rho_bias.detach()) * eps_b[n]
        expected = op(x[n : n + 1], w + delta_w * flip, bias)
        torch.testing.assert_close(out[n : n + 1], expected, atol=1e-5, rtol=1e-5)
    # the rows got different sign vectors, hence different outputs from identical inputs
    assert len({tuple(s.tolist()) for s in s_in.reshape(channel_shape[:2])}) > 1
    assert not torch.allclose(out[0], out[1])


@pytest.mark.parametrize("chunk", [4, 3])
@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_small_layers_draw_exact_weights_per_row(kind, chunk):
    layer, op = _layer(kind, path="rows")
    assert layer.mu_w.numel() < Conv2dFlipout.shared_min_elements
    layer.max_draw_elements = chunk * layer.mu_w.numel()  # rows are drawn `chunk` at a time
    rows = 4
    x = _input(kind, rows)
    with torch.no_grad(), mc_sampling(layer, generator=torch.Generator().manual_seed(3), draws="shared"):
        out = layer(x)
    # per chunk of rows: the weight eps of every row, then their bias eps
    g = torch.Generator().manual_seed(3)
    w, b = layer.mu_w.detach(), layer.mu_bias.detach()
    eps_w, eps_b = [], []
    for start in range(0, rows, chunk):
        count = min(chunk, rows - start)
        eps_w.append(torch.empty(count, *w.shape).normal_(generator=g))
        eps_b.append(torch.empty(count, *b.shape).normal_(generator=g))
    eps_w, eps_b = torch.cat(eps_w), torch.cat(eps_b)
    for n in range(rows):
        weight = w + F.softplus(layer.rho_w.detach()) * eps_w[n]
        bias = b + F.softplus(layer.rho_bias.detach()) * eps_b[n]
        torch.testing.assert_close(out[n : n + 1], op(x[n : n + 1], weight, bias), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out[0], out[1])


def _moments(layer, x, draws, passes, seed):
    """Per-row outputs of ``passes`` passes: ``(passes, rows, ...)``."""
    g = torch.Generator().manual_seed(seed)
    rows = x.shape[0]
    outs = []
    with torch.no_grad(), mc_sampling(layer, generator=g, draws=draws, num_draws=rows if draws == "independent" else 1):
        for _ in range(passes):
            outs.append(layer(x))
    return torch.stack(outs)


@pytest.mark.parametrize("path", ["flip", "rows"])
@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_shared_and_independent_rows_have_the_exact_marginal_moments(kind, path):
    """Each row's mean and variance are the weight posterior's, for shared and independent draws alike."""
    layer, op = _layer(kind, path=path)
    rows, passes = 8, 300
    x = _input(kind, rows)
    with torch.no_grad():
        mean = op(x[:1], layer.mu_w, layer.mu_bias)[0]
        # Var(out) = Σ σ_w² x² + σ_b², element by element: op(x², σ_w²) + σ_b²
        var = op(x[:1] ** 2, F.softplus(layer.rho_w) ** 2, F.softplus(layer.rho_bias) ** 2)[0]
    for draws in DRAWS:
        out = _moments(layer, x, draws, passes, seed=4)
        # Per pass, average over the rows; the passes are independent, which gives honest errors.
        per_pass_mean = out.mean(1)
        per_pass_var = ((out - mean) ** 2).mean(1)
        for estimate, truth in ((per_pass_mean, mean), (per_pass_var, var)):
            se = estimate.std(0) / passes**0.5
            z = (estimate.mean(0) - truth).abs() / (se + 1e-6)
            assert z.max() < 5, (draws, z.max())


@pytest.mark.parametrize("path", ["flip", "rows"])
def test_shared_conv_draws_weights_per_row_not_kernels_per_position(path):
    """Pooled over positions, shared draws keep the spread of a weight draw; element-wise signs shrink it."""
    layer, op = _layer("conv", path=path)
    rows, passes = 8, 300
    x = _input("conv", rows)
    sigma_w2, sigma_b2 = F.softplus(layer.rho_w.detach()) ** 2, F.softplus(layer.rho_bias.detach()) ** 2
    with torch.no_grad():
        positions = op(x[:1], layer.mu_w, layer.mu_bias).shape[-2:].numel()
        # A weight draw W: the mean over positions of conv(x, W) has the variance
        # Σ σ² (mean over positions of the shifted input)² + σ_b²; unfold gives the shifted inputs.
        pooled_x = F.unfold(x[:1], layer.kernel_size, padding=1).mean(-1).reshape(layer.mu_w.shape[1:])
        weight_var = (sigma_w2 * pooled_x**2).sum((1, 2, 3)) + sigma_b2
        # Element-wise signs: every position is flipped on its own, so the pooled variance is the
        # mean of the per-position variances divided by the number of positions.
        per_position = op(x[:1] ** 2, sigma_w2, sigma_b2)[0]
        elementwise_var = per_position.mean((1, 2)) / positions
    for draws, truth in (("shared", weight_var), ("independent", elementwise_var)):
        pooled = _moments(layer, x, draws, passes, seed=5).mean((-2, -1))  # (passes, rows, channels)
        mean = op(x[:1], layer.mu_w, layer.mu_bias).mean((-2, -1))[0]
        estimate = ((pooled - mean) ** 2).mean(1)
        se = estimate.std(0) / passes**0.5
        assert ((estimate.mean(0) - truth).abs() / (se + 1e-7)).max() < 5, draws
    assert (weight_var > 2 * elementwise_var).all()  # the two differ by far on this input


@pytest.mark.parametrize("path", ["flip", "rows"])
@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_shared_draws_are_seeded_and_eval_stays_deterministic(kind, path):
    layer, op = _layer(kind, path=path)
    x = _input(kind, 4)

    def run(seed):
        with torch.no_grad(), mc_sampling(layer, generator=torch.Generator().manual_seed(seed), draws="shared"):
            return layer(x), layer(x)

    (a1, a2), (b1, _) = run(7), run(7)
    torch.testing.assert_close(a1, b1)
    assert not torch.allclose(a1, a2)  # a second pass is a new draw
    assert not torch.allclose(a1, run(8)[0])
    assert layer.draws == "independent" and not layer.mc_active  # restored on exit
    with torch.no_grad():
        torch.testing.assert_close(layer(x), op(x, layer.mu_w, layer.mu_bias))


def test_draws_setting_is_validated_and_restored():
    assert DRAWS == ("independent", "shared")
    with pytest.raises(ValueError, match="draws must be one of"):
        check_draws("per-row")
    with pytest.raises(ValueError, match="num_draws=3"):
        check_draws("shared", 3)
    layer = LinearFlipout(3, 2)
    with pytest.raises(ValueError, match="draws must be one of"), mc_sampling(layer, draws="bogus"):
        pass
    model = torch.nn.Sequential(LinearFlipout(3, 3), MCDropout(0.5))
    set_mc_sampling(model, True, draws="shared")
    assert [m.draws for m in (model[0], model[1])] == ["shared", "shared"]
    set_mc_sampling(model, False)
    assert [m.draws for m in (model[0], model[1])] == ["independent", "independent"]


def test_shared_draws_follow_the_input_dtype():
    layer, _ = _layer("linear")
    x = _input("linear", 3).double()
    layer.double()
    with torch.no_grad(), mc_sampling(layer, draws="shared"):
        assert layer(x).dtype == torch.float64
