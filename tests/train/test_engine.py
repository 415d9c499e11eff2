import pytest
import torch

import vipann
from vipann.train import FitConfig, LossConfig, elbo_loss, fit, focal_loss, iterate_tensors, shuffled_batches
from vipann.train.state import capture_rng_state, load_state, restore_rng_state, save_state


def _head_data(n=40, d=16, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return x, y


def _model(method="flip"):
    torch.manual_seed(0)
    return vipann.create_model(f"{method}-tiny", num_classes=3)


def _head_forward(model, x):
    n = len(model.trunk_names)
    return model.run_stages(x, n)


@pytest.mark.parametrize("method", ["det", "flip"])
def test_fit_learns_and_resume_equals_uninterrupted(tmp_path, method):
    x, y = _head_data()
    config = FitConfig(epochs=6, lr=1e-2, seed=3, desc="head")

    def run(ckpt, epochs_first=None):
        model = _model(method)
        if epochs_first is not None:  # an interrupted run: stop after a few epochs ...
            cut = FitConfig(**{**config.__dict__, "epochs": config.epochs})
            with pytest.raises(KeyboardInterrupt):
                fit(
                    model,
                    model.parameters(),
                    iterate_tensors(x, y, 8, seed=3),
                    cut,
                    multilabel=False,
                    num_train=len(x),
                    forward=_head_forward,
                    checkpoint_dir=ckpt,
                    progress=False,
                    on_epoch_end=lambda r: (
                        (_ for _ in ()).throw(KeyboardInterrupt) if r.epoch == epochs_first else None
                    ),
                )
            model = _model(method)  # ... and a fresh process resumes
        history = fit(
            model,
            model.parameters(),
            iterate_tensors(x, y, 8, seed=3),
            config,
            multilabel=False,
            num_train=len(x),
            forward=_head_forward,
            checkpoint_dir=ckpt,
            resume=True,
            progress=False,
        )
        return model, history

    full, h_full = run(tmp_path / "a")
    resumed, h_res = run(tmp_path / "b", epochs_first=2)
    assert [h.epoch for h in h_res] == list(range(1, 7))
    assert h_full[-1].loss < h_full[0].loss
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert [round(h.loss, 6) for h in h_full] == [round(h.loss, 6) for h in h_res]


def test_resume_refuses_a_different_stage(tmp_path):
    x, y = _head_data()
    model = _model("det")
    fit(
        model,
        model.parameters(),
        iterate_tensors(x, y, 8, 0),
        FitConfig(epochs=1),
        multilabel=False,
        num_train=40,
        forward=_head_forward,
        checkpoint_dir=tmp_path,
        progress=False,
    )
    with pytest.raises(ValueError, match="different stage"):
        fit(
            model,
            model.parameters(),
            iterate_tensors(x, y, 8, 0),
            FitConfig(epochs=5, lr=0.5),
            multilabel=False,
            num_train=40,
            forward=_head_forward,
            checkpoint_dir=tmp_path,
            resume=True,
            progress=False,
        )


def test_elbo_terms():
    model = _model("flip")
    logits = torch.randn(4, 3)
    targets = torch.tensor([0, 1, 2, 1])
    loss, data, kl = elbo_loss(logits, targets, model, 100, multilabel=False)
    torch.testing.assert_close(data, torch.nn.functional.cross_entropy(logits, targets))
    torch.testing.assert_close(kl, vipann.layers.kl_loss(model) / 100)
    torch.testing.assert_close(loss, data + kl)
    _, _, kl_sum = elbo_loss(logits, targets, model, 100, multilabel=False, config=LossConfig(kl_reduction="sum"))
    assert kl_sum > kl
    _, _, kl_det = elbo_loss(logits, targets, _model("det"), 100, multilabel=False)
    assert kl_det.item() == 0.0
    with pytest.raises(ValueError, match="num_train"):
        elbo_loss(logits, targets, model, 0, multilabel=False)


def test_focal_loss_reduces_to_cross_entropy():
    logits = torch.randn(6, 4)
    targets = torch.tensor([0, 1, 2, 3, 0, 1])
    torch.testing.assert_close(
        focal_loss(logits, targets, multilabel=False, gamma=0.0, alpha=None),
        torch.nn.functional.cross_entropy(logits, targets),
    )
    multi = (torch.rand(6, 4) > 0.5).float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, multi, reduction="none").sum(-1).mean()
    torch.testing.assert_close(focal_loss(logits, multi, multilabel=True, gamma=0.0, alpha=None), bce)
    # focusing down-weights easy examples
    easy = torch.tensor([[5.0, -5.0]])
    assert focal_loss(
        easy, torch.tensor([0]), multilabel=False, gamma=2.0, alpha=None
    ) < torch.nn.functional.cross_entropy(easy, torch.tensor([0]))


