"""The decision-level head (PANNs ``Cnn14_DecisionLevelMax``, vipann ``cnn14-dlmax``) in all four flavours.

Equivalence with the PANNs original is in ``tests/test_panns_inference.py``; here the structure, the
framewise output and the Monte-Carlo sampling, mostly on a tiny decision-level network (the tiny
test architecture with ``pooling="decision_max"``) so every flavour runs in milliseconds.
"""

import dataclasses

import pytest
import torch

import vipann
from vipann.layers import FlipoutLayer, LinearFlipout, MCDropout, kl_loss, mc_sampling
from vipann.models import ARCHITECTURES, METHODS, PANN
from vipann.models.profile import count_macs

# Trainable parameters of panns_inference.models.Cnn14_DecisionLevelMax(classes_num=527) (= Cnn14's).
CNN14_DLMAX_PARAMETERS = 80_753_615


@pytest.fixture
def tiny_dl(monkeypatch):
    """Build a tiny decision-level network (frame ratio 4) of any method."""
    spec = dataclasses.replace(ARCHITECTURES["tiny"], name="tiny-dlmax", pooling="decision_max")
    monkeypatch.setitem(ARCHITECTURES, "tiny-dlmax", spec)

    def build(method, num_classes=10):
        torch.manual_seed(0)
        return PANN("tiny-dlmax", method, num_classes)

    return build


def _wave(batch=2, samples=16000, seed=0):
    return 0.1 * torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("method", METHODS)
def test_cnn14_dlmax_has_cnn14_tensors_and_a_segment_head(method):
    with torch.device("meta"):
        dl = PANN("cnn14-dlmax", method, 527)
        clip = PANN("cnn14", method, 527)
    assert {k: v.shape for k, v in dl.state_dict().items()} == {k: v.shape for k, v in clip.state_dict().items()}
    assert sum(p.numel() for p in dl.parameters()) == sum(p.numel() for p in clip.parameters())
    if method in ("det", "drop"):
        assert sum(p.numel() for p in dl.parameters() if p.requires_grad) == CNN14_DLMAX_PARAMETERS
    assert dl.pooling == "decision_max" and dl.frame_ratio == 32
    assert dl.trunk_names[-1] == "segment_pool" and "global_pool" not in dl.stage_names
    assert dl.stage_names[len(dl.trunk_names) :] == (
        "dropout_fc1",
        "fc1",
        "act_fc1",
        "dropout_head",
        "fc_audioset",
        "clip_max",
    )
    assert dl.segment_stop == len(dl.stage_names) - 1
    assert ARCHITECTURES["cnn14-dlmax"].original_class == "Cnn14_DecisionLevelMax"
    assert vipann.get_pretrained_cfg(f"{method}-cnn14-dlmax").arch == "cnn14-dlmax"


@pytest.mark.parametrize("method", METHODS)
def test_forward_is_the_maximum_of_the_framewise_output(tiny_dl, method):
    model = tiny_dl(method).eval()
    samples = 16000 + 170  # 102 frames: 25 segments of 4 frames, 2 frames padded
    x = _wave(samples=samples)
    with torch.no_grad():
        logits = model(x)
        framewise = model.framewise(x)
        segments = model.run_stages(model.normalize(model.logmel(x)), 0, model.segment_stop)
    frames = model.frontend_config.num_frames(samples)
    assert frames == 102 and segments.shape == (2, 25, 10)
    assert framewise.shape == (2, frames, 10) and logits.shape == (2, 10)
    torch.testing.assert_close(logits, framewise.amax(1), atol=0, rtol=0)
    torch.testing.assert_close(framewise[:, :100], segments.repeat_interleave(4, dim=1), atol=0, rtol=0)
    torch.testing.assert_close(framewise[:, 100:], segments[:, -1:].expand(2, 2, 10), atol=0, rtol=0)
    # The embedding of a decision-level head is the maximum over segments of relu(fc1(segment)).
    with torch.no_grad():
        n = len(model.trunk_names)
        hidden = model.run_stages(model.pooled(x), n, n + 3)
        assert hidden.shape == (2, 25, model.embed_dim)
        torch.testing.assert_close(model.embed(x), hidden.amax(1))


