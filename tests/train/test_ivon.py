import os

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

import vipann
from vipann.calibration import IVONModel, attach_ivon_posterior
from vipann.train import IVON, FitConfig, IVONConfig, fit, iterate_tensors
from vipann.train.state import load_state, save_state

HEAD = ["fc1.weight", "fc1.bias", "fc_audioset.weight", "fc_audioset.bias"]


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).double()


def _problem(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def _train(optimizer, net, x, y, steps, samples, start=0):
    for step in range(start, start + steps):
        index = slice(step % 4 * 16, (step % 4 + 1) * 16)
        for _ in range(samples):
            with optimizer.sampled_params(train=True):
                optimizer.zero_grad()
                nn.functional.cross_entropy(net(x[index]), y[index]).backward()
        optimizer.step()


@pytest.mark.parametrize("hess_approx", ["price", "gradsq"])
def test_same_trajectory_as_ivon_opt(hess_approx):
    ivon = pytest.importorskip("ivon")
    x, y = _problem()
    results = []
    for cls in (ivon.IVON, IVON):
        net = _mlp()
        opt = cls(
            net.parameters(), lr=0.1, ess=64, hess_init=0.5, weight_decay=1e-3, beta2=0.999, hess_approx=hess_approx
        )
        torch.manual_seed(1)  # both draw their noise from torch's global generator, one draw per group
        _train(opt, net, x, y, steps=25, samples=2)
        hess = torch.cat([g["hess"] for g in opt.param_groups]) if cls is ivon.IVON else opt.hessian()[1]
        results.append((torch.cat([p.detach().flatten() for p in net.parameters()]), hess))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(results[1][1], torch.full_like(results[1][1], 0.5))  # it learnt something


def test_resuming_from_a_checkpoint_is_exact(tmp_path):
    x, y = _problem()
    net = _mlp()
    opt = IVON(net.parameters(), lr=0.1, ess=64)
    torch.manual_seed(3)
    _train(opt, net, x, y, steps=10, samples=1)
    straight = torch.cat([p.detach().flatten() for p in net.parameters()])

    net = _mlp()
    opt = IVON(net.parameters(), lr=0.1, ess=64)
    torch.manual_seed(3)
    _train(opt, net, x, y, steps=5, samples=1)
    save_state(tmp_path / "ckpt", {"model": net.state_dict(), "opt": opt.state_dict(), "rng": torch.get_rng_state()})
    state = load_state(tmp_path / "ckpt")
    net = _mlp(seed=9)
    net.load_state_dict(state["model"])
    opt = IVON(net.parameters(), lr=0.1, ess=64)
    opt.load_state_dict(state["opt"])
    torch.set_rng_state(state["rng"])
    assert opt.param_groups[0]["step"] == 5  # the momentum debiasing needs the step count
    _train(opt, net, x, y, steps=5, samples=1, start=5)
    torch.testing.assert_close(torch.cat([p.detach().flatten() for p in net.parameters()]), straight)


def test_posterior_is_one_over_sqrt_ess_times_hessian_plus_delta():
    model = vipann.create_model("det-tiny", num_classes=3)
    params = [p for n, p in model.named_parameters() if n in HEAD]
    opt = IVON(params, lr=0.1, ess=50, weight_decay=1e-2, hess_init=2.0)
    posterior = opt.posterior(model, num_samples=4)
    assert isinstance(posterior, IVONModel) and posterior.method == "ivon" and list(posterior.param_names) == HEAD
    std = posterior.posterior_std()["fc1.weight"]
    torch.testing.assert_close(std, torch.full_like(std, (50 * (2.0 + 1e-2)) ** -0.5))
    with pytest.raises(ValueError, match="not parameters of the network"):
        opt.posterior(vipann.create_model("det-tiny", num_classes=3))


def _head_forward(model, pooled):
    return model.run_stages(pooled, len(model.trunk_names))


def test_fit_with_ivon_learns_a_posterior_that_predict_samples_and_saves(tmp_path):
    torch.manual_seed(0)
    network = vipann.create_model("det-tiny", num_classes=3)
    model = attach_ivon_posterior(network, HEAD, 1.0, ess=1.0, weight_decay=1e-4, num_samples=6)
    g = torch.Generator().manual_seed(0)
    pooled = torch.randn(48, network.embed_dim, generator=g).abs()
    y = (pooled[:, :3].argmax(1)).long()
    params = [p for n, p in network.named_parameters() if n in HEAD]
    history = fit(
        model,
        params,
        iterate_tensors(pooled, y, 16, seed=0),
        FitConfig(epochs=8, lr=0.1, ivon=IVONConfig(hess_init=1.0, train_samples=2)),
        multilabel=False,
        num_train=len(y),
        forward=_head_forward,
        progress=False,
    )
    assert history[-1].loss < history[0].loss
    assert model.ess == 48  # the number of training examples, set by fit
    assert not torch.allclose(model.posterior.hess, torch.ones_like(model.posterior.hess))
    waves = 0.1 * torch.randn(3, 16000, generator=g)
    result = vipann.predict(model, waves, generator=0)
    assert result.probs.shape == (6, 3, 3) and float(result.std.max()) > 0
    with torch.no_grad():
        mean = torch.softmax(network(waves), -1)
    assert float((result.mean - mean).abs().max()) < 0.2  # samples scatter around the trained means
    path = vipann.save_pretrained(model, tmp_path / "ivon")
    loaded = vipann.from_pretrained(f"local-dir:{path}")
    assert isinstance(loaded, IVONModel) and loaded.ess == 48
    torch.testing.assert_close(vipann.predict(loaded, waves, generator=0).probs, result.probs)


def _ddp_worker(rank, world, path, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=world)
    try:
        x, y = _problem(seed=rank)  # every process its own shard
        net = _mlp()
        opt = IVON(net.parameters(), lr=0.1, ess=128, sync=True)
        torch.manual_seed(100 + rank)  # every process its own weight samples
        _train(opt, net, x, y, steps=6, samples=1)
        weights = torch.cat([p.detach().flatten() for p in net.parameters()])
        torch.save((weights, opt.hessian()[1]), f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_under_torchrun_each_rank_samples_and_the_statistics_are_averaged(tmp_path):
    ctx = mp.get_context("spawn")
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, str(tmp_path / "pg"), str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    results = {r: torch.load(tmp_path / f"rank{r}.pt") for r in range(2)}
    torch.testing.assert_close(results[0][0], results[1][0])  # the same means on every rank
    # The same as one process whose two samples per step are the ranks' (their data, their noise).
    shards = [_problem(seed=r) for r in range(2)]
    states = []
    for r in range(2):
        torch.manual_seed(100 + r)
        states.append(torch.get_rng_state())
    net = _mlp()
    opt = IVON(net.parameters(), lr=0.1, ess=128)
    for step in range(6):
        index = slice(step % 4 * 16, (step % 4 + 1) * 16)
        for r, (x, y) in enumerate(shards):
            torch.set_rng_state(states[r])
            with opt.sampled_params(train=True):
                opt.zero_grad()
                nn.functional.cross_entropy(net(x[index]), y[index]).backward()
            states[r] = torch.get_rng_state()
        opt.step()
    torch.testing.assert_close(results[0][0], torch.cat([p.detach().flatten() for p in net.parameters()]))
    torch.testing.assert_close(results[0][1], opt.hessian()[1])
