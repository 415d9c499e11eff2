import pytest
import torch
from _golden import load_keys, seeded_state_dict

import vipann
import vipann.zoo.convert
from vipann.layers import flipout_layers
from vipann.models.frontend import FrontendConfig, mel_filterbank, stft_kernels
from vipann.zoo.checkpoint import CheckpointError, read_torch_checkpoint
from vipann.zoo.convert import (
    FrontendMismatchError,
    check_frontend,
    from_panns_checkpoint,
    from_vipann_checkpoint,
    moped,
)


def _cnn10_checkpoint(num_classes=None):
    name, keys = load_keys("cnn10")
    return {
        "iteration": 10,
        "model": seeded_state_dict(keys, name, frontend=FrontendConfig(), num_classes=num_classes),
        "sampler": {},
    }


@pytest.fixture(scope="module")
def cnn10():
    return _cnn10_checkpoint()


def test_pth_file_any_method(tmp_path, cnn10):
    path = tmp_path / "Cnn10_mAP=0.380.pth"
    torch.save(cnn10, path)
    x = 0.1 * torch.randn(2, 32000, generator=torch.Generator().manual_seed(0))
    det = from_panns_checkpoint(path, "det-cnn10")
    assert not det.training and det.pretrained_cfg.name == "det-cnn10"
    with torch.no_grad():
        ref = det(x)
        for method in ("drop", "flip", "detflip"):
            model = from_panns_checkpoint(path, f"{method}-cnn10")
            torch.testing.assert_close(model(x), ref, atol=1e-5, rtol=1e-5)  # eval = posterior mean
    flip = from_panns_checkpoint(path, "flip-cnn10", moped_delta=0.5)
    layer = dict(flipout_layers(flip))["conv_block1.conv1"]
    w = cnn10["model"]["conv_block1.conv1.weight"]
    torch.testing.assert_close(layer.mu_kernel, w)
    torch.testing.assert_close(torch.nn.functional.softplus(layer.rho_kernel), 0.5 * w.abs(), rtol=1e-4, atol=1e-8)


def test_checkpoint_classes_are_kept(cnn10):
    model = from_panns_checkpoint(_cnn10_checkpoint(num_classes=50), "det-cnn10")
    assert model.num_classes == 50 and model.pretrained_cfg.num_classes == 50
    assert model.pretrained_cfg.metrics == {}


def test_missing_unexpected_and_misshaped_keys_are_named(cnn10):
    sd = dict(cnn10["model"])
    sd.pop("conv_block2.bn1.running_var")
    sd["extra.weight"] = torch.zeros(1)
    sd["fc1.bias"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as info:
        from_panns_checkpoint(sd, "det-cnn10")
    msg = str(info.value)
    assert "conv_block2.bn1.running_var" in msg and "extra.weight" in msg and "fc1.bias (3,) vs (512,)" in msg


def test_wrong_architecture_is_reported(cnn10):
    with pytest.raises(CheckpointError, match="does not fit det-cnn14"):
        from_panns_checkpoint(cnn10, "det-cnn14")


def test_frontend_mismatch_names_the_parameters(cnn10):
    sd = dict(cnn10["model"])
    sd["logmel_extractor.melW"] = mel_filterbank(16000, 1024, 64, 50.0, 8000.0)
    with pytest.raises(FrontendMismatchError, match=r"sample_rate=16000, fmin=50, fmax=8000"):
        from_panns_checkpoint(sd, "det-cnn10")
    sd["logmel_extractor.melW"] = torch.zeros(513, 128)
    with pytest.raises(FrontendMismatchError, match="128 mel bins"):
        check_frontend(sd, FrontendConfig())
    real, imag = stft_kernels(512)
    sd.update(
        {
            "spectrogram_extractor.stft.conv_real.weight": real,
            "spectrogram_extractor.stft.conv_imag.weight": imag,
        }
    )
    with pytest.raises(FrontendMismatchError, match="window_size=512"):
        check_frontend(sd, FrontendConfig())
    # the right config is accepted, and a checkpoint without front-end keys is allowed
    fe16 = FrontendConfig(sample_rate=16000, window_size=512, hop_size=160, fmax=8000.0)
    sd["logmel_extractor.melW"] = mel_filterbank(16000, 512, 64, 50.0, 8000.0)
    assert check_frontend(sd, fe16) is True
    assert check_frontend({"fc1.weight": torch.zeros(1)}, FrontendConfig()) is False


def test_unreadable_and_truncated_files(tmp_path, cnn10):
    path = tmp_path / "ok.pth"
    torch.save(cnn10, path)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"truncated\.pth"):
        read_torch_checkpoint(truncated)
    with pytest.raises(FileNotFoundError):
        read_torch_checkpoint(tmp_path / "missing.pth")
    (tmp_path / "list.pth").write_bytes(b"")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="holds no state dict"):
        read_torch_checkpoint(tmp_path / "list.pth")


