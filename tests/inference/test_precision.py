"""predict(..., precision="bf16"): bfloat16 autocast after the front end, float32 probabilities, a bounded change."""

import pytest
import torch

import vipann
from vipann.datasets.synthetic import MiniAudioSet


@pytest.fixture(scope="module")
def waves(tmp_path_factory):
    clips = MiniAudioSet(tmp_path_factory.mktemp("corpus"), split="eval", num_clips=8)
    return torch.stack([clips.load_waveform(i) for i in range(len(clips))])


def test_bf16_runs_in_float32_out_and_stays_close_on_the_trained_det_demo(waves):
    model = vipann.from_pretrained("det-demo")
    full = vipann.predict(model, waves).probs
    low = vipann.predict(model, waves, precision="bf16").probs
    assert low.dtype == torch.float32 and low.shape == full.shape
    change = float((low - full).abs().max())
    assert 0 < change < 2e-2  # bfloat16 did run, and moved the probabilities by less than 2e-2 (4.3e-3 measured)
    assert next(model.parameters()).dtype == torch.float32  # the model itself is untouched


def test_bf16_monte_carlo_mean_is_close_for_detflip(waves):
    model = vipann.from_pretrained("detflip-demo")
    full = vipann.predict(model, waves, num_samples=8, generator=0).mean
    low = vipann.predict(model, waves, num_samples=8, generator=0, precision="bf16").mean
    assert float((low - full).abs().max()) < 2e-2


def test_unknown_precision_is_refused(waves):
    with pytest.raises(ValueError, match="precision must be 'fp32' or 'bf16'"):
        vipann.predict(vipann.from_pretrained("det-demo"), waves, precision="fp16")


def test_bf16_leaves_the_model_with_its_strides_and_values(waves):
    model = vipann.from_pretrained("det-demo")
    before = {name: (t.clone(), t.stride()) for name, t in model.state_dict().items()}
    vipann.predict(model, waves[:2], precision="bf16")
    after = model.state_dict()
    for name, (value, stride) in before.items():
        assert torch.equal(after[name], value) and after[name].stride() == stride, name


def test_bf16_restores_the_layout_when_the_forward_fails():
    from vipann.inference.precision import low_precision

    model = torch.nn.Conv2d(3, 8, 3)
    with pytest.raises(RuntimeError, match="boom"), low_precision(model, "bf16", torch.device("cpu")):
        assert model.weight.is_contiguous(memory_format=torch.channels_last)
        assert not model.weight.is_contiguous()
        raise RuntimeError("boom")
    assert model.weight.is_contiguous()
