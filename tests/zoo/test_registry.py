import dataclasses
import json

import pytest

import vipann
from vipann.datasets.labels import LABEL_SETS, get_labels
from vipann.models import METHODS
from vipann.models.families import all_architectures, family_of
from vipann.zoo.registry import (
    _REGISTRY,
    PretrainedCfg,
    get_pretrained_cfg,
    list_models,
    register_model,
    split_model_name,
    zoo_table,
)

ALL = list_models()


def test_registry_covers_every_arch_and_method():
    for arch in all_architectures():
        for method in METHODS:
            assert f"{method}-{arch}" in ALL
    assert "flip-resnet54" in ALL and "drop-cnn14" in ALL


@pytest.mark.parametrize("name", ALL)
def test_every_entry_follows_the_schema(name):
    cfg = get_pretrained_cfg(name)
    cfg.validate()
    assert cfg.name == name
    assert len(cfg.labels) == cfg.num_classes
    spec = family_of(cfg.arch).architectures[cfg.arch]
    assert cfg.sample_rate == cfg.frontend["sample_rate"] == spec.frontend.sample_rate
    json.dumps(cfg.to_dict())  # serialisable for config.json
    if cfg.weights in ("hub", "release", "vipann", "moped"):
        assert cfg.hf_hub_id == f"vipann/{name}"
        assert cfg.convert_command().startswith("vipann convert ")
        assert cfg.source is not None and cfg.source_checkpoint == cfg.source.filename
    if cfg.weights == "package":
        assert vipann.from_pretrained(name).num_classes == cfg.num_classes
    if cfg.method == "det":
        assert cfg.default_num_samples == 1
    else:
        assert cfg.default_num_samples > 1


def test_audioset_entries_metadata():
    cfg = get_pretrained_cfg("flip-resnet54")
    assert cfg.multilabel and cfg.num_classes == 527 and cfg.sample_rate == 32000
    assert cfg.labels[0] == "Speech" and cfg.labels[-1] == "Field recording"
    assert cfg.metrics["audioset"]["mAP"] == pytest.approx(0.415)
    assert cfg.source_checkpoint == "flipout.pth"
    assert get_pretrained_cfg("det-resnet54").source_checkpoint == "ResNet54_mAP=0.429.pth"


def test_schema_rejects_bad_entries():
    good = get_pretrained_cfg("det-tiny")
    for change, match in [
        (dict(name="det-tinyx"), "does not match"),
        (dict(default_num_samples=5), "exactly 1 for det"),
        (dict(license="gpl"), "license"),
        (dict(label_set="esc50"), "does not have 10 names") if good.num_classes != 50 else (dict(), ""),
        (dict(weights="hub"), "hf_hub_id"),
        (dict(metrics={"esc50": {"acc": 0.9}}), "metrics_source"),
        (dict(sample_rate=32000), "sample_rate"),
        (dict(weights="release"), "needs a source"),
        (dict(result="maybe"), "result must be one of"),
    ]:
        with pytest.raises(ValueError, match=match):
            dataclasses.replace(good, **change).validate()
    with pytest.raises(ValueError, match="already registered"):
        register_model(good)


# The published md5 sums of the PANNs release (Zenodo record 3987831), as the registry must record them.
PUBLISHED_MD5 = {
    "Cnn6_mAP=0.343.pth": "e25e26b84585b14c7754c91e48efc9be",
    "Cnn10_mAP=0.380.pth": "bfb1f1f9968938fa8ef4012b8471f5f6",
    "Cnn14_mAP=0.431.pth": "541141fa2ee191a88f24a3219fff024e",
    "Cnn14_DecisionLevelMax_mAP=0.385.pth": "70539c43c18b6a289b3199c503a82c5a",
    "ResNet22_mAP=0.430.pth": "cf36d413096793c4e15dc752a3abd599",
    "ResNet38_mAP=0.434.pth": "bf12f36aaabac4e0855e22d3c3239c1b",
    "ResNet54_mAP=0.429.pth": "4f1f1406d37a29e2379916885e18c5f3",
    "MobileNetV1_mAP=0.389.pth": "a419303e1c88aa1b9d2ac3811563d371",
}


