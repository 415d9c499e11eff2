from importlib import resources

import pytest
import yaml

import vipann
from vipann.models.families import family_of
from vipann.zoo.cards import CARD_FIELDS, render_card, stochastic_layers, write_card
from vipann.zoo.registry import get_pretrained_cfg, list_models
from vipann.zoo.serialization import README_NAME, read_config, save_pretrained

PUBLISHED = (
    "det-resnet54",
    "drop-resnet54",
    "flip-resnet54",
    "detflip-resnet54",
    "det-cnn14",
    "drop-cnn14",
    "det-cnn14-dlmax",
    "drop-cnn14-dlmax",
)


def _front_matter(card):
    assert card.startswith("---\n")
    head, sep, body = card[4:].partition("\n---\n")
    assert sep, "the YAML front matter is not closed"
    return yaml.safe_load(head), body


@pytest.mark.parametrize("name", list_models())
def test_every_registry_entry_renders(name):
    cfg = get_pretrained_cfg(name)
    meta, body = _front_matter(render_card(cfg))
    assert meta["library_name"] == "vipann"
    assert meta["license"] == cfg.license
    assert meta["pipeline_tag"] == "audio-classification"
    assert "audio-classification" in meta["tags"] and ("bayesian" in meta["tags"]) == (cfg.method != "det")
    assert isinstance(meta["datasets"], list)
    if cfg.metrics:
        (model,) = meta["model-index"]
        assert model["name"] == name
        for result in model["results"]:
            assert result["task"]["type"] == "audio-classification"
            assert result["dataset"]["type"] in cfg.metrics
            assert result["source"]["name"] == cfg.metrics_source
            values = {m["name"]: m["value"] for m in result["metrics"]}
            assert values["Monte-Carlo samples"] == cfg.default_num_samples
            assert len(values) == len(cfg.metrics[result["dataset"]["type"]]) + 1
    else:
        assert "model-index" not in meta
    assert f"# {name}\n" in body
    assert stochastic_layers(cfg.method, cfg.arch, cfg.model_args) in body
    for section in ("## Usage", "## Model details", "## Evaluation", "## Provenance", "## Credits", "## Citation"):
        assert section in body, section
    assert "fischer2024vipann" in body
    if family_of(cfg.arch).name == "efficientat":  # EfficientAT is credited and cited, PANNs is not
        assert "schmid2023efficient" in body and "howard2019mobilenetv3" in body and "kong2020panns" not in body
        assert ("schmid2024dynamic" in body) == cfg.arch.startswith("dymn")
        assert "MIT licence, https://github.com/fschmid56/EfficientAT" in body
    else:
        assert "kong2020panns" in body
    assert ("wen2018flipout" in body) == (cfg.method in ("flip", "detflip"))
    assert "${" not in body


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_models_have_prose(name):
    prose = resources.files("vipann").joinpath("data", "hub_cards", f"{name}.md")
    assert prose.is_file(), f"write vipann/data/hub_cards/{name}.md"
    text = prose.read_text(encoding="utf-8")
    for section in ("## What it is", "## Intended use", "## Limitations", "## How it was made"):
        assert section in text, section
    card = render_card(name)
    assert text.strip() in card
    assert "## About" not in card  # the generic prose is not used


def test_ece_and_explicit_mc_samples_go_into_the_model_index():
    config = get_pretrained_cfg("flip-resnet54").to_dict()
    config["metrics"] = {"esc50": {"accuracy": 0.9, "ECE": 0.031, "num_samples": 50}}
    config["metrics_source"] = "vipann benchmarks"
    meta, body = _front_matter(render_card(config))
    (result,) = meta["model-index"][0]["results"]
    assert result["dataset"] == {"type": "esc50", "name": "ESC-50"}
    metrics = {m["type"]: m["value"] for m in result["metrics"]}
    assert metrics == {"accuracy": 0.9, "ece": 0.031, "mc_samples": 50}
    assert "| ESC-50 | Expected calibration error | 0.031 | 50 |" in body


@pytest.mark.parametrize("field", CARD_FIELDS)
def test_missing_field_raises(field):
    config = get_pretrained_cfg("flip-resnet54").to_dict()
    del config[field]
    with pytest.raises(ValueError, match=rf"missing \['{field}'\]"):
        render_card(config)


def test_empty_field_raises_and_unknown_inputs():
    config = get_pretrained_cfg("drop-cnn14").to_dict()
    config["provenance"] = ""
    with pytest.raises(ValueError, match="provenance"):
        render_card(config)
    with pytest.raises(TypeError):
        render_card(42)
    with pytest.raises(ValueError, match="did you mean"):
        render_card("flip-resnet55")


def test_card_from_a_saved_directory(tmp_path):
    model = vipann.create_model("drop-tiny", num_classes=3)
    path = save_pretrained(model, tmp_path / "m", card=False, extra_metadata={"note": "x"})
    assert not (path / README_NAME).exists()
    written = write_card(path)
    assert written == path / README_NAME
    meta, body = _front_matter(written.read_text())
    assert meta["library_name"] == "vipann"
    assert "3 classes" in body and "local-dir:./drop-tiny" in body  # not published: explicit source
    assert written.read_text() == render_card(read_config(path))
    # save_pretrained's own card is the same rendering
    again = save_pretrained(model, tmp_path / "m2")
    assert (again / README_NAME).read_text().split("# drop-tiny")[1] == written.read_text().split("# drop-tiny")[1]


def test_stochastic_layers_follow_the_model_arguments():
    assert "p=0.3 after the conv stages" in stochastic_layers("drop", "cnn14", {"conv_dropout": 0.3})
    assert "residual blocks is training-only" in stochastic_layers("drop", "resnet54")
    assert "after the conv stages" not in stochastic_layers("drop", "mobilenetv1")  # no conv dropout
    assert "backbone is deterministic" in stochastic_layers("detflip", "cnn14")
    with pytest.raises(ValueError, match="unknown method"):
        stochastic_layers("bayes", "cnn14")
