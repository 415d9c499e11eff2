"""The embedded default end to end: the shipped demo zoo, the generated corpus and the report."""

import json
from pathlib import Path

import pytest

import vipann
from vipann.cli import main


@pytest.mark.parametrize("method", ["det", "drop", "flip", "detflip"])
def test_demo_zoo_loads_from_the_package(method):
    model = vipann.from_pretrained(f"{method}-demo")
    cfg = model.pretrained_cfg
    assert model.method == method and cfg.weights == "package" and model.pretrained_source == f"package:{method}-demo"
    assert cfg.labels[0] == "pure tone" and model.num_classes == 20 and cfg.multilabel


@pytest.mark.parametrize("method", ["det", "drop", "flip", "detflip"])
def test_demo_zoo_was_trained_on_the_current_generator(method):
    # A change to the generated corpus must come with a rebuilt zoo (scripts/build_demo_zoo.sh):
    # the shipped labels are the generator's and the provenance names the generator version.
    from vipann.datasets.synthetic import AUDIOSET_CLASSES, GENERATOR_VERSION

    cfg = vipann.from_pretrained(f"{method}-demo").pretrained_cfg
    assert tuple(cfg.labels) == tuple(AUDIOSET_CLASSES)
    config = json.loads((Path(vipann.__file__).parent / "data" / "zoo" / f"{method}-demo" / "config.json").read_text())
    assert f"mini-audioset-v{GENERATOR_VERSION}-" in config["provenance"]


def test_demo_quick_writes_the_report(tmp_path, monkeypatch):
    monkeypatch.setenv("VIPANN_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quick"]) == 0
    report = (out / "report.md").read_text()
    for heading in ("Table 3", "Table 4", "Table 5", "Table 1", "Does the method work", "Calibration methods compared"):
        assert heading in report
    for label in (
        "Base (det)",
        "MC dropout",
        "Flip (VI)",
        "Det-Flip (VI head)",
        "Deep ensemble",
        "SNGP",
        "Temperature scaling",
    ):
        assert f"| {label} |" in report
    for label in ("Laplace (last layer)", "Laplace (fc1 + classifier)", "IVON"):
        assert f"| {label} |" in report
    assert "Laplace (last layer) vs Flip: ECE" in report and "ms / clip" in report
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 8
    checks = json.loads((out / "checks.json").read_text())
    assert checks and all({"claim", "holds", "detail"} <= set(c) for c in checks)
    for method in ("det", "drop", "flip", "detflip"):
        assert (out / "pretrained" / f"{method}-demo" / "retention.png").is_file()
        assert (out / "transfer" / method / "fold1" / "finetuned" / "metrics.json").is_file()
    assert (out / "compare" / "methods" / "base" / "det" / "fold1" / "fixed" / "laplace-last_layer-kron").is_dir()