def test_upsample_segments_repeats_and_pads_like_panns():
    model = PANN("cnn14-dlmax", "det", 3, spec_augment=False)
    seg = torch.arange(2 * 3 * 3, dtype=torch.float32).reshape(2, 3, 3)
    out = model.upsample_segments(seg, 100)
    assert out.shape == (2, 100, 3)
    torch.testing.assert_close(out[:, :96], seg.repeat_interleave(32, dim=1))
    assert (out[:, 96:] == seg[:, -1:]).all()
    assert model.upsample_segments(seg, 96).shape == (2, 96, 3)
    assert model.upsample_segments(seg[None], 97).shape == (1, 2, 97, 3)  # leading axes (samples) are kept
    with pytest.raises(ValueError, match="cover more than"):
        model.upsample_segments(seg, 95)


def test_clip_level_models_have_no_framewise_output():
    model = vipann.create_model("det-tiny").eval()
    with pytest.raises(ValueError, match=r"clip-level head.*cnn14-dlmax"):
        model.framewise(_wave())
    with pytest.raises(ValueError, match="clip-level head"):
        _ = model.segment_stop


def test_stochastic_sites_of_the_segment_head(tiny_dl):
    drop, flip, detflip = tiny_dl("drop"), tiny_dl("flip"), tiny_dl("detflip")
    assert [n for n, m in drop.named_modules() if isinstance(m, MCDropout)] == [
        "dropout1",
        "dropout2",
        "dropout_fc1",
        "dropout_head",
    ]
    assert [n for n, m in detflip.named_modules() if isinstance(m, FlipoutLayer)] == ["fc1", "fc_audioset"]
    assert [n for n, m in flip.named_modules() if isinstance(m, FlipoutLayer)][-2:] == ["fc1", "fc_audioset"]
    assert drop.stage_names[drop.first_stochastic_stage()] == "dropout1"
    assert detflip.stage_names[detflip.first_stochastic_stage()] == "fc1"  # the trunk is shared by all samples


@pytest.mark.parametrize("method", ["drop", "flip", "detflip"])
def test_sampling_gives_distinct_draws(tiny_dl, method):
    model = tiny_dl(method).eval()
    x = _wave()
    for max_rows in (None, 1):  # all samples stacked in one pass (grouped draws), or one per pass
        result = vipann.predict(model, x, num_samples=5, generator=0, multilabel=True, max_rows=max_rows)
        probs = result.probs
        assert probs.shape == (5, 2, 10)
        for i in range(5):
            for j in range(i + 1, 5):
                assert not torch.allclose(probs[i], probs[j])
        assert (result.epistemic > 0).all()
    # framewise outputs sample too, and are deterministic again outside mc_sampling
    with torch.no_grad():
        base = model.framewise(x)
        with mc_sampling(model):
            a, b = model.framewise(x), model.framewise(x)
        torch.testing.assert_close(model.framewise(x), base)
    assert not torch.allclose(a, b)


def test_grouped_flipout_draws_on_segments():
    torch.manual_seed(0)
    layer = LinearFlipout(6, 4).eval()
    x = torch.randn(3, 7, 6)  # (clips, segments, features)
    stacked = x.repeat(2, 1, 1)  # two groups, group-major
    with torch.no_grad(), mc_sampling(layer, generator=torch.Generator().manual_seed(1), num_draws=2):
        out = layer(stacked)
    assert out.shape == (6, 7, 4)
    assert not torch.allclose(out[:3], out[3:])  # an independent weight draw per group
    mean = layer(x)
    with torch.no_grad():
        layer.rho_weight.fill_(-60.0)
        layer.rho_bias.fill_(-60.0)
        with mc_sampling(layer, num_draws=2):
            torch.testing.assert_close(layer(stacked), torch.cat([mean, mean]).detach())


@pytest.mark.parametrize("method", METHODS)
def test_training_with_mixup_and_backward(tiny_dl, method):
    model = tiny_dl(method).train()
    x = _wave(batch=4)
    logits = model(x, mixup_lambda=torch.tensor([0.3, 0.7, 0.6, 0.4]))
    assert logits.shape == (2, 10)
    (logits.logsumexp(-1).mean() + 1e-3 * kl_loss(model)).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_macs_count_the_head_per_segment():
    dl = count_macs(vipann.create_model("det-cnn14-dlmax", device="meta"), 10.0)
    clip = count_macs(vipann.create_model("det-cnn14", device="meta"), 10.0)
    segments = 1001 // 32
    head = 2048 * 2048 + 2048 * 527
    assert dl.per_stage["fc1"] == segments * 2048 * 2048
    assert dl.per_stage["fc_audioset"] == segments * 2048 * 527
    assert dl.total - clip.total >= (segments - 1) * head
