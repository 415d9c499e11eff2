"""EfficientAT release files into vipann models: keys, shapes, names, MOPED, saving, the registry entries."""

import functools

import pytest
import torch
from _golden_efficientat import synthetic_state_dict

import vipann
from vipann.layers import flipout_layers
from vipann.zoo.checkpoint import CheckpointError
from vipann.zoo.convert import from_efficientat_checkpoint, from_panns_checkpoint, is_efficientat_state_dict
from vipann.zoo.efficientat import efficientat_architecture, efficientat_name_from_filename
from vipann.zoo.entries_efficientat import CHECKSUM_NOTE, EFFICIENTAT_RELEASE
from vipann.zoo.registry import get_pretrained_cfg
from vipann.zoo.serialization import load_pretrained_dir, save_pretrained, verify_pretrained_dir

WAVE = 0.1 * torch.randn(1, 8000, generator=torch.Generator().manual_seed(5))


@functools.cache
def _weights(arch="mn04"):
    return synthetic_state_dict(arch)


def test_architecture_from_tensors_and_file_names():
    assert efficientat_architecture(_weights("mn04")) == "mn04"
    assert efficientat_architecture(_weights("dymn10")) == "dymn10"
    assert is_efficientat_state_dict(_weights("dymn10"))
    assert not is_efficientat_state_dict({"fc1.weight": torch.zeros(2, 2)})
    names = {f.filename: efficientat_name_from_filename(f.filename) for f in EFFICIENTAT_RELEASE.values()}
    assert names == {
        "mn04_as_mAP_432.pt": "mn04",
        "mn10_as_mAP_471.pt": "mn10",
        "mn20_as_mAP_478.pt": "mn20",
        "dymn10_as.pt": "dymn10",
    }
    assert efficientat_name_from_filename("model.pt") is None


def test_missing_unexpected_and_misshaped_keys_are_named():
    sd = dict(_weights())
    del sd["features.5.block.2.conc_se_layers.0.fc1.bias"]
    sd["features.5.extra"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"matches none of the EfficientAT architectures.*closest, mn04") as err:
        from_efficientat_checkpoint(sd, "det-mn04")
    assert "features.5.block.2.conc_se_layers.0.fc1.bias" in str(err.value) and "features.5.extra" in str(err.value)
    shaped = dict(_weights())
    shaped["features.16.0.weight"] = torch.zeros(100, 32, 1, 1)
    with pytest.raises(CheckpointError, match=r"features.16.0.weight"):
        from_efficientat_checkpoint(shaped)
    with pytest.raises(CheckpointError, match="an EfficientAT state dict, not a PANN one"):
        from_panns_checkpoint(_weights())
    with pytest.raises(CheckpointError, match="not an EfficientAT state dict"):
        from_efficientat_checkpoint({"fc1.weight": torch.zeros(2, 2), "fc_audioset.weight": torch.zeros(2, 2)})


def test_names_must_agree_with_the_tensors(tmp_path):
    with pytest.raises(CheckpointError, match="holds an EfficientAT mn04, not a mn10"):
        from_efficientat_checkpoint(_weights(), "drop-mn10")
    with pytest.raises(ValueError, match="unknown model name"):
        from_efficientat_checkpoint(_weights(), "drop-mn05")
    path = tmp_path / "mn10_as_mAP_471.pt"
    torch.save(_weights(), path)
    with pytest.raises(CheckpointError, match="named like an EfficientAT mn10 but its tensors are a mn04"):
        from_efficientat_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        from_efficientat_checkpoint(tmp_path / "absent.pt")


def test_release_file_converts_strictly_into_every_method(tmp_path):
    path = tmp_path / "mn04_as_mAP_432.pt"
    torch.save(_weights(), path)  # what EfficientAT publishes: a plain state dict
    det = from_efficientat_checkpoint(path)
    assert det.pretrained_cfg.name == "det-mn04" and not det.training
    assert torch.equal(det.fc1.weight, _weights()["classifier.2.weight"])
    assert torch.equal(det.fc_audioset.bias, _weights()["classifier.5.bias"])
    flip = from_efficientat_checkpoint(path, "flip-mn04", moped_delta=0.1)
    layers = dict(flipout_layers(flip))
    se = "features.4.block.2.conc_se_layers.0.fc2"
    assert torch.equal(layers[se].mu_w, _weights()[f"{se}.weight"])
    sigma = torch.nn.functional.softplus(layers[se].rho_w)
    torch.testing.assert_close(sigma, 0.1 * _weights()[f"{se}.weight"].abs(), atol=1e-6, rtol=1e-4)
    detflip = from_efficientat_checkpoint(path, "detflip-mn04")
    assert torch.equal(detflip.fc1.mu_w, det.fc1.weight)
    with torch.no_grad():
        torch.testing.assert_close(detflip(WAVE), det(WAVE), atol=1e-5, rtol=0)


def test_other_class_counts_keep_their_classifier():
    sd = dict(_weights())
    sd["classifier.5.weight"] = torch.randn(10, sd["classifier.5.weight"].shape[1])
    sd["classifier.5.bias"] = torch.zeros(10)
    model = from_efficientat_checkpoint(sd, "drop-mn04")
    assert model.num_classes == 10 and model.pretrained_cfg.num_classes == 10
    assert model.pretrained_cfg.labels == tuple(f"class_{i}" for i in range(10))


@pytest.mark.parametrize("name", ["drop-mn04", "flip-dymn10"])
def test_save_and_load_round_trip(tmp_path, name):
    model = from_efficientat_checkpoint(_weights(name.split("-")[1]), name)
    path = save_pretrained(model, tmp_path / name)
    config = verify_pretrained_dir(path)
    assert config["arch"] == model.arch and config["frontend"]["mel_bins"] == 128
    assert config["model_args"]["head_dropout"] == 0.2
    loaded = load_pretrained_dir(path)
    assert type(loaded) is type(model) and loaded.pretrained_cfg.name == name
    with torch.no_grad():
        assert torch.equal(loaded(WAVE), model(WAVE))
    readme = (path / "README.md").read_text()
    assert "https://github.com/fschmid56/EfficientAT" in readme and "schmid2023efficient" in readme
    small = load_pretrained_dir(path, num_classes=3)
    assert small.num_classes == 3 and small.fc_audioset.out_features == 3


def test_registry_entries_record_the_release():
    for arch, release in EFFICIENTAT_RELEASE.items():
        assert release.sha256 is None and release.md5 is None and release.first_use  # none is published
        assert release.url == f"https://github.com/fschmid56/EfficientAT/releases/download/v0.0.1/{release.filename}"
        for method in ("det", "drop", "flip", "detflip"):
            cfg = get_pretrained_cfg(f"{method}-{arch}")
            weights = "release" if method in ("det", "drop") else "moped"
            assert cfg.source_checkpoint == release.filename and cfg.weights == weights and cfg.license == "mit"
            assert CHECKSUM_NOTE in cfg.provenance and release.url in cfg.provenance
            assert cfg.convert_command() == (
                f"vipann convert efficientat {release.filename} --name {method}-{arch} --out ./{method}-{arch}"
            )
            assert cfg.sample_rate == 32000 and cfg.frontend["mel_bins"] == 128 and cfg.num_classes == 527
    assert get_pretrained_cfg("det-mn10").metrics == {"audioset": {"mAP": 0.471}}
    with pytest.raises(RuntimeError, match=r"flip-mn10.*moped_delta=0\.5"):
        vipann.from_pretrained("flip-mn10")
