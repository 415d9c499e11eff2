import pytest
import torch

import vipann
from vipann.layers import FlipoutLayer, MCDropout, mc_sampling
from vipann.models import ARCHITECTURES, METHODS, PANN


def _wave(model, seconds=1.0, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, int(seconds * model.sample_rate), generator=g)


@pytest.mark.parametrize("method", METHODS)
def test_tiny_forward_backward(method):
    torch.manual_seed(0)
    model = vipann.create_model(f"{method}-tiny")
    x = _wave(model)
    logits = model(x)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    loss = logits.logsumexp(-1).mean() + vipann.layers.kl_loss(model) * 1e-3
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert model.embed(x).shape == (2, 16)


@pytest.mark.parametrize("method", METHODS)
def test_eval_is_deterministic_and_sampling_is_opt_in(method):
    torch.manual_seed(0)
    model = vipann.create_model(f"{method}-tiny").eval()
    x = _wave(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))
        with mc_sampling(model):
            a, b = model(x), model(x)
    if method == "det":
        torch.testing.assert_close(a, b)  # nothing to sample
    else:
        assert not torch.allclose(a, b)


def test_method_layers():
    det = vipann.create_model("det-tiny")
    drop = vipann.create_model("drop-tiny")
    flip = vipann.create_model("flip-tiny")
    detflip = vipann.create_model("detflip-tiny")
    assert not any(isinstance(m, (MCDropout, FlipoutLayer)) for m in det.modules())
    # drop: MC sites after each conv block and before fc1 / classifier
    assert [n for n, m in drop.named_modules() if isinstance(m, MCDropout)] == [
        "dropout1",
        "dropout2",
        "dropout_fc1",
        "dropout_head",
    ]
    assert set(det.state_dict()) == set(drop.state_dict())
    flip_layers = [n for n, m in flip.named_modules() if isinstance(m, FlipoutLayer)]
    assert flip_layers == [
        "conv_block1.conv1",
        "conv_block1.conv2",
        "conv_block2.conv1",
        "conv_block2.conv2",
        "fc1",
        "fc_audioset",
    ]
    assert [n for n, m in detflip.named_modules() if isinstance(m, FlipoutLayer)] == ["fc1", "fc_audioset"]
    # BatchNorm and the front end are never Bayesian
    assert isinstance(flip.bn0, torch.nn.BatchNorm2d)
    assert isinstance(flip.conv_block1.bn1, torch.nn.BatchNorm2d)


def test_residual_block_dropout_stays_training_only():
    model = PANN("resnet22", "drop", 10)
    inner = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Dropout)]
    assert inner and all(n.startswith("resnet.layer") for n in inner)
    assert [n for n, m in model.named_modules() if isinstance(m, MCDropout)] == [
        "dropout1",
        "dropout2",
        "dropout3",
        "dropout_fc1",
        "dropout_head",
    ]


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_builds_on_meta(arch):
    with torch.device("meta"):
        for method in METHODS:
            model = PANN(arch, method, 7)
            assert model.fc_audioset is not None


def test_stages_compose_to_forward():
    torch.manual_seed(0)
    model = vipann.create_model("drop-tiny").eval()
    x = _wave(model)
    z = model.normalize(model.logmel(x))
    k = model.first_stochastic_stage()
    assert model.stage_names[k] == "dropout1"
    mid = model.run_stages(z, 0, k)
    torch.testing.assert_close(model.run_stages(mid, k), model(x))
    assert vipann.create_model("det-tiny").first_stochastic_stage() == len(model.stage_names)
    assert (
        vipann.create_model("detflip-tiny").stage_names[vipann.create_model("detflip-tiny").first_stochastic_stage()]
        == "fc1"
    )


def test_config_rebuilds_the_same_network():
    model = vipann.create_model("flip-tiny", num_classes=3, conv_dropout=0.3)
    cfg = model.config()
    rebuilt = PANN(cfg.pop("arch"), cfg.pop("method"), cfg.pop("num_classes"), **cfg)
    assert set(rebuilt.state_dict()) == set(model.state_dict())
    assert rebuilt.model_args["conv_dropout"] == 0.3


# Table 1 of the VI-PANN paper: trainable parameters of ResNet54 (REFERENCE §3).
TABLE1 = {
    (50, "drop"): 103_340_786,
    (50, "detflip"): 107_639_588,
    (50, "flip"): 206_620_004,
    (10, "drop"): 103_258_826,
    (10, "detflip"): 107_475_668,
    (10, "flip"): 206_456_084,
}


@pytest.mark.parametrize(("classes", "method"), sorted(TABLE1))
def test_table1_parameter_counts(classes, method):
    model = vipann.create_model(f"{method}-resnet54", num_classes=classes, device="meta")
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == TABLE1[classes, method]
    if method == "drop":
        det = vipann.create_model("det-resnet54", num_classes=classes, device="meta")
        assert sum(p.numel() for p in det.parameters()) == TABLE1[classes, method]


def test_front_end_tensors_are_not_parameters_or_state():
    model = vipann.create_model("det-resnet54", device="meta")
    assert not any(k.startswith("frontend.") for k in model.state_dict())
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        (torch.zeros(16000, dtype=torch.int16)[None], TypeError, "int16"),
        (torch.zeros(16000), ValueError, "unsqueeze"),
        (torch.zeros(1, 1, 16000), ValueError, r"\(batch, samples\)"),
        ([0.0] * 16000, TypeError, "torch.Tensor"),
    ],
)
def test_bad_waveforms(bad, error, match):
    model = vipann.create_model("det-tiny").eval()
    with pytest.raises(error, match=match):
        model(bad)


def test_sample_rate_mismatch_and_short_clip():
    model = vipann.create_model("det-tiny").eval()
    with pytest.raises(ValueError, match="16000 Hz"):
        model(torch.zeros(1, 32000), sample_rate=32000)
    model(torch.zeros(1, 16000), sample_rate=16000)
    with pytest.raises(ValueError, match="samples"):
        model(torch.zeros(1, 10))


def test_unknown_method_and_arch():
    with pytest.raises(ValueError, match=r"unknown method 'mc'.*det, drop, flip, detflip"):
        PANN("tiny", "mc")
    with pytest.raises(ValueError, match="unknown architecture 'resnet50'"):
        PANN("resnet50")
    with pytest.raises(ValueError, match="num_classes"):
        PANN("tiny", num_classes=0)


def test_mixup_and_specaugment_only_in_training():
    torch.manual_seed(0)
    model = vipann.create_model("det-tiny")
    x = _wave(model, batch=4)
    lam = torch.tensor([0.3, 0.7, 0.5, 0.5])
    assert model.train()(x, lam).shape == (2, 10)
    assert model.eval()(x, lam).shape == (4, 10)
