"""The EfficientAT family in four methods: structure, sampling semantics, front end, MACs."""

import functools

import pytest
import torch
from _golden_efficientat import synthetic_state_dict
from torch import nn

import vipann
from vipann.inference.sampler import sample_logits
from vipann.layers import (
    Conv2dFlipout,
    FlipoutLayer,
    LinearFlipout,
    MCDropout,
    StochasticModule,
    flipout_layers,
    kl_loss,
    mc_sampling,
    stochastic_modules,
)
from vipann.models.efficientat import ARCHITECTURES, EfficientAT, EfficientATFrontendConfig, KaldiLogMelFrontend
from vipann.models.efficientat.dynamic import DynamicConv, DynamicConvFlipout
from vipann.models.profile import count_macs
from vipann.zoo.convert import from_efficientat_checkpoint

WAVE = 0.1 * torch.randn(2, 8000, generator=torch.Generator().manual_seed(3))


@functools.cache
def _weights(arch):
    return synthetic_state_dict(arch)


@functools.cache
def _converted(arch, method):
    return from_efficientat_checkpoint(_weights(arch), f"{method}-{arch}").eval()


@pytest.fixture(scope="module", params=["mn04", "dymn10"])
def weights(request):
    return request.param


def _model(arch, method):
    return _converted(arch, method)


def test_embedding_and_hidden_widths():
    widths = {arch: (spec.embed_dim, spec.hidden_dim) for arch, spec in ARCHITECTURES.items()}
    assert widths == {"mn04": (384, 512), "mn10": (960, 1280), "mn20": (1920, 2560), "dymn10": (960, 1280)}
    with torch.device("meta"):
        model = EfficientAT("mn20", "drop", 10)
    assert model.fc1.in_features == model.embed_dim == 1920 and model.fc_audioset.out_features == 10


def test_unknown_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown architecture 'mn30'"):
        EfficientAT("mn30")
    with pytest.raises(ValueError, match="unknown method"):
        EfficientAT("mn04", "bayes")
    with pytest.raises(ValueError, match="head_dropout must be in"):
        EfficientAT("mn04", head_dropout=1.0)
    with pytest.raises(ValueError, match="dyconv_temperature"):
        EfficientAT("dymn10", dyconv_temperature=0)


def test_det_has_no_stochastic_module_and_drop_only_the_classifier_site(weights):
    det, drop = _model(weights, "det"), _model(weights, "drop")
    assert list(stochastic_modules(det)) == []
    sites = [name for name, m in drop.named_modules() if isinstance(m, StochasticModule)]
    assert sites == ["dropout_head"] and drop.dropout_head.p == 0.2
    assert drop.stage_names[drop.first_stochastic_stage()] == "dropout_head"
    assert isinstance(det.dropout_head, nn.Dropout) and det.dropout_head.p == 0.2  # training-only, as EfficientAT


def test_optional_backbone_dropout_sites_follow_the_resolution_stages():
    model = EfficientAT("mn04", "drop", 5, conv_dropout=0.1, fc_dropout=0.3)
    trunk = list(model.trunk_names)
    for site, after in zip(
        ("dropout1", "dropout2", "dropout3", "dropout4"), ("features.3", "features.6", "features.12", "features.15")
    ):
        assert trunk.index(site) == trunk.index(after) + 1
        assert isinstance(getattr(model, site), MCDropout) and getattr(model, site).p == 0.1
    assert isinstance(model.dropout_fc1, MCDropout) and model.dropout_fc1.p == 0.3
    dymn = EfficientAT("dymn10", "det", 5, conv_dropout=0.1)
    assert dymn.trunk_names.index("dropout1") == dymn.trunk_names.index("layers.2") + 1
    assert isinstance(dymn.dropout1, nn.Dropout) and not isinstance(dymn.dropout1, StochasticModule)


