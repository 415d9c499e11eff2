"""The same code on every accelerator present (CUDA where available; skipped on CPU-only machines)."""

import pytest
import torch
from _golden import golden_inputs, load_golden, load_keys, seeded_state_dict

import vipann
from vipann.models.frontend import FrontendConfig
from vipann.zoo.convert import from_panns_checkpoint

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.parametrize("method", ["det", "drop", "flip", "detflip"])
def test_predict_on_cuda_matches_cpu_semantics(method):
    torch.manual_seed(0)
    model = vipann.create_model(f"{method}-tiny").eval()
    x = 0.1 * torch.randn(3, 16000)
    cpu = vipann.predict(model, x, num_samples=1)
    model.cuda()
    gpu = vipann.predict(model, x.cuda(), num_samples=1)
    assert gpu.probs.device.type == "cuda"
    if method == "det":
        torch.testing.assert_close(gpu.mean.cpu(), cpu.mean, atol=1e-4, rtol=1e-4)
    samples = 1 if method == "det" else 5
    a = vipann.predict(model, x, num_samples=samples, generator=3)  # CPU input, CUDA model: moved
    b = vipann.predict(model, x, num_samples=samples, generator=torch.Generator(device="cuda").manual_seed(3))
    torch.testing.assert_close(a.probs, b.probs)
    assert a.probs.device.type == "cuda" and torch.isfinite(a.total).all()
    with torch.no_grad():
        torch.testing.assert_close(model(x.cuda()), model(x.cuda()))  # eval stays deterministic


@cuda
def test_golden_resnet54_on_cuda():
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    name, keys = load_keys("resnet54")
    model = from_panns_checkpoint(seeded_state_dict(keys, name, frontend=FrontendConfig()), "det-resnet54").cuda()
    golden = load_golden()
    with torch.no_grad():
        logits = model(golden_inputs()["5s"].cuda()).cpu()
    torch.testing.assert_close(logits, golden["resnet54.5s.logits"], atol=1e-3, rtol=0)


@cuda
def test_flipout_grouped_draws_on_cuda():
    layer = vipann.layers.Conv2dFlipout(4, 6, 3, padding=1).cuda().eval()
    x = torch.randn(6, 4, 8, 8, device="cuda")
    with torch.no_grad(), vipann.layers.mc_sampling(layer, num_draws=3):
        out = layer(x)
    assert out.shape == (6, 6, 8, 8) and torch.isfinite(out).all()


@cuda
@pytest.mark.parametrize("arch", ["mn10", "dymn10"])
def test_efficientat_golden_and_sampling_on_cuda(arch):
    from _golden_efficientat import golden, golden_input, synthetic_state_dict

    from vipann.zoo.convert import from_efficientat_checkpoint

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    weights = synthetic_state_dict(arch)
    model = from_efficientat_checkpoint(weights, f"det-{arch}").cuda()
    with torch.no_grad():
        logits = model(golden_input("input_5s").cuda()).cpu()
    torch.testing.assert_close(logits, golden()[f"{arch}.input_5s.logits"], atol=1e-3, rtol=0)
    flip = from_efficientat_checkpoint(weights, f"flip-{arch}").cuda()
    x = golden_input("input_5s")[:, :32000]
    a = vipann.predict(flip, x, num_samples=4, generator=1, window_seconds=1.0)
    b = vipann.predict(flip, x, num_samples=4, generator=1, window_seconds=1.0, max_rows=8)
    assert a.probs.device.type == "cuda" and torch.isfinite(a.epistemic).all() and (a.epistemic > 0).all()
    assert a.probs.shape == b.probs.shape == (4, 2, 527)