def test_dataparallel_prefix_is_stripped(cnn10):
    sd = {"module." + k: v for k, v in cnn10["model"].items()}
    assert from_panns_checkpoint(sd, "det-cnn10").num_classes == 527


def test_moped_prior_choice_survives_save_load(cnn10):
    det = from_panns_checkpoint(cnn10, "det-cnn10")
    flip = moped(det, "detflip", delta=0.1, prior="weights")
    assert flip.method == "detflip" and flip.pretrained_cfg.name == "detflip-cnn10"
    torch.testing.assert_close(flip.fc1.prior_weight_mu, det.fc1.weight)
    restored = vipann.create_model("detflip-cnn10")
    restored.load_state_dict(flip.state_dict())
    torch.testing.assert_close(restored.fc1.prior_weight_sigma, 0.1 * det.fc1.weight.abs().clamp_min(1e-20))
    torch.testing.assert_close(vipann.layers.kl_loss(restored), vipann.layers.kl_loss(flip))
    with pytest.raises(ValueError, match="det or drop"):
        moped(flip, "flip")
    with pytest.raises(ValueError, match="'flip' or 'detflip'"):
        moped(det, "drop")


def test_vipann_deterministic_and_wrong_method(cnn10):
    # deterministic.pth has plain PANNs keys; a flipout layout converts only to flip
    name, keys = load_keys("vipann_flipout")
    head_only = {
        k: v
        for k, v in seeded_state_dict(
            keys, name, frontend=FrontendConfig(), only=["conv_block1.conv1.mu_kernel"]
        ).items()
    }
    with pytest.raises(CheckpointError, match="converts only to a flip model"):
        from_vipann_checkpoint(head_only, "detflip-resnet54")
    assert from_vipann_checkpoint(cnn10, "det-cnn10").method == "det"


def _bt_params():
    return {
        "prior_mu": 0.0,
        "prior_sigma": 1.0,
        "posterior_mu_init": 0.0,
        "posterior_rho_init": -3.0,
        "type": "Flipout",
        "moped_enable": False,
        "moped_delta": 0.5,
    }


def test_bayesian_torch_dnn_to_bnn_state_dicts():
    bt = pytest.importorskip("bayesian_torch.models.dnn_to_bnn")
    torch.manual_seed(0)
    det = vipann.create_model("det-tiny").eval()
    bt_model = vipann.create_model("det-tiny").eval()
    bt.dnn_to_bnn(bt_model, _bt_params())  # converts every conv and linear (children of the root too)
    sd = bt_model.state_dict()
    assert any(k.endswith("conv_block1.conv1.mu_kernel") for k in sd)
    model = vipann.zoo.convert.from_bayesian_torch(sd)
    assert model.method == "flip" and model.pretrained_cfg.name == "flip-tiny"
    torch.testing.assert_close(vipann.layers.kl_loss(model), bt.get_kl_loss(bt_model))
    # mean mode equals a deterministic network carrying the posterior means
    means = {
        k.replace("mu_kernel", "weight").replace("mu_weight", "weight").replace("mu_bias", "bias"): v
        for k, v in sd.items()
        if "rho_" not in k
    }
    det.load_state_dict(means)
    x = 0.1 * torch.randn(2, 16000)
    with torch.no_grad():
        torch.testing.assert_close(model(x), det(x))
    # only the head converted (VI-PANN's Det-Flip): a detflip model
    head_only = vipann.create_model("det-tiny")
    head_only.fc1 = bt.bnn_linear_layer(_bt_params(), head_only.fc1)
    head_only.fc_audioset = bt.bnn_linear_layer(_bt_params(), head_only.fc_audioset)
    detflip = vipann.zoo.convert.from_bayesian_torch(head_only.state_dict())
    assert detflip.method == "detflip"
    with pytest.raises(CheckpointError, match="converts only to a detflip"):
        vipann.zoo.convert.from_bayesian_torch(head_only.state_dict(), "flip-tiny")
    with pytest.raises(CheckpointError, match="no Flipout layers"):
        vipann.zoo.convert.from_bayesian_torch(det.state_dict())


def test_detect_architecture(cnn10):
    from vipann.zoo.convert import detect_architecture

    assert detect_architecture(cnn10["model"]) == "cnn10"
    with pytest.raises(CheckpointError, match="match none"):
        detect_architecture({"fc1.weight": torch.zeros(2, 2)})


# -- Cnn14 and Cnn14_DecisionLevelMax: same tensors, told apart by the file name or the name asked for --


