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
