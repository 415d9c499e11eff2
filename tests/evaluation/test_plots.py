import pytest
import torch

from vipann.evaluation.plots import plot_reliability, plot_retention, plot_uncertainty_boxplots
from vipann.metrics import oracle_curve, random_curve, reliability_diagram, retention_curve

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 2000


@pytest.fixture(scope="module")
def predictions():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(3, 120, 5, generator=g) * 2, -1)
    y = torch.randint(0, 5, (120,), generator=g)
    return probs, y


def test_plot_retention_flat_and_nested(tmp_path, predictions):
    probs, y = predictions
    curves = {
        name: retention_curve(probs, y, -probs.max(-1).values * s, "accuracy")
        for name, s in [("entropy", 1), ("epistemic", 2)]
    }
    ref = {"random": random_curve(probs, y), "oracle": oracle_curve(probs, y)}
    fig = plot_retention(curves, tmp_path / "flat.png", title="demo", random=ref["random"], oracle=ref["oracle"])
    assert len(fig.axes) == 2
    _assert_png(tmp_path / "flat.png")
    nested = {
        "entropy": {"Flip": curves["entropy"], "Drop": curves["epistemic"]},
        "aleatoric": {"Flip": curves["entropy"]},
    }
    fig = plot_retention(nested, tmp_path / "sub" / "nested.png", random={"entropy": ref["random"]})
    assert len(fig.axes) == 2
    _assert_png(tmp_path / "sub" / "nested.png")
    assert plot_retention(curves) is not None  # no path: nothing written, figure returned


def test_plot_reliability(tmp_path, predictions):
    probs, y = predictions
    fig = plot_reliability(reliability_diagram(probs[0], y), tmp_path / "rel.png", title="ECE")
    assert len(fig.axes) == 2
    _assert_png(tmp_path / "rel.png")


def test_plot_uncertainty_boxplots(tmp_path):
    g = torch.Generator().manual_seed(1)
    fig = plot_uncertainty_boxplots(
        {"ESC-50": torch.rand(50, generator=g), "ShipsEar": torch.rand(30, generator=g) + 0.5}, tmp_path / "box.png"
    )
    assert len(fig.axes) == 1
    _assert_png(tmp_path / "box.png")
    panels = {
        m: {"ID": torch.rand(20, generator=g), "OOD": torch.rand(20, generator=g)}
        for m in ("entropy", "epistemic", "aleatoric")
    }
    fig = plot_uncertainty_boxplots(panels, tmp_path / "box3.png")
    assert len(fig.axes) == 3
    _assert_png(tmp_path / "box3.png")


def test_bad_inputs():
    with pytest.raises(ValueError, match="non-empty"):
        plot_retention({})
    with pytest.raises(ValueError, match="RetentionResult"):
        plot_retention({"entropy": 3})
    with pytest.raises(ValueError, match="ReliabilityData"):
        plot_reliability("not data")
    with pytest.raises(ValueError, match=r"\(N,\)"):
        plot_uncertainty_boxplots({"a": torch.rand(2, 2)})


def _legend_texts(fig):
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def test_one_size_and_every_mark_in_a_legend(predictions):
    from vipann.evaluation.plots import FIGSIZE

    probs, y = predictions
    g = torch.Generator().manual_seed(2)
    multihot = torch.rand(120, 5, generator=g) < 0.2
    curves = {"entropy": retention_curve(probs[0], multihot, -probs[0].max(-1).values, "map", bootstrap=20)}
    ret = plot_retention(curves, random=random_curve(probs[0], multihot, "map", draws=2), title="t")
    rel = plot_reliability(reliability_diagram(probs[0], y), title="t")
    box = plot_uncertainty_boxplots({"entropy": {"ID": torch.rand(20), "OOD": torch.rand(9)}}, title="t")
    for fig in (ret, rel, box):
        assert tuple(fig.get_size_inches()) == FIGSIZE and fig._suptitle.get_text() == "t"
    texts = _legend_texts(ret)
    assert "random discarding" in texts and any("bootstrap band" in t for t in texts)
    assert "some classes have no kept positive" in texts  # the low-coverage shading
    assert {"median", "mean"} <= set(_legend_texts(box)) and any("whiskers" in t for t in _legend_texts(box))
    assert {"perfect calibration", "share of forecasts per bin"} <= set(_legend_texts(rel))