def test_shuffled_batches_cover_and_split_across_ranks():
    one = torch.cat(shuffled_batches(10, 3, seed=1, epoch=0))
    assert sorted(one.tolist()) == list(range(10))
    assert not torch.equal(one, torch.cat(shuffled_batches(10, 3, seed=1, epoch=1)))
    ranks = [torch.cat(shuffled_batches(11, 4, 1, 0, rank=r, world=2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 6
    assert set(ranks[0].tolist()) | set(ranks[1].tolist()) == set(range(11))


def test_state_roundtrip_and_atomicity(tmp_path):
    model = _model("flip")
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 16000)).sum().backward()
    opt.step()
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "rng": capture_rng_state(),
        "tuple": (1, 2.5, "x"),
        "none": None,
    }
    save_state(tmp_path / "ckpt", state)
    loaded = load_state(tmp_path / "ckpt")
    assert loaded["tuple"] == (1, 2.5, "x") and loaded["none"] is None
    opt2 = torch.optim.Adam(model.parameters())
    opt2.load_state_dict(loaded["optimizer"])
    assert opt2.state_dict()["state"][0]["exp_avg"].shape == opt.state_dict()["state"][0]["exp_avg"].shape
    a = torch.rand(3)
    restore_rng_state(loaded["rng"])
    torch.testing.assert_close(torch.rand(3), a)
    # a failing write leaves the previous checkpoint intact and no temporary directory
    with pytest.raises(TypeError, match="cannot store"):
        save_state(tmp_path / "ckpt", {"bad": object()})
    assert load_state(tmp_path / "ckpt")["tuple"] == (1, 2.5, "x")
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    with pytest.raises(FileNotFoundError, match="no complete training checkpoint"):
        load_state(tmp_path / "missing")


def test_fit_keeps_the_sngp_precision_of_the_last_epoch_only():
    from vipann.calibration import attach_sngp_head

    x, y = _head_data(n=24)
    model = attach_sngp_head(_model("det"), num_features=32)
    gp = model.fc_audioset
    inputs: list[list[torch.Tensor]] = [[]]  # the GP layer's training inputs, one list per epoch
    gp.register_forward_pre_hook(lambda m, args: inputs[-1].append(args[0].detach().clone()) if m.training else None)
    history = fit(
        model,
        model.parameters(),
        iterate_tensors(x, y, 8, seed=0),
        FitConfig(epochs=3, lr=1e-2),
        multilabel=False,
        num_train=len(x),
        forward=_head_forward,
        progress=False,
        on_epoch_end=lambda r: inputs.append([]),
    )
    assert len(history) == 3 and len(inputs) == 4 and inputs[-1] == []
    last = torch.cat(inputs[2]).double()  # the GP inputs of the third (last) epoch
    phi = gp.features(last)
    expected = gp.ridge * torch.eye(32, dtype=torch.float64) + phi.T @ phi
    torch.testing.assert_close(gp.precision.double(), expected, rtol=1e-4, atol=1e-4)
    # Without the per-epoch reset the first two epochs would be in it too.
    every = torch.cat([torch.cat(i) for i in inputs[:2]]).double()
    assert not torch.allclose(gp.precision.double(), expected + gp.features(every).T @ gp.features(every), atol=1e-3)


def test_ddp_wrap_does_not_broadcast_the_sngp_precision(tmp_path):
    import torch.distributed as dist

    from vipann.calibration import attach_sngp_head
    from vipann.train import DistContext, ddp_wrap

    model = attach_sngp_head(_model("det"), num_features=8)
    assert ddp_wrap(DistContext(), model) is model  # a world of one: unchanged
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        wrapped = ddp_wrap(DistContext(rank=0, world_size=2), model)
        assert isinstance(wrapped, torch.nn.parallel.DistributedDataParallel)
        assert model._ddp_params_and_buffers_to_ignore == ["fc_audioset.precision"]
        buffers = [id(b) for b in wrapped.modules_buffers]
        assert id(model.fc_audioset.precision) not in buffers and id(model.bn0.running_mean) in buffers
    finally:
        dist.destroy_process_group()
