"""``vipann retention``: the printed curve is the metric of the data, and unscored measures say why."""

import re

import torch

import vipann.metrics as M
from vipann.cli import main
from vipann.evaluation import evaluate_runs, write_evaluation


def test_retention_prints_the_metric_of_the_data(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    probs = torch.sigmoid(2 * torch.randn(1, 1, 80, 6, generator=g))  # one run of one sample: epistemic is 0
    targets = (torch.rand(80, 6, generator=g) < 0.3).float()
    evaluation = evaluate_runs(probs, targets, multilabel=True, bootstrap=20)
    write_evaluation(evaluation, tmp_path / "run", probs=probs, targets=targets, plots=False)
    assert main(["retention", str(tmp_path / "run" / "predictions.safetensors"), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    printed = float(re.search(r"entropy: area [\d.]+ +\(map ([\d.]+) at 100 %", out).group(1))
    assert printed == round(float(M.mean_average_precision(probs[0, 0], targets)), 4)
    assert "at 50 %" in out and "epistemic: not scored: every clip has the same epistemic uncertainty" in out
    assert (tmp_path / "out" / "retention.png").is_file()
    args = ["retention", str(tmp_path / "run" / "predictions.safetensors"), "--out", str(tmp_path / "bca")]
    assert main([*args, "--interval", "bca", "--classes", "kept"]) == 0
    assert "95 % bca band" in capsys.readouterr().out
