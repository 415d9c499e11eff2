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


def test_demo_writes_report(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--quick"]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "Table 1 reproduced exactly: **yes**" in report
    assert "| flip | 50 | 206,620,004 | 206,620,004 | 26,653,313,032 | 26,653,313,032 |" in report
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_parser_requires_a_command():
    with pytest.raises(SystemExit):
        main([])


def test_convert_push_and_card(tmp_path, capsys):
    import torch
    from _golden import load_keys, seeded_state_dict

    import vipann
    from vipann.frontend import FrontendConfig

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
    (tmp_path / "Cnn14_DecisionLevelMax_mAP=0.385.pth").write_bytes(path.read_bytes())
    assert main(["convert", "auto", str(tmp_path / "Cnn14_DecisionLevelMax_mAP=0.385.pth")]) == 2
    assert "does not implement" in capsys.readouterr().err
