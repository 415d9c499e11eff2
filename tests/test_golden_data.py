"""The shipped golden data are complete and the regenerated seeded weights are the golden ones."""

from __future__ import annotations

import json
import math

import pytest
import torch
from _golden import (
    ARCH_KEY_LISTS,
    FINGERPRINTS_FILE,
    FRONTEND_KEYS,
    golden_inputs,
    load_golden,
    load_keys,
    seeded_state_dict,
)

FINGERPRINTS = json.loads(FINGERPRINTS_FILE.read_text())
LISTS = sorted(k for k in FINGERPRINTS if not k.startswith("_"))
PANN_DIMS = {"resnet54": 2048, "cnn14": 2048, "cnn6": 512, "cnn10": 512, "mobilenetv1": 1024}
BATCH = {"1s": 1, "5s": 3, "10s": 1}


def test_golden_file_has_every_documented_key():
    golden = load_golden()
    for arch, dim in PANN_DIMS.items():
        for tag, batch in BATCH.items():
            assert golden[f"{arch}.{tag}.pooled"].shape == (batch, dim)
            assert golden[f"{arch}.{tag}.embedding"].shape == (batch, dim)
            assert golden[f"{arch}.{tag}.logits"].shape == (batch, 527)
            assert golden[f"{arch}.{tag}.clipwise"].shape == (batch, 527)
    for tag, frames in (("1s", 101), ("5s", 501), ("10s", 1001)):
        assert golden[f"frontend.{tag}.logmel"].shape == (BATCH[tag], 1, frames, 64)
    assert golden["frontend.melW"].shape == (513, 64)
    assert golden["frontend.stft_real_rows"].shape == (17, 1, 1024)
    assert golden["vipann_flipout.5s.clipwise"].shape == (3, 527)
    assert golden["vipann_flip_tl50.5s.clipwise"].shape == (3, 50)
    assert golden["vipann_flip_tl50.5s.kl_loss_head"].shape == (1,)
    assert all(torch.isfinite(t).all() for t in golden.values())


def test_clipwise_is_sigmoid_of_logits():
    golden = load_golden()
    for arch in PANN_DIMS:
        for tag in BATCH:
            torch.testing.assert_close(
                torch.sigmoid(golden[f"{arch}.{tag}.logits"]),
                golden[f"{arch}.{tag}.clipwise"],
                rtol=0,
                atol=1e-6,
            )


def test_golden_inputs_shapes_and_determinism():
    a, b = golden_inputs(), golden_inputs()
    assert {k: tuple(v.shape) for k, v in a.items()} == {
        "5s": (3, 160000),
        "1s": (1, 32000),
        "10s": (1, 320000),
    }
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Pin the generator stream (torch's CPU Mersenne Twister): these are the golden inputs' values.
    assert a["5s"].dtype == torch.float32
    assert a["5s"][0, :3].tolist() == [-0.01117185689508915, -0.04965901002287865, 0.016307370737195015]
    assert a["1s"][0, :3].tolist() == [-0.012285588309168816, 0.09672900289297104, -0.048665277659893036]
    assert a["10s"][0, :3].tolist() == [-0.021978246048092842, 0.13009384274482727, -0.018255580216646194]


def test_key_lists_load():
    for arch, stem in ARCH_KEY_LISTS.items():
        model, specs = load_keys(arch)
        assert (model, len(specs)) == (load_keys(stem + ".json")[0], len(load_keys(stem)[1]))
        assert {kind for *_, kind in specs} <= {"parameter", "buffer"}
    assert len(load_keys("resnet54")[1]) == 348
    with pytest.raises(FileNotFoundError, match="available"):
        load_keys("no_such_list")


@pytest.mark.parametrize("list_name", LISTS)
def test_seeded_weights_match_fingerprints(list_name):
    entry = FINGERPRINTS[list_name]
    model, specs = load_keys(entry["key_list"])
    assert model == entry["model"]
    expected = entry["keys"]
    num_classes = entry["num_classes"]
    state = seeded_state_dict(specs, model, seed=0, num_classes=num_classes, only=expected)
    assert set(state) == set(expected)
    for name, fp in expected.items():
        t = state[name]
        values = t.double().flatten()
        # |sum| <= sqrt(n * sumsq); measuring the sum's error against that bound keeps the check
        # meaningful for tensors whose sum is ~0 (e.g. the imaginary STFT kernel).
        scale = math.sqrt(values.numel() * fp["sumsq"]) if fp["sumsq"] > 0 else 1.0
        assert abs(values.sum().item() - fp["sum"]) <= 1e-6 * scale + 1e-12, name
        assert values.square().sum().item() == pytest.approx(fp["sumsq"], rel=1e-6, abs=1e-12), name
        first4 = values[:4].tolist()
        atol = 1e-7 if name in FRONTEND_KEYS else 0.0  # the front end is rebuilt, not drawn
        assert first4 == pytest.approx(fp["first4"], rel=0, abs=atol), name


def test_seeded_state_dict_is_complete_and_typed():
    model, specs = load_keys("cnn6")
    state = seeded_state_dict(specs, model)
    assert list(state) == [name for name, *_ in specs]
    for name, shape, dtype, _ in specs:
        assert tuple(state[name].shape) == shape and state[name].dtype == dtype, name


def test_seeded_state_dict_rules():
    _, specs = load_keys("vipann_flip_tl50")
    picked = ["resnet.layer1.0.conv1.mu_kernel", "resnet.layer1.0.conv1.rho_kernel", "fc_audioset.mu_bias"]
    state = seeded_state_dict(specs, "ResNet54", only=picked, flipout_rho=-7.0)
    assert torch.all(state["resnet.layer1.0.conv1.rho_kernel"] == -7.0)
    assert state["fc_audioset.mu_bias"].shape == (50,)
    _, det_specs = load_keys("resnet54")
    det = seeded_state_dict(det_specs, "ResNet54", only=["resnet.layer1.0.conv1.weight", "fc_audioset.bias"])
    # A Flipout mean equals the seeded deterministic weight it replaces.
    assert torch.equal(state["resnet.layer1.0.conv1.mu_kernel"], det["resnet.layer1.0.conv1.weight"])
    # num_classes draws a fresh tensor; it is not a slice of the 527-class one.
    fresh = seeded_state_dict(det_specs, "ResNet54", num_classes=50, only=["fc_audioset.bias"])["fc_audioset.bias"]
    assert fresh.shape == (50,) and not torch.equal(fresh, det["fc_audioset.bias"][:50])
    with pytest.raises(KeyError, match="not in the key list"):
        seeded_state_dict(det_specs, "ResNet54", only=["nope.weight"])
