import dataclasses
import json

import pytest

import vipann
from vipann.datasets.labels import LABEL_SETS, get_labels
from vipann.models import METHODS
from vipann.models.families import all_architectures, family_of
from vipann.zoo.registry import PretrainedCfg, get_pretrained_cfg, list_models, register_model, split_model_name

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
    if cfg.weights in ("hub", "convert"):
        assert cfg.hf_hub_id == f"vipann/{name}"
        assert cfg.convert_command().startswith("vipann convert ")
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
    ]:
        with pytest.raises(ValueError, match=match):
            dataclasses.replace(good, **change).validate()
    with pytest.raises(ValueError, match="already registered"):
        register_model(good)


def test_list_models_patterns():
    assert list_models("flip-*") == sorted(n for n in ALL if n.startswith("flip-"))
    assert "det-resnet54" in list_models("*resnet54")
    assert list_models("*-tiny", weights="none") == ["det-tiny", "detflip-tiny", "drop-tiny", "flip-tiny"]
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
