"""The package is layered: no import cycles, no import from a higher layer, small modules, and the
README's architecture section drawn from the one layer table."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import vipann
from vipann.utils.layering import LAYERS, Layer, check_package, import_graph, layer_of, markdown_table

PACKAGE = Path(vipann.__file__).resolve().parent
README = PACKAGE.parent / "README.md"
MAX_LINES = 500


def test_vipann_has_no_import_cycles_and_no_upward_imports():
    cycles, broken = check_package(PACKAGE)
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)
    assert broken == [], "layering violations:\n" + "\n".join(map(str, broken))


def test_every_module_belongs_to_exactly_one_layer():
    graph = import_graph(PACKAGE)
    for module in graph:
        if module == "vipann":
            continue
        owners = [
            layer.name for layer in LAYERS if any(module == m or module.startswith(m + ".") for m in layer.modules)
        ]
        assert len(owners) == 1, f"{module} is claimed by {owners}"


def test_no_flat_modules_beside_the_facade_but_the_version():
    flat = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert flat == ["__init__.py", "_version.py"], flat


def test_modules_stay_under_500_lines():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}, f"modules over {MAX_LINES} lines: {long}"


def _write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root / "pkg"


TOY_LAYERS = (Layer("low", ("pkg.low",), ""), Layer("high", ("pkg.high",), ""))


def test_checker_finds_a_cycle_hidden_in_a_lazy_import(tmp_path):
    pkg = _write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/low/__init__.py": "",
            "pkg/low/a.py": "from pkg.low.b import f\n",
            "pkg/low/b.py": "def f():\n    from pkg.low import a\n    return a\n",
            "pkg/high/__init__.py": "",
        },
    )
    cycles, broken = check_package(pkg, TOY_LAYERS)
    assert ["pkg.low", "pkg.low.a", "pkg.low.b"] in cycles or ["pkg.low.a", "pkg.low.b"] in cycles
    assert broken == []


def test_checker_finds_an_upward_import_a_facade_import_and_an_unclaimed_module(tmp_path):
    pkg = _write_package(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.high import g\n",
            "pkg/low/__init__.py": "",
            "pkg/low/a.py": "def f():\n    import pkg.high.h\n",
            "pkg/low/c.py": "import pkg\n",
            "pkg/high/__init__.py": "",
            "pkg/low/d.py": "",
            "pkg/high/h.py": "from ..low import d\n",
            "pkg/stray.py": "",
        },
    )
    cycles, broken = check_package(pkg, TOY_LAYERS)
    assert cycles == []
    found = {(v.module, v.imported) for v in broken}
    assert ("pkg.low.a", "pkg.high.h") in found  # upward, even inside a function
    assert ("pkg.low.c", "pkg") in found  # the facade from inside
    assert ("pkg.stray", "pkg.stray") in found  # no layer claims it
    assert not any(v.module == "pkg.high.h" for v in broken)  # downward (relative) is fine


def test_layer_of_uses_dotted_prefixes_not_string_prefixes():
    assert layer_of("vipann.models.pann") == layer_of("vipann.models")
    assert layer_of("vipann.modelsx") is None


def test_readme_architecture_section_is_generated_from_the_layers():
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- layers:start -->\n(.*?)\n<!-- layers:end -->", text, flags=re.S)
    assert block, "README needs the layers markers"
    assert block.group(1) == markdown_table(), "stale architecture section: run python scripts/update_readme.py"
    for layer in LAYERS:
        assert f"| {layer.name} |" in block.group(1)
