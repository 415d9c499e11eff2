"""The demo report's HTML writer and its checks table."""

from vipann.demo.report import checks_table, figure_caption, render_html
from vipann.evaluation.claims import Claim, Interval


def test_markdown_renders_in_the_html(tmp_path):
    md = [
        "# Title",
        "",
        "Run `vipann demo` for **the** report.",
        "",
        "- item `a`",
        "- item b",
        "",
        "| h | i |",
        "|---|---|",
        "| `x` | 1-2 |",
    ]
    html = render_html(md, [("Figure 1. t. text", tmp_path / "missing.png")])
    assert "<h1>Title</h1>" in html and "<code>vipann demo</code>" in html and "<strong>the</strong>" in html
    assert "<ul><li>item <code>a</code></li><li>item b</li></ul>" in html
    assert "<tr><th>h</th><th>i</th></tr><tr><td><code>x</code></td><td>1-2</td></tr>" in html
    assert "`" not in html and "<figure>" not in html  # a missing figure is left out
    assert render_html(md, []) == render_html(md, [])


def test_checks_table_names_each_statement_once():
    said = ("Flipout is well calibrated.", "§4.2", "holds", "gain")
    a = Claim("flip: rises (entropy)", *said, Interval(0.05, 0.02, 0.08))
    b = Claim("flip: rises (epistemic)", *said, Interval(0.0, -0.1, 0.1))
    lines = checks_table([a, b])
    assert lines[2].count("Flipout is well calibrated.") == 1 and "same statement as #1" in lines[3]
    assert "| holds | yes |" in lines[2] and "| inconclusive | – |" in lines[3]
    caption = figure_caption(3, "flip-demo: reliability diagram", "reliability", {"multilabel": True})
    assert caption.startswith("Figure 3. flip-demo: reliability diagram. ")