def test_flip_makes_every_weight_layer_flipout(weights):
    det, flip = _model(weights, "det"), _model(weights, "flip")
    weight_layers = (nn.Conv2d, nn.Linear, DynamicConv)
    det_layers = {n: m for n, m in det.named_modules() if isinstance(m, weight_layers)}
    flip_layers = dict(flipout_layers(flip))
    assert set(flip_layers) == set(det_layers)
    assert not any(isinstance(m, weight_layers) for m in flip.modules())
    for name, layer in det_layers.items():
        counterpart = flip_layers[name]
        if isinstance(layer, nn.Conv2d):  # depthwise and 1x1 keep their geometry
            assert isinstance(counterpart, Conv2dFlipout) and counterpart.groups == layer.groups
            assert counterpart.kernel_size == layer.kernel_size and counterpart.stride == layer.stride
        elif isinstance(layer, DynamicConv):
            assert isinstance(counterpart, DynamicConvFlipout) and counterpart.groups == layer.groups
            assert counterpart.mu_w.shape == layer.weight.shape
        else:
            assert isinstance(counterpart, LinearFlipout)
    depthwise = [m for m in flip.modules() if getattr(m, "groups", 1) > 1]
    assert depthwise, "depthwise convolutions are Flipout too"
    if weights == "mn04":  # squeeze-excitation is Bayesian in flip
        assert isinstance(flip.features[4].block[2].conc_se_layers[0].fc1, LinearFlipout)
    else:
        block = flip.layers[3]
        assert isinstance(block.depth_conv.residuals[0], LinearFlipout)
        assert isinstance(block.depth_act.coef_net[0], LinearFlipout)
        assert isinstance(block.context_gen.conv_f, Conv2dFlipout)
    assert flip.first_stochastic_stage() == 0
    assert float(kl_loss(flip).detach()) > 0


def test_detflip_samples_the_head_only(weights):
    detflip = _model(weights, "detflip")
    assert sorted(name for name, _ in flipout_layers(detflip)) == ["fc1", "fc_audioset"]
    assert detflip.stage_names[detflip.first_stochastic_stage()] == "fc1"


@pytest.mark.parametrize(
    ("arch", "method"), [("mn04", "det"), ("mn04", "drop"), ("mn04", "flip"), ("mn04", "detflip"), ("dymn10", "flip")]
)
def test_eval_is_deterministic_and_sampling_is_switched_on_explicitly(arch, method):
    model = _model(arch, method)
    with torch.no_grad():
        a, b = model(WAVE), model(WAVE)
        assert torch.equal(a, b)
        with mc_sampling(model, generator=torch.Generator().manual_seed(0)):
            c, d = model(WAVE), model(WAVE)
    assert torch.equal(a, b)
    if method == "det":
        assert torch.equal(c, a) and torch.equal(d, a)
    else:
        assert not torch.allclose(c, d), f"{method} does not sample under mc_sampling"


@pytest.mark.parametrize("method", ["drop", "detflip", "flip"])
def test_prefix_is_shared_and_draws_are_reproducible(method):
    model = _model("mn04", method)
    calls = []
    stem = model.features[0] if model.kind == "mn" else model.in_c
    handle = stem.register_forward_hook(lambda *_: calls.append(1))
    try:
        first = sample_logits(model, WAVE, 6, torch.Generator().manual_seed(1), max_rows=4)
        again = sample_logits(model, WAVE, 6, torch.Generator().manual_seed(1), max_rows=4)
    finally:
        handle.remove()
    assert first.shape == (6, 2, 527) and torch.equal(first, again)
    assert (first - first.mean(0)).abs().amax() > 0  # the samples differ
    # drop/detflip: the backbone runs once per call; flip: once per chunk of 2 samples x 2 clips
    assert len(calls) == (2 if method != "flip" else 2 * 3)
    pred = vipann.predict(model, WAVE, num_samples=6, generator=0, window_seconds=WAVE.shape[1] / 32000)
    assert pred.probs.shape == (6, 2, 527) and float(pred.epistemic.min()) > 0


