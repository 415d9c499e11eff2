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
    import re

    from vipann.evaluation.claims import VERDICTS

    monkeypatch.setenv("VIPANN_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quick"]) == 0
    report = (out / "report.md").read_text()
    for heading in (
        "Table 3",
        "Table 4",
        "Table 5",
        "Table 1",
        "VI-PANN's statements, tested on this run",
        "Calibration methods compared",
    ):
        assert heading in report
    assert report.count("Monte-Carlo samples: S = ") == 2  # Tables 3 and 4 say how many and why
    assert "Training budget (Tables 4 and 5 alike)" in report
    assert not re.search(r"\| (\d+(?:\.\d+)?)[-–]\1 \|", report)  # no "2-2" ranges
    assert "det-demo: every clip has the same epistemic uncertainty" in report  # not scored, and why
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
    assert html.count("data:image/png;base64,") == 24  # 4 pre-trained and 4 transfer models x 3 figures
    assert "`" not in re.sub(r"data:image/png;base64,[^']*", "", html)  # markdown rendered: no literal backticks
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", html)
    assert [c.split(".")[0] for c in captions] == [f"Figure {i}" for i in range(1, 25)]
    assert len(set(captions)) == len(captions)
    for name in ("retention", "reliability", "ood_boxplots"):
        assert (out / "transfer" / "flip" / "fold1" / "finetuned" / f"{name}.png").is_file()
    checks = json.loads((out / "checks.json").read_text())
    assert len(checks) >= 20
    for c in checks:
        assert {"claim", "statement", "source", "expected", "interval", "verdict"} <= set(c)
        assert c["verdict"] in VERDICTS and c["expected"] in VERDICTS
        assert c["interval"]["lower"] <= c["interval"]["estimate"] <= c["interval"]["upper"]
    statements = {c["statement"] for c in checks}
    assert any("MC dropout" in s for s in statements) and any("epistemic uncertainty remains" in s for s in statements)
    for method in ("det", "drop", "flip", "detflip"):
        assert (out / "pretrained" / f"{method}-demo" / "retention.png").is_file()
        assert (out / "transfer" / method / "fold1" / "finetuned" / "metrics.json").is_file()
        # every transferred model is a loadable model directory
        exported = vipann.from_pretrained(f"local-dir:{out / 'transfer' / method / 'fold1' / 'finetuned' / 'export'}")
        assert exported.method == method and exported.num_classes == 10
        assert exported.pretrained_cfg.labels[0] == "siren sweep"
    scratch = vipann.from_pretrained(f"local-dir:{out / 'scratch' / 'det' / 'fold1' / 'fixed' / 'export'}")
    assert scratch.method == "det" and scratch.num_classes == 10
    assert (out / "compare" / "methods" / "base" / "det" / "fold1" / "fixed" / "laplace-last_layer-kron").is_dir()


def test_example_data_writes_a_dataset_and_a_model_that_fit(tmp_path, monkeypatch, capsys):
    from vipann.datasets import get_dataset
    from vipann.demo.example import STRATEGIES
    from vipann.train.transfer import STRATEGIES as RECIPE_STRATEGIES

    assert set(STRATEGIES) == set(RECIPE_STRATEGIES)
    monkeypatch.setenv("VIPANN_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "example"
    assert main(["example-data", str(out), "--strategy", "detflip", "--quick"]) == 0
    printed = capsys.readouterr().out
    model_dir = out / "detflip-demo-downstream"
    assert f"vipann evaluate -m local-dir:{model_dir} --dataset synthetic_downstream" in printed
    model = vipann.from_pretrained(f"local-dir:{model_dir}")
    dataset = get_dataset("synthetic_downstream", out / "downstream", sample_rate=model.sample_rate)
    assert model.method == "detflip" and model.pretrained_cfg.labels == tuple(dataset.class_names)
    assert model.pretrained_cfg.metrics["synthetic_downstream"]["accuracy"] >= 0.0
    assert "fold 1" in model.pretrained_cfg.provenance
    # the model directory is the recipe's fine-tuned export, byte for byte
    export = out / "transfer" / "detflip" / "fold1" / "finetuned" / "export"
    for name in ("model.safetensors", "config.json"):
        assert (model_dir / name).read_bytes() == (export / name).read_bytes()
    assert len(list((out / "ood").glob("*.wav"))) == 12
    # a folder of someone else's is never overwritten
    (tmp_path / "mine" / "downstream").mkdir(parents=True)
    (tmp_path / "mine" / "downstream" / "notes.txt").write_text("mine")
    assert main(["example-data", str(tmp_path / "mine"), "--quick"]) == 2
    assert "not generated by vipann.datasets.synthetic" in capsys.readouterr().err
    assert (tmp_path / "mine" / "downstream" / "notes.txt").read_text() == "mine"


def test_example_data_refuses_an_unknown_strategy(tmp_path):
    from vipann.demo.example import write_example_data

    with pytest.raises(ValueError, match="unknown strategy 'bayes'"):
        write_example_data(tmp_path, strategy="bayes")
    assert not any(tmp_path.iterdir())