@pytest.mark.parametrize(
    ("filename", "arch"),
    [
        ("Cnn14_mAP=0.431.pth", "cnn14"),
        ("Cnn14_DecisionLevelMax_mAP=0.385.pth", "cnn14-dlmax"),
        ("Cnn14_DecisionLevelMax.pth", "cnn14-dlmax"),  # as panns-inference saves it
        ("cnn14_decisionlevelmax (1).pth", "cnn14-dlmax"),
        ("Cnn14_finetuned.pth", "cnn14"),
        ("Cnn10_mAP=0.380.pth", "cnn10"),
        ("ResNet54_mAP=0.429.pth", "resnet54"),
        ("MobileNetV1_mAP=0.389.pth", "mobilenetv1"),
        ("flipout.pth", None),
        ("model.pth", None),
        ("Cnn140.pth", None),
    ],
)
def test_architecture_from_filename(filename, arch):
    from vipann.zoo.convert import architecture_from_filename

    assert architecture_from_filename(f"/some/dir/{filename}") == arch


@pytest.mark.parametrize(
    "filename",
    [
        "Cnn14_DecisionLevelAtt_mAP=0.425.pth",
        "Cnn14_DecisionLevelAvg.pth",
        "Cnn14_16k_mAP=0.438.pth",
        "Cnn14_8k_mAP=0.416.pth",
        "Wavegram_Logmel_Cnn14_mAP=0.439.pth",
    ],
)
def test_unimplemented_variants_are_refused_by_file_name(filename):
    from vipann.zoo.convert import architecture_from_filename

    with pytest.raises(CheckpointError, match="a PANNs variant vipann does not implement"):
        architecture_from_filename(filename)


@pytest.fixture(scope="module")
def cnn14_state():
    name, keys = load_keys("cnn14")
    return seeded_state_dict(keys, name, frontend=FrontendConfig())


@pytest.fixture(scope="module")
def dlmax_file(tmp_path_factory, cnn14_state):
    """A full-size seeded Cnn14 state dict under the released Cnn14_DecisionLevelMax file name."""
    path = tmp_path_factory.mktemp("dl") / "Cnn14_DecisionLevelMax_mAP=0.385.pth"
    torch.save({"iteration": 0, "model": cnn14_state}, path)
    return path


def test_decision_level_max_file_converts_and_says_what_it_becomes(dlmax_file, cnn14_state, caplog):
    from vipann.zoo.convert import default_name, detect_architecture

    assert default_name(dlmax_file, cnn14_state, "panns") == "det-cnn14-dlmax"
    assert detect_architecture(cnn14_state, dlmax_file) == "cnn14-dlmax"
    with caplog.at_level("INFO", logger="vipann.zoo.convert"):
        det = from_panns_checkpoint(dlmax_file)  # the name follows from the file
    assert f"{dlmax_file} is PANNs Cnn14_DecisionLevelMax; it becomes vipann det-cnn14-dlmax" in caplog.text
    assert det.pretrained_cfg.name == "det-cnn14-dlmax" and det.arch == "cnn14-dlmax" and not det.training
    x = 0.1 * torch.randn(2, 20000, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = det(x)
        framewise = det.framewise(x)
        assert framewise.shape == (2, 1 + 20000 // 320, 527)
        torch.testing.assert_close(ref, framewise.amax(1), atol=0, rtol=0)
        # The same tensors as a clip-level Cnn14 give another model (the head is applied per segment).
        clip = from_panns_checkpoint(cnn14_state, "det-cnn14")
        assert not torch.allclose(clip(x), ref, atol=1e-3)
        for method in ("drop", "flip", "detflip"):
            model = from_panns_checkpoint(dlmax_file, f"{method}-cnn14-dlmax")
            assert model.pretrained_cfg.name == f"{method}-cnn14-dlmax"
            torch.testing.assert_close(model(x), ref, atol=1e-5, rtol=1e-5)  # eval = posterior mean


def test_cnn14_shaped_state_dict_without_a_name_is_ambiguous(cnn14_state):
    with pytest.raises(CheckpointError) as info:
        from_panns_checkpoint(cnn14_state)
    message = str(info.value)
    assert "fit 2 architectures with the same weights: PANNs Cnn14, PANNs Cnn14_DecisionLevelMax" in message
    assert "--name det-cnn14 (PANNs Cnn14) or det-cnn14-dlmax (PANNs Cnn14_DecisionLevelMax)" in message
    assert "Cnn14_mAP=0.431.pth / Cnn14_DecisionLevelMax_mAP=0.385.pth" in message
    assert from_panns_checkpoint(cnn14_state, "det-cnn14-dlmax").arch == "cnn14-dlmax"
    assert from_panns_checkpoint(cnn14_state, "det-cnn14").arch == "cnn14"


def test_file_name_contradicting_the_requested_name_is_refused(dlmax_file):
    with pytest.raises(CheckpointError, match=r"\(by its file name\), but 'det-cnn14' is a PANNs Cnn14"):
        from_panns_checkpoint(dlmax_file, "det-cnn14")


def test_keys_that_fit_several_widths_pick_by_shape(cnn10):
    # Cnn10 and the demo network have the same key names; the shapes decide.
    from vipann.zoo.convert import detect_architecture

    assert detect_architecture(cnn10["model"]) == "cnn10"
    demo = vipann.create_model("det-demo").state_dict()
    assert detect_architecture(demo) == "demo"
