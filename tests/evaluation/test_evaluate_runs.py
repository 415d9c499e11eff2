import json

import pytest
import torch
from safetensors import safe_open

from vipann.evaluation import evaluate_runs, write_evaluation


def _runs(multilabel, runs=3, samples=4, n=30, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(runs, samples, n, c, generator=g) * 2
    if multilabel:
        return torch.sigmoid(logits), (torch.rand(n, c, generator=g) > 0.6).float()
    return logits.softmax(-1), torch.randint(0, c, (n,), generator=g)


@pytest.mark.parametrize("multilabel", [False, True])
def test_scalars_and_curves(multilabel):
    probs, targets = _runs(multilabel)
    ev = evaluate_runs(probs, targets, multilabel=multilabel, ood_probs=probs[:, :, :10])
    keys = {"mAP", "AUC", "d_prime"} if multilabel else {"accuracy"}
    assert keys | {"ECE", "MCE", "NLL", "Brier", "reliability_MAE", "mean_epistemic"} <= set(ev.scalars)
    assert ev.scalars["runs"] == 3 and ev.scalars["samples"] == 4
    assert set(ev.retention) == {"entropy", "epistemic", "aleatoric"}
    assert ev.retention["entropy"].values.shape == (3, 100)
    assert "ood_auroc_entropy" in ev.scalars
    if not multilabel:
        expected = (probs[0].mean(0).argmax(-1) == targets).float().mean()
        acc = torch.stack([(p.mean(0).argmax(-1) == targets).float().mean() for p in probs]).mean()
        assert ev.scalars["accuracy"] == pytest.approx(float(acc))
        assert 0 <= float(expected) <= 1


def test_write_evaluation_files(tmp_path):
    probs, targets = _runs(False)
    ev = evaluate_runs(probs, targets, multilabel=False, ood_probs=probs[:, :, :5])
    written = write_evaluation(
        ev, tmp_path, probs=probs, targets=targets, clip_ids=[f"c{i}" for i in range(30)], ood_probs=probs[:, :, :5]
    )
    assert {"metrics", "retention_csv", "predictions", "retention_png", "reliability_png", "ood_png"} <= set(written)
    for key in ("retention_png", "reliability_png", "ood_png"):
        assert written[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header = (tmp_path / "retention.csv").read_text().splitlines()[0].split(",")
    assert header[0] == "fraction" and "epistemic_lower" in header and "oracle_mean" in header
    with safe_open(str(tmp_path / "predictions.safetensors"), "pt") as f:
        assert f.get_tensor("probs").shape == (3, 4, 30, 4)
        assert json.loads(f.metadata()["clip_ids"])[0] == "c0"
    assert json.loads((tmp_path / "metrics.json").read_text())["runs"] == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"\(R, S, N, C\)"):
        evaluate_runs(torch.rand(5, 3), torch.zeros(5, dtype=torch.long), multilabel=False)


@pytest.mark.parametrize("multilabel", [False, True])
def test_single_run_gets_bootstrap_band(multilabel):
    probs, targets = _runs(multilabel, runs=1, n=60)
    ev = evaluate_runs(probs, targets, multilabel=multilabel, bootstrap=50, seed=3)
    curve = ev.retention["entropy"]
    assert curve.ci == "percentile" and curve.values.shape == (50, 100)
    finite = torch.isfinite(curve.lower) & torch.isfinite(curve.upper)
    assert finite[-1] and bool((curve.lower[finite] <= curve.upper[finite]).all())
    assert float((curve.upper - curve.lower)[finite].max()) > 0  # a real band, not a line
    again = evaluate_runs(probs, targets, multilabel=multilabel, bootstrap=50, seed=3).retention["entropy"]
    torch.testing.assert_close(again.lower, curve.lower, equal_nan=True)
    torch.testing.assert_close(again.upper, curve.upper, equal_nan=True)
    # several runs: the band is over runs, and asking for a bootstrap as well is an error
    many, _ = _runs(multilabel, runs=3, n=60)
    assert evaluate_runs(many, targets, multilabel=multilabel).retention["entropy"].ci == "t"
    with pytest.raises(ValueError, match="single run"):
        evaluate_runs(many, targets, multilabel=multilabel, bootstrap=10)


def test_new_scalars_equal_the_metric_functions():
    import vipann.metrics as M

    probs, targets = _runs(True, runs=1, n=60)
    ev = evaluate_runs(probs, targets, multilabel=True)
    mean = probs[0].mean(0)
    assert ev.scalars["MCS"] == pytest.approx(float(M.miscalibration_score(mean, targets, multilabel=True)))
    for average in ("marginal", "weighted", "global"):
        ref = M.multilabel_calibration_error(mean, targets, average=average)
        assert ev.scalars[f"ECE_{average}"] == pytest.approx(float(ref))
    total = ev.uncertainty["entropy"].double()
    assert ev.scalars["AURC_entropy"] == pytest.approx(float(M.aurc(mean, targets, total, multilabel=True)))
    assert ev.scalars["AUGRC_entropy"] == pytest.approx(float(M.augrc(mean, targets, total, multilabel=True)))
    # the curve is the metric of the data, not the mean of the bootstrap resamples
    plain = M.retention_curve(mean, targets, total, "map")
    torch.testing.assert_close(ev.retention["entropy"].mean, plain.mean, equal_nan=True)
    again = evaluate_runs(probs, targets, multilabel=True)
    torch.testing.assert_close(again.random.mean, ev.random.mean)  # seeded random-discarding curve


def test_a_measure_without_spread_is_not_scored(tmp_path):
    probs, targets = _runs(True, runs=1, samples=1, n=40)  # one sample: epistemic is 0 for every clip
    ev = evaluate_runs(probs, targets, multilabel=True, ood_probs=probs[:, :, :10])
    assert "epistemic" in ev.skipped and "cannot rank clips" in ev.skipped["epistemic"]
    assert set(ev.retention) == {"entropy", "aleatoric"}
    assert not {"AURC_epistemic", "ood_auroc_epistemic", "retention_area_epistemic"} & set(ev.scalars)
    written = write_evaluation(ev, tmp_path)
    assert json.loads(written["unscored"].read_text())["epistemic"] == ev.skipped["epistemic"]
    header = (tmp_path / "retention.csv").read_text().splitlines()[0]
    assert "epistemic" not in header and "entropy_coverage" in header
