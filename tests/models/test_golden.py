"""Equivalence with the original PANNs / VI-PANN code, on the golden outputs (tests/data/README.md)."""

import pytest
import torch
from _golden import golden_inputs, load_golden, load_keys, seeded_state_dict

import vipann
from vipann.layers import kl_loss
from vipann.models.frontend import FrontendConfig
from vipann.zoo.convert import from_panns_checkpoint, from_vipann_checkpoint, moped

# float32 CPU tolerances; the worst differences seen are ~1.5e-5 (logmel) and ~1e-5 (logits).
ATOL = dict(logmel=1e-4, pooled=1e-4, embedding=1e-4, logits=1e-4, clipwise=1e-5)
ARCHS = ["resnet54", "cnn14", "cnn6", "cnn10", "mobilenetv1"]
TAGS = ["1s", "5s", "10s"]


@pytest.fixture(scope="module")
def golden():
    return load_golden()


@pytest.fixture(scope="module")
def inputs():
    return golden_inputs()


@pytest.fixture(scope="module")
def resnet54_checkpoint():
    return _checkpoint("resnet54")


def _checkpoint(arch, **kwargs):
    model_name, keys = load_keys(arch)
    return {"iteration": 0, "model": seeded_state_dict(keys, model_name, frontend=FrontendConfig(), **kwargs)}


@pytest.mark.parametrize("arch", ARCHS)
def test_det_reproduces_original(arch, golden, inputs, resnet54_checkpoint):
    checkpoint = resnet54_checkpoint if arch == "resnet54" else _checkpoint(arch)
    model = from_panns_checkpoint(checkpoint, f"det-{arch}")
    with torch.no_grad():
        for tag in TAGS:
            x = inputs[tag]
            out = {
                "logmel": model.logmel(x),
                "pooled": model.pooled(x),
                "embedding": model.embed(x),
                "logits": model(x),
            }
            out["clipwise"] = torch.sigmoid(out["logits"])
            for key, value in out.items():
                ref = golden[f"frontend.{tag}.logmel"] if key == "logmel" else golden[f"{arch}.{tag}.{key}"]
                torch.testing.assert_close(value, ref, atol=ATOL[key], rtol=0, msg=f"{arch} {tag} {key}")


def test_moped_flip_mean_reproduces_det(golden, inputs, resnet54_checkpoint):
    det = from_panns_checkpoint(resnet54_checkpoint, "det-resnet54")
    flip = moped(det, "flip")
    flip_from_ckpt = from_panns_checkpoint(resnet54_checkpoint, "flip-resnet54")
    x = inputs["5s"]
    with torch.no_grad():
        for model in (flip.eval(), flip_from_ckpt):
            torch.testing.assert_close(model(x), golden["resnet54.5s.logits"], atol=1e-4, rtol=0)


def test_vipann_flipout_checkpoint(golden, inputs):
    model_name, keys = load_keys("vipann_flipout")
    sd = seeded_state_dict(keys, model_name, frontend=FrontendConfig())
    model = from_vipann_checkpoint(sd)
    assert model.method == "flip" and model.num_classes == 527
    x = inputs["5s"]
    with torch.no_grad():
        logits = model(x)
        torch.testing.assert_close(model.pooled(x), golden["vipann_flipout.5s.pooled"], atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.sigmoid(logits), golden["vipann_flipout.5s.clipwise"], atol=1e-5, rtol=0)
    torch.testing.assert_close(logits, golden["vipann_flipout.5s.embedding"], atol=1e-4, rtol=0)
    # KL over the 56 Flipout convs (the checkpoint's head is deterministic)
    trunk_kl = kl_loss(model) - model.fc1.kl_divergence() - model.fc_audioset.kl_divergence()
    torch.testing.assert_close(trunk_kl.reshape(1), golden["vipann_flipout.5s.kl_loss"], atol=0.05, rtol=1e-5)


def test_vipann_flip_transfer_layout(golden, inputs):
    model_name, keys = load_keys("vipann_flip_tl50")
    sd = seeded_state_dict(keys, model_name, num_classes=50, frontend=FrontendConfig())
    model = from_vipann_checkpoint(sd)
    assert model.num_classes == 50
    with torch.no_grad():
        logits = model(inputs["5s"])
    torch.testing.assert_close(torch.sigmoid(logits), golden["vipann_flip_tl50.5s.clipwise"], atol=1e-5, rtol=0)
    torch.testing.assert_close(logits, golden["vipann_flip_tl50.5s.embedding"], atol=1e-4, rtol=0)
    torch.testing.assert_close(kl_loss(model).reshape(1), golden["vipann_flip_tl50.5s.kl_loss"], atol=0.05, rtol=1e-5)
    head = model.fc1.kl_divergence() + model.fc_audioset.kl_divergence()
    torch.testing.assert_close(head.reshape(1), golden["vipann_flip_tl50.5s.kl_loss_head"], atol=1e-3, rtol=1e-5)
    # the checkpoint's model is a real Flip model: sampling changes the output only when asked
    with torch.no_grad(), vipann.layers.mc_sampling(model):
        sampled = model(inputs["1s"])
    assert torch.isfinite(sampled).all()