def test_audioset_entries_record_source_conversion_and_result():
    seen = set()
    for name in list_models("*"):
        cfg = get_pretrained_cfg(name)
        if cfg.label_set != "audioset":
            assert cfg.source is None and cfg.weights in ("package", "none")
            continue
        if cfg.conversion == "efficientat":  # tests/zoo/test_efficientat_release.py
            assert cfg.source.first_use and cfg.source.url.startswith("https://github.com/fschmid56/EfficientAT/")
            assert cfg.weights == ("release" if cfg.method in ("det", "drop") else "moped")
            continue
        if cfg.method in ("det", "drop"):
            assert (cfg.weights, cfg.conversion, cfg.result) == ("release", "panns", "exact")
            assert cfg.source.md5 == PUBLISHED_MD5[cfg.source.filename]
            quoted = cfg.source.filename.replace("=", "%3D")
            assert cfg.source.url == f"https://zenodo.org/records/3987831/files/{quoted}?download=1"
            seen.add(cfg.source.filename)
        elif name == "flip-resnet54":
            assert (cfg.weights, cfg.conversion, cfg.result) == ("vipann", "vipann", "not-public")
            assert cfg.source.filename == "flipout.pth" and cfg.source.url is None and cfg.source.md5 is None
            assert cfg.source.page == "https://nps.box.com/s/6ngybfd8b5jh5j2yd1mt1jz07kuvwhgq"
        else:
            assert (cfg.weights, cfg.result) == ("moped", "not-public") and cfg.metrics == {}
            assert "MOPED-initialised, not trained" in cfg.provenance
    assert seen == set(PUBLISHED_MD5)
    cnn14, dlmax = get_pretrained_cfg("det-cnn14").source, get_pretrained_cfg("det-cnn14-dlmax").source
    assert cnn14.size == dlmax.size == 327_428_481 and get_pretrained_cfg("det-cnn10").source.size == 25_237_595
    assert dlmax.sha256 == "dd3b4043a87d4ec13df8082c0fcfee3fb5084151808e47e060987a95eabdd142"


def test_zoo_table_says_how_each_entry_loads(monkeypatch):
    monkeypatch.setitem(_REGISTRY, "det-cnn6", dataclasses.replace(get_pretrained_cfg("det-cnn6"), weights="hub"))
    rows = {line.split("|")[1].strip(" `"): line for line in zoo_table().splitlines()[2:]}
    assert "| from the Hub (`vipann/det-cnn6`) |" in rows["det-cnn6"]
    assert "| from the original release, converted on first use |" in rows["drop-cnn14"]
    assert (
        "[Cnn14_mAP=0.431.pth](https://zenodo.org/records/3987831/files/Cnn14_mAP%3D0.431.pth?download=1)"
        in (rows["drop-cnn14"])
    )
    assert "| needs VI-PANN's `flipout.pth` |" in rows["flip-resnet54"]
    assert "| no trained weights published (untrained MOPED on request) |" in rows["flip-cnn14"]
    assert "| ships with vipann |" in rows["flip-demo"] and "| architecture only |" in rows["det-tiny"]


def test_list_models_patterns():
    assert list_models("flip-*") == sorted(n for n in ALL if n.startswith("flip-"))
    assert "det-resnet54" in list_models("*resnet54")
    assert list_models("*-tiny", weights="none") == ["det-tiny", "detflip-tiny", "drop-tiny", "flip-tiny"]
    assert list_models("*-cnn14", weights="release") == ["det-cnn14", "drop-cnn14"]
    assert list_models("nothing-*") == []


def test_unknown_names_suggest_close_matches():
    with pytest.raises(ValueError, match="did you mean: flip-resnet54"):
        get_pretrained_cfg("flip-resnet45")
    with pytest.raises(ValueError, match="did you mean"):
        vipann.create_model("flipresnet54")
    with pytest.raises(ValueError, match="<method>-<arch>"):
        split_model_name("resnet54")
    assert split_model_name("flip-resnet54.esc50") == ("flip", "resnet54", "esc50")


def test_from_pretrained_names_the_repo_and_the_convert_command():
    with pytest.raises(RuntimeError) as info:
        vipann.from_pretrained("flip-resnet54")
    message = str(info.value)
    assert "vipann/flip-resnet54" in message
    assert "vipann convert vipann flipout.pth --name flip-resnet54" in message
    with pytest.raises(ValueError, match="hf-hub:org/model"):
        vipann.from_pretrained("org/model")
    with pytest.raises(ValueError, match="did you mean"):
        vipann.from_pretrained("flip-resnet55")
    with pytest.raises(RuntimeError, match="without pretrained weights"):
        vipann.from_pretrained("det-tiny")


def test_create_model_attaches_metadata_and_changes_classes():
    model = vipann.create_model("drop-tiny", num_classes=4)
    assert model.num_classes == 4 and model.pretrained_cfg.num_classes == 4
    assert model.pretrained_cfg.labels == ("class_0", "class_1", "class_2", "class_3")
    assert model.pretrained_cfg.metrics == {}


def test_with_classes_labels():
    cfg = get_pretrained_cfg("det-tiny").with_classes(2, ("a", "b"))
    assert cfg.labels == ("a", "b")
    cfg.validate()
    with pytest.raises(ValueError, match="label names"):
        get_pretrained_cfg("det-tiny").with_classes(3, ("a", "b"))


@pytest.mark.parametrize("label_set", sorted(LABEL_SETS))
def test_label_sets(label_set):
    names = get_labels(label_set)
    assert len(names) == LABEL_SETS[label_set][1] and len(set(names)) == len(names)
    with pytest.raises(ValueError, match="unknown label set"):
        get_labels("imagenet")
    assert isinstance(PretrainedCfg, type)
