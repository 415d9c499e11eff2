import json

import pytest

from vipann.cli import main


def test_list_and_json(capsys):
    assert main(["list", "*-tiny"]) == 0
    out = capsys.readouterr().out
    assert "flip-tiny" in out and "det-resnet54" not in out
    assert main(["list", "flip-resnet54", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert entries[0]["hf_hub_id"] == "vipann/flip-resnet54" and len(entries[0]["frontend"]) == 9


def test_info_reports_table1_figures(capsys):
    assert (
        main(["info", "detflip-resnet54", "--num-classes", "50", "--seconds", "5", "--convention", "paper", "--json"])
        == 0
    )
    info = json.loads(capsys.readouterr().out)
    assert info["trainable_parameters"] == 107_639_588
    assert info["macs"] == 13_545_306_248
    assert info["stochastic_weights"] == 2048 * 2048 + 2048 + 2048 * 50 + 50


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["info", "flip-resnet45"]) == 2
    assert "did you mean: flip-resnet54" in capsys.readouterr().err


def test_table1_rows_are_exact():
    from vipann.demo import TABLE1, table1_rows

    for method, classes, params, paper_params, macs, paper_macs in table1_rows():
        assert params == paper_params == TABLE1[method, classes][0]
        assert macs == paper_macs


def test_predict_command(tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    good = tmp_path / "a.wav"
    sf.write(good, 0.1 * np.random.default_rng(0).standard_normal(32000), 16000)
    missing = tmp_path / "missing.wav"
    assert main(["predict", str(good), str(missing), "-m", "flip-demo", "-n", "3", "--top-k", "2", "--json"]) == 1
    captured = capsys.readouterr()
    assert "missing.wav" in captured.err
    import json as _json

    rows = _json.loads(captured.out)
    assert len(rows) == 1 and len(rows[0]["top"]) == 2 and rows[0]["num_samples"] == 3
    assert abs(rows[0]["total"] - rows[0]["aleatoric"] - rows[0]["epistemic"]) < 1e-5


def test_parser_requires_a_command():
    with pytest.raises(SystemExit):
        main([])


def test_convert_push_and_card(tmp_path, capsys):
    import torch
    from _golden import load_keys, seeded_state_dict

    import vipann
    from vipann.models.frontend import FrontendConfig

    name, keys = load_keys("cnn6")
    path = tmp_path / "Cnn6_mAP=0.343.pth"
    torch.save({"iteration": 1, "model": seeded_state_dict(keys, name, frontend=FrontendConfig())}, path)
    out = tmp_path / "det-cnn6"
    assert main(["convert", "auto", str(path), "--out", str(out)]) == 0
    assert "-> det-cnn6" in capsys.readouterr().out
    model = vipann.from_pretrained(f"local-dir:{out}")
    assert model.pretrained_cfg.name == "det-cnn6" and model.num_classes == 527
    flip_out = tmp_path / "flip-cnn6"
    assert main(["convert", "panns", str(path), "--name", "flip-cnn6", "--out", str(flip_out)]) == 0
    assert vipann.from_pretrained(str(flip_out)).method == "flip"
    assert main(["push", str(out), "--repo-id", "someone/det-cnn6", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "would upload to someone/det-cnn6@main" in printed and "model.safetensors" in printed
    assert main(["card", str(out), "--stdout"]) == 0
    assert "library_name: vipann" in capsys.readouterr().out
    # A file named as another PANNs class than its tensors is refused, and so is an unimplemented variant.
    (tmp_path / "Cnn14_DecisionLevelMax_mAP=0.385.pth").write_bytes(path.read_bytes())
    assert main(["convert", "auto", str(tmp_path / "Cnn14_DecisionLevelMax_mAP=0.385.pth")]) == 2
    assert "named as a PANNs Cnn14_DecisionLevelMax checkpoint but holds the tensors of PANNs Cnn6" in (
        capsys.readouterr().err
    )
    (tmp_path / "Cnn14_DecisionLevelAtt_mAP=0.425.pth").write_bytes(path.read_bytes())
    assert main(["convert", "auto", str(tmp_path / "Cnn14_DecisionLevelAtt_mAP=0.425.pth")]) == 2
    assert "Cnn14_DecisionLevelAtt, a PANNs variant vipann does not implement" in capsys.readouterr().err


def test_evaluate_with_other_classes_says_what_to_evaluate(tmp_path, capsys):
    from vipann.datasets.synthetic import make_downstream

    root = make_downstream(tmp_path / "downstream", clips_per_class_per_fold=1)
    out = tmp_path / "results"
    args = ["evaluate", "-m", "flip-demo", "--dataset", "synthetic_downstream", "--data-root", str(root)]
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "synthetic_downstream has 10 classes but the model 20" in err and "vipann example-data DIR" in err
    assert not out.exists()
