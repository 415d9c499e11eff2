import copy
import math
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import vipann
from vipann.calibration import LaplaceModel, fit_laplace, fit_laplace_features
from vipann.zoo.checkpoint import CheckpointError


def _network(num_classes=4, multilabel=False, seed=0):
    torch.manual_seed(seed)
    model = vipann.create_model("det-tiny", num_classes=num_classes).double().eval()
    model.pretrained_cfg = model.pretrained_cfg.__class__(**{**model.pretrained_cfg.__dict__, "multilabel": multilabel})
    return model


def _data(n=40, num_classes=4, multilabel=False, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = 0.1 * torch.randn(n, 16000, generator=g, dtype=torch.float64)
    if multilabel:
        y = (torch.rand(n, num_classes, generator=g) < 0.3).double()
    else:
        y = torch.randint(0, num_classes, (n,), generator=g)
    return x, y


@pytest.fixture(scope="module")
def softmax_problem():
    model = _network()
    x, y = _data()
    with torch.no_grad():
        pooled = model.pooled(x)
    return model, x, y, pooled


@pytest.mark.parametrize("subset", ["last_layer", "head"])
@pytest.mark.parametrize("hessian", ["diag", "kron"])
def test_softmax_fit_equals_laplace_torch(softmax_problem, subset, hessian):
    laplace_torch = pytest.importorskip("laplace")
    model, _, y, pooled = softmax_problem
    # laplace-torch on the same head (fc1 -> ReLU -> classifier) and the same pooled embeddings; its
    # "all" weights of this MLP are vipann's "head" subset.
    mlp = nn.Sequential(copy.deepcopy(model.fc1), nn.ReLU(), copy.deepcopy(model.fc_audioset)).double()
    loader = DataLoader(TensorDataset(pooled, y), batch_size=16)  # several batches: the K-FAC sums must agree
    reference = laplace_torch.Laplace(
        mlp,
        "classification",
        subset_of_weights="last_layer" if subset == "last_layer" else "all",
        hessian_structure=hessian,
        prior_precision=1.0,
    )
    reference.fit(loader)
    ours = fit_laplace_features(model, pooled, y, subset=subset, hessian=hessian, prior_precision=1.0)
    assert ours.likelihood == "categorical"  # from the model's metadata
    f_ref, cov_ref = reference._glm_predictive_distribution(pooled[:6])
    f, cov = ours.predictive_from_pooled(pooled[:6])
    torch.testing.assert_close(f, f_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(cov, cov_ref, rtol=1e-8, atol=1e-10)
    for lam in (0.1, 1.0, 7.0):
        expected = float(reference.log_marginal_likelihood(torch.tensor(lam, dtype=torch.float64)))
        assert float(ours.log_marginal_likelihood(lam)) == pytest.approx(expected, rel=1e-9)
    with pytest.warns(UserWarning):  # laplace-torch warns about its link approximation
        reference.optimize_prior_precision(
            pred_type="glm", method="marglik", n_steps=600, lr=0.1, prior_structure="scalar"
        )
    assert ours.optimize_prior_precision() == pytest.approx(float(reference.prior_precision), rel=1e-3)


def test_bernoulli_diag_ggn_equals_the_direct_sum():
    model = _network(num_classes=3, multilabel=True)
    x, y = _data(n=12, num_classes=3, multilabel=True)
    lam = 0.7
    laplace = fit_laplace(model, (x, y), subset="last_layer", hessian="diag", prior_precision=lam, batch_size=5)
    assert laplace.likelihood == "bernoulli" and laplace.num_data == 12
    with torch.no_grad():
        phi = model.act_fc1(model.fc1(model.pooled(x)))
        p = torch.sigmoid(model.fc_audioset(phi))
    block = laplace.blocks()["fc_audioset"]
    classes, width = model.fc_audioset.weight.shape
    for c in range(classes):
        for j in range(width):
            direct = sum(float(p[n, c] * (1 - p[n, c]) * phi[n, j] ** 2) for n in range(len(x))) + lam
            assert float(block.ggn_weight[c, j]) + lam == pytest.approx(direct, rel=1e-10, abs=1e-12)
        assert float(block.ggn_bias[c]) + lam == pytest.approx(float((p[:, c] * (1 - p[:, c])).sum()) + lam, rel=1e-10)
    # The evidence is the Laplace formula on those numbers.
    weights = torch.cat([model.fc_audioset.weight.flatten(), model.fc_audioset.bias]).detach()
    h = torch.cat([block.ggn_weight.flatten(), block.ggn_bias])
    with torch.no_grad():
        nll = float(nn.functional.binary_cross_entropy_with_logits(model.fc_audioset(phi), y, reduction="sum"))
    direct = -nll - 0.5 * (float(torch.log(h + lam).sum()) - h.numel() * math.log(lam) + lam * float(weights @ weights))
    assert float(laplace.log_marginal_likelihood()) == pytest.approx(direct, rel=1e-10)


@pytest.mark.parametrize("hessian", ["diag", "kron"])
def test_marglik_prior_precision_is_the_grid_maximum(hessian):
    model = _network(num_classes=5, multilabel=True)
    x, y = _data(n=30, num_classes=5, multilabel=True)
    laplace = fit_laplace(model, (x, y), subset="head", hessian=hessian)
    grid = torch.logspace(-4, 4, 4001, dtype=torch.float64)
    values = laplace.log_marginal_likelihood(grid)
    best = float(grid[values.argmax()])
    step = float(grid[1] / grid[0])
    assert best / step <= laplace.prior_precision <= best * step
    assert float(laplace.log_marginal_likelihood()) >= float(values.max()) - 1e-9


def test_huge_prior_precision_collapses_to_the_deterministic_prediction():
    model = _network(num_classes=4, multilabel=True)
    x, y = _data(n=16, num_classes=4, multilabel=True)
    laplace = fit_laplace(model, (x, y), subset="head", hessian="kron", prior_precision=1e14)
    result = vipann.predict(laplace, x[:5], num_samples=20, generator=0)
    with torch.no_grad():
        expected = torch.sigmoid(model(x[:5]))
    torch.testing.assert_close(result.probs, expected[None].expand_as(result.probs), rtol=0, atol=1e-6)
    assert float(result.epistemic.max()) < 1e-9
    # A moderate prior does move the samples: the check above could fail.
    laplace.prior_precision = 1.0
    assert float(vipann.predict(laplace, x[:5], num_samples=20, generator=0).std.max()) > 1e-3


@pytest.mark.parametrize("likelihood", ["bernoulli", "categorical"])
def test_more_training_data_shrinks_the_epistemic_uncertainty(likelihood):
    model = _network(num_classes=4, multilabel=likelihood == "bernoulli")
    g = torch.Generator().manual_seed(3)
    pooled = torch.randn(2000, model.embed_dim, generator=g, dtype=torch.float64).abs()
    targets = (
        (torch.rand(2000, 4, generator=g) < 0.3).double()
        if likelihood == "bernoulli"
        else torch.randint(0, 4, (2000,), generator=g)
    )
    test = pooled[:50]
    # A softmax does not see a shift of all logits: measure the variance of the centred logits.
    centre = torch.eye(4, dtype=torch.float64) - (0 if likelihood == "bernoulli" else 0.25)
    variances = []
    for n in (20, 200, 2000):
        laplace = fit_laplace_features(model, pooled[:n], targets[:n], subset="last_layer", prior_precision=1.0)
        _, cov = laplace.predictive_from_pooled(test)
        variances.append(float(torch.diagonal(centre @ cov @ centre, dim1=1, dim2=2).mean()))
    assert variances[0] > 2 * variances[1] > 4 * variances[2]


def test_samples_are_independent_per_clip_and_follow_the_closed_form():
    model = _network(num_classes=3)
    x, y = _data(n=20, num_classes=3)
    laplace = fit_laplace(model, (x, y), subset="head", hessian="kron", prior_precision=0.5)
    twins = torch.stack([x[0], x[0]])
    logits = laplace.mc_sampler(4000, generator=torch.Generator().manual_seed(0))(twins)
    assert logits.shape == (4000, 2, 3)
    assert not torch.allclose(logits[:, 0], logits[:, 1])  # one draw per clip, not per batch
    f, cov = laplace.predictive_distribution(twins[:1])
    torch.testing.assert_close(logits[:, 0].mean(0), f[0], atol=4 * float(cov[0].diagonal().max().sqrt()) / 60, rtol=0)
    empirical = torch.cov(logits[:, 0].T)
    torch.testing.assert_close(empirical, cov[0], atol=0.08 * float(cov[0].diagonal().max()), rtol=0)
    corr = torch.corrcoef(torch.cat([logits[:, 0], logits[:, 1]], 1).T)[:3, 3:]
    assert float(corr.abs().max()) < 0.1


def test_dataloader_and_pair_give_the_same_fit():
    model = _network(num_classes=4)
    x, y = _data(n=18, num_classes=4)
    a = fit_laplace(model, (x, y), hessian="kron")
    b = fit_laplace(model, DataLoader(TensorDataset(x, y), batch_size=7), hessian="kron")
    assert a.prior_precision == pytest.approx(b.prior_precision, rel=1e-9)
    for name, block in a.blocks().items():
        torch.testing.assert_close(block.a_eigvals, b.blocks()[name].a_eigvals)


def test_save_and_load_round_trip(tmp_path):
    model = _network(num_classes=4, multilabel=True).float()
    x, y = _data(n=16, num_classes=4, multilabel=True)
    laplace = fit_laplace(model, (x.float(), y.float()), subset="head", hessian="kron", num_samples=7)
    assert laplace.method == "laplace" and isinstance(laplace, vipann.inference.sampler.MonteCarloModel)
    path = vipann.save_pretrained(laplace, tmp_path / "laplace")
    config = vipann.zoo.serialization.verify_pretrained_dir(path)
    assert config["head"]["type"] == "laplace" and config["method"] == "det"
    loaded = vipann.from_pretrained(f"local-dir:{path}")
    assert isinstance(loaded, LaplaceModel) and loaded.method == "laplace"
    assert loaded.prior_precision == laplace.prior_precision and loaded.pretrained_cfg.default_num_samples == 7
    assert not hasattr(loaded.network, "laplace")  # the posterior lives on the wrapper only
    a = vipann.predict(laplace, x[:3].float(), generator=5)
    b = vipann.predict(loaded, x[:3].float(), generator=5)
    assert a.probs.shape[0] == 7
    torch.testing.assert_close(a.probs, b.probs)
    with pytest.raises(CheckpointError, match="Laplace posterior belongs"):
        vipann.load_pretrained_dir(path, num_classes=6)
    # the model it wraps is unchanged and still saves as a plain det model
    assert getattr(model, "head_config", None) is None


def test_refuses_models_it_cannot_handle():
    x, y = _data(n=4, num_classes=10)
    with pytest.raises(TypeError, match="already Bayesian"):
        fit_laplace(vipann.create_model("flip-tiny"), (x.float(), y))
    with pytest.raises(ValueError, match="multi-hot"):
        fit_laplace(_network(num_classes=10), (x, y), likelihood="bernoulli")
    with pytest.raises(ValueError, match="unknown subset"):
        fit_laplace(_network(num_classes=10), (x, y), subset="all")
    with pytest.raises(TypeError, match="DataLoader"):
        fit_laplace(_network(num_classes=10), 3)


def test_audioset_size_kron_fits_in_a_few_hundred_megabytes():
    # 527 classes x 2048-wide embedding: a dense GGN would have (527 * 2049)^2 ~ 1.2e12 entries.
    script = textwrap.dedent(
        """
        import resource, torch
        from torch import nn
        import vipann
        from vipann.calibration import fit_laplace_features
        torch.set_num_threads(2)
        model = vipann.create_model("det-tiny", num_classes=527).eval()
        model.fc1, model.fc_audioset, model.embed_dim = nn.Linear(2048, 2048), nn.Linear(2048, 527), 2048
        g = torch.Generator().manual_seed(0)
        pooled = torch.randn(256, 2048, generator=g).relu()
        targets = (torch.rand(256, 527, generator=g) < 0.01).float()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        laplace = fit_laplace_features(model, pooled, targets, subset="last_layer", hessian="kron", batch_size=64)
        probs = laplace.sample_from_pooled(pooled[:2], 30, torch.Generator().manual_seed(0))
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) * 1024, laplace.posterior_bytes(), tuple(probs.shape))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=True)
    peak, posterior, shape = out.stdout.strip().split(" ", 2)
    assert shape == "(30, 2, 527)"
    assert int(posterior) < 25e6  # two eigendecompositions: 2048^2 + 527^2 floats and their eigenvalues
    assert int(peak) < 400e6, f"the fit raised the peak memory by {int(peak) / 1e6:.0f} MB"