def test_dynamic_flipout_draws_one_perturbation_per_group():
    arch, sd = "dymn10", synthetic_state_dict("dymn10")
    model = from_efficientat_checkpoint(sd, f"flip-{arch}").eval()
    block = model.layers[1]
    conv = block.exp_conv
    assert isinstance(conv, DynamicConvFlipout) and isinstance(conv, FlipoutLayer)
    x = torch.randn(1, block.exp_conv.in_channels, 8, 20)
    context = block.context_gen(x)
    twice = torch.cat([x, x])
    both = tuple(torch.cat([c, c]) for c in context)
    with torch.no_grad(), mc_sampling(model, generator=torch.Generator().manual_seed(0), num_draws=2):
        out = conv(twice, both)
    with torch.no_grad():
        centre = conv(x, context)
    assert not torch.allclose(out[0], out[1])  # independent draws per group
    assert not torch.allclose(out[0], centre[0]) and not torch.allclose(out[1], centre[0])
    # with zero posterior width, sampling gives the mean exactly
    zero = from_efficientat_checkpoint(_weights("mn04"), "flip-mn04", moped_delta=0.0).eval()
    with torch.no_grad():
        plain = zero(WAVE)
        with mc_sampling(zero, generator=torch.Generator().manual_seed(0)):
            sampled = zero(WAVE)
    torch.testing.assert_close(sampled, plain, atol=1e-5, rtol=0)


def test_front_end_checks_its_input():
    frontend = KaldiLogMelFrontend()
    assert frontend.min_samples == 514
    assert frontend(torch.zeros(1, 514)).shape == (1, 1, 128, 2)
    with pytest.raises(ValueError, match="at least 514"):
        frontend(torch.zeros(1, 513))
    with pytest.raises(TypeError, match="floating-point"):
        frontend(torch.zeros(1, 1000, dtype=torch.int16))
    with pytest.raises(ValueError, match=r"\(batch, samples\)"):
        frontend(torch.zeros(1000))
    with pytest.raises(ValueError, match="fmin < fmax"):
        EfficientATFrontendConfig(fmax=17000.0)
    with pytest.raises(ValueError, match="unknown EfficientATFrontendConfig keys"):
        EfficientATFrontendConfig.from_dict({"mel_bin": 64})
    model = EfficientAT("mn04")
    with pytest.raises(ValueError, match="does not match the model's 32000 Hz"):
        model(torch.zeros(1, 32000), sample_rate=16000)
    assert model(torch.zeros(1, 514)).shape == (1, 527)  # the shortest clip passes the whole network


def test_training_masks_read_as_masked_log_mel():
    model = EfficientAT("mn04").train()
    x = torch.randn(4, 1, 128, 300)
    torch.manual_seed(0)
    out = model.normalize(x)
    changed = out != x
    assert changed.any() and torch.allclose(out[changed], torch.tensor(0.9))
    assert torch.equal(model.eval().normalize(x), x)


def test_mac_conventions():
    counts = {}
    for arch in ("mn04", "mn10", "mn20"):
        with torch.device("meta"):
            model = EfficientAT(arch)
        counts[arch] = count_macs(model, 10.0, convention="efficientat").total
        assert count_macs(model, 10.0).total > counts[arch]  # vipann also counts the front end, BN, SE
    # the EfficientAT repository's helpers/flop_count.count_macs on a 10 s clip
    assert counts == {"mn04": 110_646_167, "mn10": 541_085_095, "mn20": 2_059_388_727}
    flip = vipann.create_model("flip-mn10", device="meta")
    assert count_macs(flip, 10.0, convention="efficientat").total == counts["mn10"]  # one mean pass
    assert count_macs(flip, 10.0).total > 1.9 * count_macs(vipann.create_model("det-mn10", device="meta"), 10.0).total
    with pytest.raises(ValueError, match="'paper' reproduces"):
        count_macs(flip, 10.0, convention="paper")
    dymn = count_macs(vipann.create_model("det-dymn10", device="meta"), 10.0, convention="efficientat").total
    assert 0.55e9 < dymn < 0.6e9  # EfficientAT's README: 0.58 G
