"""Tests for vipann.models.profile: MAC counts (Table 1 of the VI-PANN paper) and parameter counts."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import vipann
from vipann.layers import Conv2dFlipout, LinearFlipout, flipout_layers, mc_sampling
from vipann.models import PANN
from vipann.models.profile import (
    COUNTED_OPS,
    MacCounter,
    MacReport,
    count_macs,
    count_parameters,
    frontend_macs,
)

# (method, classes, samples) -> MACs of torchprofile 0.1.0 on VI-PANN's models.ResNet54.
TABLE1 = {
    ("drop", 50, 160_000): 13_536_497_600,  # ESC-50, 5 s
    ("det", 50, 160_000): 13_536_497_600,
    ("detflip", 50, 160_000): 13_545_306_248,
    ("flip", 50, 160_000): 26_653_313_032,
    ("drop", 10, 960_000): 81_862_378_176,  # DCASE2013, 30 s
}
US8K = {
    ("drop", 10, 128_000): 10_865_261_760,  # UrbanSound8K, 4 s
    ("detflip", 10, 128_000): 10_873_742_568,
    ("flip", 10, 128_000): 21_415_107_432,
}

_RESNETS: dict[tuple[str, int], PANN] = {}


def resnet54(method: str, classes: int) -> PANN:
    """Full-size ResNet54 models are built once per module run (a few seconds each)."""
    key = (method, classes)
    if key not in _RESNETS:
        _RESNETS[key] = vipann.create_model(f"{method}-resnet54", num_classes=classes)
    return _RESNETS[key]


@pytest.fixture(scope="module", autouse=True)
def _release_resnets():
    yield
    _RESNETS.clear()


# --- Table 1 ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("method", "classes", "samples"), list(TABLE1))
def test_paper_table1_macs_exact(method, classes, samples):
    report = count_macs(resnet54(method, classes), num_samples=samples, convention="paper")
    assert report.total == TABLE1[(method, classes, samples)]
    assert isinstance(report.total, int)


@pytest.mark.slow
@pytest.mark.parametrize(("method", "classes", "samples"), list(US8K))
def test_paper_us8k_macs_exact(method, classes, samples):
    model = resnet54(method, classes)
    assert count_macs(model, num_samples=samples, convention="paper").total == US8K[(method, classes, samples)]
    # Same count when the length is given in seconds (4 s at 32 kHz).
    assert count_macs(model, 4.0, convention="paper").total == US8K[(method, classes, samples)]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["drop", "detflip", "flip"])
def test_vipann_convention_not_above_paper(method):
    model = resnet54(method, 50)
    ours = count_macs(model, 5.0)
    paper = count_macs(model, 5.0, convention="paper")
    assert ours.convention == "vipann" and paper.convention == "paper"
    assert ours.total <= paper.total
    # The differences are exactly the three documented ones.
    c = model.frontend_config
    frames = c.num_frames(160_000)
    bins = c.window_size // 2 + 1
    frontend = 2 * bins * c.window_size * frames - c.window_size * frames
    assert paper.per_stage["frontend"] - ours.per_stage["frontend"] == frontend
    head = paper.per_stage["fc_audioset"] - ours.per_stage["fc_audioset"]
    assert head == ours.per_stage["fc_audioset"]  # evaluated twice
    # PANNs' 1x1 avg_pool2d after conv_block_after1: (1, 2048, 15, 2).
    assert paper.per_stage["conv_block_after1"] - ours.per_stage["conv_block_after1"] == 2048 * 15 * 2
    for name in model.stage_names:
        if name not in ("fc_audioset", "conv_block_after1"):
            assert paper.per_stage[name] == ours.per_stage[name], name


@pytest.mark.slow
def test_flip_head_cost_matches_reference_formula():
    # Official ResNet54 (one fc_audioset call) is lower by 3*2048*C + 2048 + 2C for a Flipout head.
    report = count_macs(resnet54("flip", 50), num_samples=160_000, convention="paper")
    assert report.per_stage["fc_audioset"] == 2 * (3 * 2048 * 50 + 2048 + 2 * 50)


# --- parameters ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "classes", "expected"),
    [
        ("drop", 50, 103_340_786),
        ("det", 50, 103_340_786),
        ("detflip", 50, 107_639_588),
        ("flip", 50, 206_620_004),
        ("drop", 10, 103_258_826),
        ("detflip", 10, 107_475_668),
        ("flip", 10, 206_456_084),
    ],
)
def test_count_parameters_table1(method, classes, expected):
    model = resnet54(method, classes)
    assert count_parameters(model) == expected
    # The front end's window and filterbank are buffers, never parameters.
    assert count_parameters(model, trainable_only=False) == expected


def test_count_parameters_trainable_only():
    model = vipann.create_model("det-tiny", num_classes=5)
    total = sum(p.numel() for p in model.parameters())
    assert count_parameters(model) == total
    for p in model.conv_block1.parameters():
        p.requires_grad_(False)
    frozen = sum(p.numel() for p in model.conv_block1.parameters())
    assert count_parameters(model) == total - frozen
    assert count_parameters(model, trainable_only=False) == total


# --- hand-computed counts on the tiny model --------------------------------------------------


def tiny_hand_count(classes: int) -> dict[str, int]:
    """det-tiny on 1 s (16000 samples): 101 frames x 32 mels, blocks 8 and 16 channels."""
    frames, mels, n_fft, bins = 101, 32, 512, 257
    frontend = frames * n_fft + frames * bins * mels + frames * mels  # window mul, mel mm, 10*
    frontend += frames * mels  # bn0
    b1 = 8 * frames * mels  # (1, 8, 101, 32)
    block1 = b1 * 1 * 9 + b1 + b1 * 8 * 9 + b1 + 8 * 50 * 16  # conv, bn, conv, bn, avg pool
    b2 = 16 * 50 * 16  # (1, 16, 50, 16)
    block2 = b2 * 8 * 9 + b2 + b2 * 16 * 9 + b2 + 16 * 25 * 8
    pool = 16 * 25 + 16  # mean over mels, mean over time (amax and + are free)
    return {
        "frontend": frontend,
        "conv_block1": block1,
        "dropout1": 0,
        "conv_block2": block2,
        "dropout2": 0,
        "global_pool": pool,
        "dropout_fc1": 0,
        "fc1": 16 * 16,
        "act_fc1": 0,
        "dropout_head": 0,
        "fc_audioset": 16 * classes,
    }


def test_tiny_hand_computed_per_stage():
    model = vipann.create_model("det-tiny", num_classes=5)
    report = count_macs(model, 1.0)
    expected = tiny_hand_count(5)
    assert report.per_stage == expected
    assert list(report.per_stage) == ["frontend", *model.stage_names]
    assert report.total == sum(expected.values()) == 5_835_600
    assert report.num_samples == 16_000 and report.seconds == 1.0 and report.batch_size == 1
    assert report.per_op["aten.convolution"] == (
        8 * 101 * 32 * 9 + 8 * 101 * 32 * 72 + 16 * 50 * 16 * 72 + 16 * 50 * 16 * 144
    )
    assert sum(report.per_op.values()) == report.total


def test_tiny_paper_convention_by_hand():
    model = vipann.create_model("det-tiny", num_classes=5)
    ours, paper = count_macs(model, 1.0), count_macs(model, 1.0, convention="paper")
    stft_conv = 2 * 257 * 512 * 101
    assert paper.per_stage["frontend"] == ours.per_stage["frontend"] - 101 * 512 + stft_conv
    assert paper.per_stage["fc_audioset"] == 2 * 16 * 5
    # The tiny net has no 1x1 pools, so every other stage is the same.
    assert {k: v for k, v in paper.per_stage.items() if k not in ("frontend", "fc_audioset")} == {
        k: v for k, v in ours.per_stage.items() if k not in ("frontend", "fc_audioset")
    }
    assert ours.total <= paper.total


def test_single_conv2d_by_hand():
    conv = nn.Conv2d(6, 4, kernel_size=(3, 5), padding=1, groups=2, bias=True).to("meta")
    with torch.no_grad(), MacCounter() as counter:
        out = conv(torch.empty(2, 6, 10, 12, device="meta"))
    assert out.shape == (2, 4, 10, 10)
    assert counter.per_op == {"aten.convolution": 2 * 4 * 10 * 10 * (6 // 2) * 3 * 5}


def test_single_linear_and_matmul_by_hand():
    linear = nn.Linear(7, 3).to("meta")
    with torch.no_grad(), MacCounter() as counter:
        linear(torch.empty(4, 7, device="meta"))
        torch.empty(2, 5, 7, device="meta") @ torch.empty(7, 3, device="meta")
        torch.bmm(torch.empty(2, 5, 7, device="meta"), torch.empty(2, 7, 3, device="meta"))
    assert sum(counter.per_op.values()) == 4 * 7 * 3 + 2 * 5 * 7 * 3 + 2 * 5 * 7 * 3


def test_uncounted_ops_count_zero():
    x = torch.empty(3, 4, 5, device="meta")
    with torch.no_grad(), MacCounter() as counter:
        y = torch.relu(x + x - x / 2.0)
        y = torch.amax(y, dim=1) + torch.nn.functional.softplus(y).sum(dim=1)
        torch.empty_like(x).uniform_(-1.0, 1.0).sign()
        torch.nn.functional.dropout(x, 0.5, training=False)
    assert sum(counter.per_op.values()) == 0
    with torch.no_grad(), MacCounter() as counter:
        x * x
        x.mean(dim=2)
        torch.nn.functional.avg_pool2d(torch.empty(1, 2, 4, 6, device="meta"), 2)
        torch.nn.functional.batch_norm(
            torch.empty(2, 3, 4, device="meta"),
            torch.empty(3, device="meta"),
            torch.empty(3, device="meta"),
            weight=torch.empty(3, device="meta"),
            bias=torch.empty(3, device="meta"),
        )
    ops = dict(counter.per_op)
    (batch_norm,) = (name for name in ops if "batch_norm" in name)  # whichever variant dispatches
    assert ops.pop(batch_norm) == 24
    assert ops == {"aten.mul": 60, "aten.mean": 12, "aten.avg_pool2d": 2 * 2 * 3}
    assert "aten.mul" in COUNTED_OPS and "aten.add" not in COUNTED_OPS


def test_single_flipout_conv_sampling_path_by_hand():
    layer = Conv2dFlipout(3, 4, 3, padding=1, bias=False).to("meta").eval()
    x = torch.empty(2, 3, 8, 8, device="meta")
    conv = 2 * 4 * 8 * 8 * 3 * 9
    with torch.no_grad(), MacCounter() as counter:
        layer(x)  # eval without sampling: the mean only
    assert sum(counter.per_op.values()) == conv
    with torch.no_grad(), mc_sampling(layer), MacCounter() as counter:
        layer(x)
    # two convs + sigma*eps (weight numel) + x*sign_in + out*sign_out
    assert counter.per_op == {"aten.convolution": 2 * conv, "aten.mul": 4 * 3 * 9 + x.numel() + 2 * 4 * 8 * 8}


def test_single_flipout_linear_sampling_path_by_hand():
    layer = LinearFlipout(6, 5).to("meta").eval()
    x = torch.empty(3, 6, device="meta")
    with torch.no_grad(), mc_sampling(layer), MacCounter() as counter:
        layer(x)
    assert counter.per_op == {"aten.addmm": 2 * 3 * 6 * 5, "aten.mul": 6 * 5 + 5 + 3 * 6 + 3 * 5}


def test_vipann_frontend_count_matches_dispatch():
    # The front end cannot run on meta (it switches autocast off); check the analytic count
    # against what the real front end dispatches on the CPU.
    model = vipann.create_model("det-tiny").eval()
    with torch.no_grad(), MacCounter() as counter:
        logmel = model.logmel(torch.zeros(2, 12_345))
    terms = frontend_macs(model, 12_345, batch_size=2)
    assert sum(counter.per_op.values()) == sum(terms.values())
    assert logmel.shape[2] == model.frontend_config.num_frames(12_345)
    assert counter.per_op == {
        "aten.mul": terms["frontend.stft"] + terms["frontend.db_scale"],
        "aten.mm": terms["frontend.mel_matmul"],
    }


def test_mc_dropout_counts_zero():
    det = count_macs(vipann.create_model("det-tiny", num_classes=5), 1.0)
    drop = count_macs(vipann.create_model("drop-tiny", num_classes=5), 1.0)
    assert drop.total == det.total


def test_flip_tiny_extras_and_batch_scaling():
    model = vipann.create_model("flip-tiny", num_classes=5)
    det = count_macs(vipann.create_model("det-tiny", num_classes=5), 1.0)
    one = count_macs(model, 1.0)
    two = count_macs(model, 1.0, batch_size=2)
    assert one.total > 2 * det.total - det.per_stage["frontend"]
    # Everything scales with the batch except sigma*eps, drawn once per forward pass.
    perturbation = sum(
        layer.mu_w.numel() + (layer.mu_bias.numel() if layer.mu_bias is not None else 0)
        for _, layer in flipout_layers(model)
    )
    assert 2 * one.total - two.total == perturbation
    det_two = count_macs(vipann.create_model("det-tiny", num_classes=5), 1.0, batch_size=2)
    assert det_two.total == 2 * det.total


# --- length handling, model untouched, errors ------------------------------------------------


def test_default_length_from_pretrained_cfg():
    model = vipann.create_model("det-tiny", num_classes=5)
    assert count_macs(model).num_samples == round(model.pretrained_cfg.clip_seconds * 16_000)
    model.pretrained_cfg = dataclasses.replace(model.pretrained_cfg, clip_seconds=2.0)
    assert count_macs(model).num_samples == 32_000
    bare = PANN("tiny", "det", num_classes=5)
    assert count_macs(bare).num_samples == 16_000  # 1 s
    assert count_macs(bare, 0.5).num_samples == 8_000
    assert count_macs(bare, num_samples=8_000).seconds == 0.5


def test_original_model_untouched():
    model = vipann.create_model("flip-tiny", num_classes=5).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [(m.mc_active, m.num_draws) for m in model.modules() if hasattr(m, "mc_active")]
    count_macs(model, 1.0, convention="paper")
    assert model.training
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert all(b.device.type == "cpu" for b in model.buffers())
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert flags == [(m.mc_active, m.num_draws) for m in model.modules() if hasattr(m, "mc_active")]
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_report_str_and_fields():
    report = count_macs(vipann.create_model("det-tiny", num_classes=5), 1.0)
    assert isinstance(report, MacReport)
    text = str(report)
    assert "vipann convention" in text and "total" in text and "conv_block1" in text
    assert f"{report.total:,}" in text
    assert report.gmacs == pytest.approx(report.total / 1e9)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seconds": 1.0, "num_samples": 16_000}, "either seconds or num_samples"),
        ({"seconds": 0.0}, "positive"),
        ({"seconds": -1.0}, "positive"),
        ({"seconds": float("nan")}, "finite"),
        ({"num_samples": 0}, "positive"),
        ({"num_samples": -5}, "positive"),
        ({"num_samples": 1.5}, "int"),
        ({"num_samples": 100}, "too short"),
        ({"seconds": 1.0, "batch_size": 0}, "batch_size"),
        ({"seconds": 1.0, "convention": "torchprofile"}, "convention"),
    ],
)
def test_bad_arguments(kwargs, match):
    model = vipann.create_model("det-tiny", num_classes=5)
    with pytest.raises(ValueError, match=match):
        count_macs(model, **kwargs)


def test_not_a_pann():
    with pytest.raises(TypeError, match="PANN"):
        count_macs(nn.Linear(3, 3), 1.0)


def test_user_hooks_do_not_see_the_count():
    model = vipann.create_model("det-tiny", num_classes=5)
    calls = []
    handle = model.conv_block1.register_forward_hook(lambda *args: calls.append(1))
    count_macs(model, 1.0)
    assert calls == []
    assert len(model.conv_block1._forward_hooks) == 1
    handle.remove()


def test_model_already_on_meta():
    model = vipann.create_model("flip-tiny", num_classes=5)
    expected = count_macs(model, 1.0, convention="paper").total
    assert count_macs(model.to("meta"), 1.0, convention="paper").total == expected
